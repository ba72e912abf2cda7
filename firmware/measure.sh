#!/usr/bin/env bash
# Measures pickup's share of the example firmware's flash and RAM, for every
# image a terminal may build.
#
#   firmware/measure.sh          sizes only (needs llvm-size, rust-size or arm-none-eabi-size)
#   firmware/measure.sh --stack  also the stack high-water marks: boots the
#                                images in QEMU against a relay (needs
#                                qemu-system-arm and a built pickup-relay)
#   firmware/measure.sh --nightly  the same images with the nightly recipe of
#                                README.md (core rebuilt for size, panics
#                                abort at once; needs the nightly toolchain
#                                with rust-src)
#
# Images: `both` (the default: upload, print the code, download, verify),
# `upload-only` and `download-only` (`--no-default-features --features
# upload|download`: the other direction's machine, driver and decoders are
# not compiled), `+auth` (both, authenticating as a terminal, PROTOCOL.md
# §8) and `+notices` (that, then listening for a pushed batch, §11).
#
# Pickup's share is an image minus the `baseline` build, which keeps the UART
# driver, the clock, semihosting and the files in flash, and links what any
# firmware links (mem* built-ins, UTF-8 validation) but makes no pickup call.
# Flash = .vector_table + .text + .rodata + .data; static RAM = .data + .bss
# + .uninit; stack = bytes of the painted stack ever touched.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd .. && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
# One target directory for every image: the dependencies build once.
dir="$target/firmware-measure"

stack=false
nightly=()
for arg in "$@"; do
    case $arg in
        --stack) stack=true ;;
        --nightly)
            # core and compiler_builtins rebuilt with the image's profile and
            # `optimize_for_size`; a panic is an undefined instruction, with
            # no formatting and no handler call behind it.
            export RUSTUP_TOOLCHAIN=nightly
            export RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Cforce-frame-pointers=no"
            nightly=(-Zbuild-std=core -Zbuild-std-features=optimize_for_size)
            dir="$target/firmware-measure-nightly"
            ;;
        *) echo "usage: $0 [--stack] [--nightly]" >&2; exit 2 ;;
    esac
done

# The goals of issue 21, bytes of pickup's share.
goal_both=20480
goal_one_way=14336
goal_ram=3072

size_tool=""
for t in llvm-size rust-size arm-none-eabi-size; do
    if command -v "$t" >/dev/null; then size_tool=$t; break; fi
done
if [ -z "$size_tool" ]; then
    sysroot=$(rustc --print sysroot)
    size_tool=$(find "$sysroot" -name llvm-size -type f 2>/dev/null | head -1)
fi
[ -n "$size_tool" ] || { echo "no llvm-size: rustup component add llvm-tools, or apt-get install llvm" >&2; exit 1; }

# build NAME CARGO-ARGS...: builds an image, keeps it as $dir/NAME.elf, prints its path.
build() {
    local name=$1
    shift
    cargo build --release -q --target-dir "$dir" ${nightly[@]+"${nightly[@]}"} "$@" >&2
    cp "$dir/thumbv7m-none-eabi/release/pickup-firmware" "$dir/$name.elf"
    echo "$dir/$name.elf"
}

# sections ELF: prints "flash static_ram"
sections() {
    "$size_tool" -A "$1" | awk '
        /^\.(vector_table|text|rodata|data|bss|uninit) / { s[$1] = $2 }
        END { print s[".vector_table"] + s[".text"] + s[".rodata"] + s[".data"],
                    s[".data"] + s[".bss"] + s[".uninit"] }'
}

declare -A flash ram
names=(both upload-only download-only +auth +notices baseline)
declare -A args=(
    [both]=""
    [upload-only]="--no-default-features --features upload"
    [download-only]="--no-default-features --features download"
    [+auth]="--features auth"
    [+notices]="--features notices"
    [baseline]="--features baseline"
)
for name in "${names[@]}"; do
    # shellcheck disable=SC2086 # the arguments are words
    elf=$(build "$name" ${args[$name]})
    read -r "flash[$name]" "ram[$name]" < <(sections "$elf")
done

goal() {
    case $1 in
        both) echo "$goal_both" ;;
        upload-only | download-only) echo "$goal_one_way" ;;
        *) echo "" ;;
    esac
}

printf '%-14s %8s %10s %13s %11s  %s\n' image flash static-RAM pickup-flash pickup-RAM goal
for name in "${names[@]}"; do
    share=$((flash[$name] - flash[baseline]))
    g=$(goal "$name")
    verdict=""
    if [ -n "$g" ]; then
        if [ "$share" -le "$g" ]; then verdict="<= $g: met"; else verdict="<= $g: over by $((share - g))"; fi
    fi
    if [ "$name" = baseline ]; then
        printf '%-14s %8d %10d\n' "$name" "${flash[$name]}" "${ram[$name]}"
    else
        line=$(printf '%-14s %8d %10d %13d %11d  %s' "$name" "${flash[$name]}" "${ram[$name]}" \
            "$share" $((ram[$name] - ram[baseline])) "$verdict")
        echo "${line%"${line##*[! ]}"}"
    fi
done
printf 'auth adds %d B of flash to both; notices add %d B to +auth (reported apart from the goals)\n' \
    $((flash[+auth] - flash[both])) $((flash[+notices] - flash[+auth]))

$stack || exit 0

relay="$target/debug/pickup-relay"
[ -x "$relay" ] || { echo "build the relay first: cargo build -p pickup-relay" >&2; exit 1; }

# run_image ELF DATA [CODE]: boots ELF in QEMU with UART0 on a pty served by a
# relay storing in DATA (CODE on the semihosting command line), prints the
# firmware's output.
run_image() {
    local work pty qemu relay_pid semi="enable=on,target=native"
    [ -n "${3:-}" ] && semi="$semi,arg=pickup-firmware,arg=$3"
    work=$(mktemp -d)
    qemu-system-arm -machine lm3s6965evb -cpu cortex-m3 -display none -monitor none \
        -semihosting-config "$semi" -serial pty -kernel "$1" >"$work/out" 2>&1 &
    qemu=$!
    for _ in $(seq 100); do
        pty=$(grep -o '/dev/pts/[0-9]*' "$work/out" | head -1 || true)
        [ -n "$pty" ] && break
        sleep 0.1
    done
    "$relay" serve --tcp 127.0.0.1:0 --data "$2" --serial "$pty" 2>"$work/relay.log" &
    relay_pid=$!
    for _ in $(seq 120); do
        kill -0 "$qemu" 2>/dev/null || break
        sleep 1
    done
    kill "$qemu" 2>/dev/null || true
    kill "$relay_pid"
    wait "$relay_pid" 2>/dev/null || true
    cat "$work/out"
    rm -rf "$work"
}

# high_water OUTPUT: the "stack high-water mark" figure in a run's output.
high_water() {
    local line
    grep -E '^size_of' <<<"$1" >&2 || true
    line=$(grep -o 'stack high-water mark: [0-9]*' <<<"$1" || true)
    [ -n "$line" ] || { echo "the firmware printed no stack figure:" >&2; echo "$1" >&2; exit 1; }
    echo "${line##* }"
}

data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
declare -A stack
out=$(run_image "$(build both-stack --features paint-stack)" "$data/both")
stack[both]=$(high_water "$out")
# The upload-only image's batch is what the download-only image fetches.
out=$(run_image "$(build upload-only-stack --no-default-features --features upload,paint-stack)" "$data/one-way")
stack[upload-only]=$(high_water "$out")
code=$(grep -o 'pickup code: [0-9A-Z-]*' <<<"$out" | head -1)
code=${code##* }
[ -n "$code" ] || { echo "the upload-only image printed no code" >&2; exit 1; }
out=$(run_image "$(build download-only-stack --no-default-features --features download,paint-stack)" "$data/one-way" "$code")
grep -q 'download verified' <<<"$out" || { echo "the download-only image did not verify $code:" >&2; echo "$out" >&2; exit 1; }
stack[download-only]=$(high_water "$out")
out=$(run_image "$(build baseline-stack --features paint-stack,baseline)" "$data/baseline")
stack[baseline]=$(high_water "$out")

printf '%-14s %8s %11s %12s  %s\n' image stack stack-share RAM-share goal
for name in both upload-only download-only; do
    share=$((stack[$name] - stack[baseline] + ram[$name] - ram[baseline]))
    if [ "$share" -le "$goal_ram" ]; then verdict="<= $goal_ram: met"; else verdict="<= $goal_ram: over by $((share - goal_ram))"; fi
    printf '%-14s %8d %11d %12d  %s\n' "$name" "${stack[$name]}" $((stack[$name] - stack[baseline])) "$share" "$verdict"
done
printf '%-14s %8d\n' baseline "${stack[baseline]}"
