//! README.md against the real binaries (issue 18, item 13): its example
//! codes are codes the `pickup` CLI parses, of the length the relay issues
//! by default; it names every option and environment variable `pickup`
//! and `pickup-relay serve` print in their help, and no `pickup` option
//! that does not exist.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use pickup_tests::e2e::{pickup, pickup_bin, relay_bin, run, run_json, stderr, TempDir};
use pickup_tests::relay_process::RelayProcess;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

/// Crockford base-32, the alphabet of codes (upper case, as printed).
fn is_symbol(c: char) -> bool {
    c.is_ascii_digit() || (c.is_ascii_uppercase() && !matches!(c, 'I' | 'L' | 'O' | 'U'))
}

/// Every printed code in `text`: three or more groups of three to five
/// symbols joined by `-` (the CLI's grouping; dates have two-digit
/// groups, `SHA-1` two groups).
fn printed_codes(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| {
            let groups: Vec<&str> = word.split('-').collect();
            groups.len() >= 3
                && groups
                    .iter()
                    .all(|g| (3..=5).contains(&g.len()) && g.chars().all(is_symbol))
        })
        .map(str::to_owned)
        .collect()
}

/// Every code typed back in a code span: lower case, spaces, any
/// grouping (`7kq4 m2xd 9rta h`).
fn typed_codes(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| {
            span.split(' ').count() >= 3
                && span
                    .split(' ')
                    .all(|g| !g.is_empty() && g.chars().all(|c| is_symbol(c.to_ascii_uppercase())))
                && span.chars().any(|c| c.is_ascii_lowercase())
        })
        .map(str::to_owned)
        .collect()
}

/// (a) Every example code parses with the CLI's parser (`pickup info` of a
/// code that does not parse exits 1 before it asks the relay; one that
/// parses asks, and this relay knows none: 2, with no hint about its
/// length) and has as many symbols as the codes the relay issues.
#[test]
fn the_example_codes_are_codes_the_relay_issues_and_the_cli_parses() {
    let text = readme();
    let mut codes = printed_codes(&text);
    codes.extend(typed_codes(&text));
    codes.sort();
    codes.dedup();
    assert!(codes.len() >= 2, "README.md shows no codes: {codes:?}");

    // Failed lookups are rate-limited: enough for every code here.
    let relay = RelayProcess::builder()
        .config("[rate_limit]\npeer_burst = 1000\n")
        .start();
    let work = TempDir::new("readme");
    let state = work.path().join("state");
    let file = work.path().join("x.txt");
    std::fs::write(&file, b"x").unwrap();
    let sent = run_json(
        pickup(&state)
            .args(["send", "--json", "--relay", &relay.tcp()])
            .arg(&file),
    );
    let issued = sent["code"].as_str().unwrap();
    let length = |code: &str| code.chars().filter(char::is_ascii_alphanumeric).count();
    // The grouping too: the README shows codes as `pickup` prints them.
    for code in printed_codes(issued) {
        assert_eq!(code, issued);
    }
    assert_eq!(printed_codes(issued).len(), 1, "{issued}");

    for code in &codes {
        assert_eq!(
            length(code),
            length(issued),
            "README.md's {code:?} is not as long as the relay's codes ({issued})"
        );
        let out = run(pickup(&state).args(["info", "--relay", &relay.tcp(), code]));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{code:?}: {err}");
        assert!(!err.contains("symbols"), "{code:?}: {err}");
    }
    // The check can fail: a code one symbol short is refused with a hint.
    let short = &issued[..issued.len() - 1];
    let out = run(pickup(&state).args(["info", "--relay", &relay.tcp(), short]));
    assert!(stderr(&out).contains("symbols"), "{}", stderr(&out));
}

/// `BIN ARGS --help`, stdout.
fn help(bin: &Path, args: &[&str]) -> String {
    let out = run(std::process::Command::new(bin).args(args).arg("--help"));
    assert!(
        out.status.success(),
        "{bin:?} {args:?} --help: {}",
        stderr(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help lists under `Commands:` (but `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// Every `--long-option` in `text`.
fn long_options(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("--") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-') {
            continue;
        }
        let name: String = text[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if name.starts_with(|c: char| c.is_ascii_lowercase()) {
            found.insert(format!("--{}", name.trim_end_matches('-')));
        }
    }
    found
}

/// Every `[env: NAME=]` a help names.
fn env_vars(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split('=').next())
        .map(str::to_owned)
        .collect()
}

/// The help of `bin` and of each subcommand, depth first (bounded).
fn all_helps(bin: &Path, args: &mut Vec<String>, into: &mut Vec<String>) {
    let text = help(bin, &args.iter().map(String::as_str).collect::<Vec<_>>());
    if args.len() < 3 {
        for sub in subcommands(&text) {
            args.push(sub);
            all_helps(bin, args, into);
            args.pop();
        }
    }
    into.push(text);
}

/// The lines of README.md that run `pickup` (not `pickup-relay`, the
/// bench, or cargo building it): its options there must be `pickup`'s.
fn pickup_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            l.match_indices("pickup ").any(|(at, _)| {
                at == 0 || !l[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            }) && !l.contains("pickup-relay")
                && !l.contains("pickup-bench")
                && !l.contains("cargo ")
        })
        .collect()
}

/// (b) README.md names every long option of `pickup` and its commands,
/// and of `pickup-relay serve`, and every environment variable they read;
/// each option on a line that runs `pickup` is one of `pickup`'s.
#[test]
fn the_readme_names_every_option_and_invents_none() {
    let text = readme();
    let in_readme = long_options(&text);

    let mut pickup_helps = Vec::new();
    all_helps(pickup_bin(), &mut Vec::new(), &mut pickup_helps);
    let relay_serve = help(relay_bin(), &["serve"]);
    let mut relay_helps = Vec::new();
    all_helps(relay_bin(), &mut Vec::new(), &mut relay_helps);
    assert!(pickup_helps.len() > 10, "{} helps", pickup_helps.len());

    let pickup_options: BTreeSet<String> =
        pickup_helps.iter().flat_map(|h| long_options(h)).collect();
    let relay_options: BTreeSet<String> =
        relay_helps.iter().flat_map(|h| long_options(h)).collect();
    for (what, options) in [
        ("pickup", &pickup_options),
        ("pickup-relay serve", &long_options(&relay_serve)),
    ] {
        let missing: Vec<_> = options.difference(&in_readme).collect();
        assert!(
            missing.is_empty(),
            "README.md never names {what}'s {missing:?}"
        );
    }
    let envs: BTreeSet<String> = pickup_helps.iter().flat_map(|h| env_vars(h)).collect();
    assert!(envs.contains("PICKUP_RELAY"), "{envs:?}");
    for var in &envs {
        assert!(text.contains(var.as_str()), "README.md never names {var}");
    }

    // Invented options: on a line that runs `pickup`, only its own ...
    for line in pickup_lines(&text) {
        for option in long_options(line) {
            assert!(
                pickup_options.contains(&option),
                "README.md gives `pickup` an option it does not have, {option}: {line}"
            );
        }
    }
    // ... and anywhere, one of the two binaries' or of the tools the
    // README runs beside them (cargo, rustup and the bench).
    let tools = [
        "--attack-config",
        "--backend",
        "--bin",
        "--features",
        "--locked",
        "--nocapture",
        "--only",
        "--profile",
        "--quick",
        "--release",
        "--tcp-rounds",
        "--test",
        "--workspace",
    ];
    for option in &in_readme {
        assert!(
            pickup_options.contains(option)
                || relay_options.contains(option)
                || tools.contains(&option.as_str()),
            "README.md names {option}, which neither binary nor the tools it runs have"
        );
    }
}

/// The helpers find what they look for, and only that.
#[test]
fn the_readme_scanners_find_codes_and_options() {
    assert_eq!(
        printed_codes("e.g. `7KQ4M-2XD9-RTAH`, on 2026-12-04, SHA-1, PH2CH-4WBK-VJGV."),
        ["7KQ4M-2XD9-RTAH", "PH2CH-4WBK-VJGV"]
    );
    assert!(printed_codes("7KQ4-M2XD-9RTU").is_empty(), "U is no symbol");
    assert_eq!(
        typed_codes("any grouping (`7kq4 m2xd 9rta h`); `a b`"),
        ["7kq4 m2xd 9rta h"]
    );
    assert_eq!(
        long_options("`--relay ADDR`, --max-attempts N, x--y, ---, -v/--verbose."),
        ["--max-attempts", "--relay", "--verbose"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(
        pickup_lines(
            "pickup get C --json\npickup-relay serve --tcp A\ncargo run --bin pickup -- get"
        ),
        ["pickup get C --json"]
    );
}
