#!/usr/bin/env bash
# Measures pickup's share of the example firmware's flash and RAM.
#
#   firmware/measure.sh          sizes only (needs llvm-size, rust-size or arm-none-eabi-size)
#   firmware/measure.sh --stack  also the stack high-water marks: boots both
#                                builds in QEMU against a relay (needs
#                                qemu-system-arm and a built pickup-relay)
#
# Pickup's share is the default build minus the `baseline` build, which keeps
# the UART driver, the clock, semihosting and the files in flash but makes no
# pickup call. The `auth` build authenticates as a terminal as well (PROTOCOL.md
# §8); its line says what that adds. The `notices` build also listens for a
# pushed batch (§11), downloads and confirms it; its line says what that adds
# to `auth`. Flash = .vector_table + .text + .rodata + .data; static RAM =
# .data + .bss + .uninit; stack = bytes of the painted stack ever touched.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd .. && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

size_tool=""
for t in llvm-size rust-size arm-none-eabi-size; do
    if command -v "$t" >/dev/null; then size_tool=$t; break; fi
done
if [ -z "$size_tool" ]; then
    sysroot=$(rustc --print sysroot)
    size_tool=$(find "$sysroot" -name llvm-size -type f 2>/dev/null | head -1)
fi
[ -n "$size_tool" ] || { echo "no llvm-size: rustup component add llvm-tools, or apt-get install llvm" >&2; exit 1; }

# build NAME FEATURES: builds into $target/firmware-measure-NAME, prints the ELF path.
build() {
    local dir="$target/firmware-measure-$1"
    cargo build --release -q --target-dir "$dir" ${2:+--features "$2"} >&2
    echo "$dir/thumbv7m-none-eabi/release/pickup-firmware"
}

# sections ELF: prints "flash static_ram"
sections() {
    "$size_tool" -A "$1" | awk '
        /^\.(vector_table|text|rodata|data|bss|uninit) / { s[$1] = $2 }
        END { print s[".vector_table"] + s[".text"] + s[".rodata"] + s[".data"],
                    s[".data"] + s[".bss"] + s[".uninit"] }'
}

full=$(build full "")
auth=$(build auth auth)
notices=$(build notices notices)
base=$(build baseline baseline)
read -r full_flash full_ram < <(sections "$full")
read -r auth_flash auth_ram < <(sections "$auth")
read -r notices_flash notices_ram < <(sections "$notices")
read -r base_flash base_ram < <(sections "$base")
printf '%-10s %10s %12s\n' build flash static-RAM
printf '%-10s %10d %12d\n' firmware "$full_flash" "$full_ram" +auth "$auth_flash" "$auth_ram" \
    +notices "$notices_flash" "$notices_ram" baseline "$base_flash" "$base_ram"
printf '%-10s %10d %12d   (budget 16384 / 4096 with the stack)\n' pickup \
    $((full_flash - base_flash)) $((full_ram - base_ram))
printf '%-10s %10d %12d   (pickup with --features auth)\n' pickup+auth \
    $((auth_flash - base_flash)) $((auth_ram - base_ram))
printf '%-10s %10d %12d   (what authenticating adds)\n' auth \
    $((auth_flash - full_flash)) $((auth_ram - full_ram))
printf '%-10s %10d %12d   (what listening for notices adds to auth)\n' notices \
    $((notices_flash - auth_flash)) $((notices_ram - auth_ram))

[ "${1:-}" = "--stack" ] || exit 0

relay="$target/debug/pickup-relay"
[ -x "$relay" ] || { echo "build the relay first: cargo build -p pickup-relay" >&2; exit 1; }

# high_water ELF: boots ELF in QEMU with UART0 on a pty served by a relay,
# prints the firmware's "stack high-water mark" figure.
high_water() {
    local work pty qemu relay_pid line
    work=$(mktemp -d)
    qemu-system-arm -machine lm3s6965evb -cpu cortex-m3 -display none -monitor none \
        -semihosting-config enable=on,target=native -serial pty -kernel "$1" \
        >"$work/out" 2>&1 &
    qemu=$!
    for _ in $(seq 100); do
        pty=$(grep -o '/dev/pts/[0-9]*' "$work/out" | head -1 || true)
        [ -n "$pty" ] && break
        sleep 0.1
    done
    "$relay" serve --tcp 127.0.0.1:0 --data "$work/data" --serial "$pty" 2>"$work/relay.log" &
    relay_pid=$!
    for _ in $(seq 120); do
        kill -0 "$qemu" 2>/dev/null || break
        sleep 1
    done
    kill "$qemu" 2>/dev/null || true
    kill "$relay_pid"
    wait "$relay_pid" 2>/dev/null || true
    grep -E '^size_of' "$work/out" >&2 || true
    line=$(grep -o 'stack high-water mark: [0-9]*' "$work/out" || true)
    rm -rf "$work"
    [ -n "$line" ] || { echo "the firmware printed no stack figure" >&2; exit 1; }
    echo "${line##* }"
}

full_stack=$(high_water "$(build full-stack paint-stack)")
base_stack=$(high_water "$(build baseline-stack paint-stack,baseline)")
printf '%-10s %10s\n' build stack firmware "$full_stack" baseline "$base_stack"
printf '%-10s %10d   RAM share: %d bytes (static + stack, budget 4096)\n' pickup \
    $((full_stack - base_stack)) $((full_ram - base_ram + full_stack - base_stack))
