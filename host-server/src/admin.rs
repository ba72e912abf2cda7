//! The operator's account commands: `pickup-relay user …` (with `user
//! allow`, who may push to a user's terminals) and `pickup-relay terminal …`.
//!
//! Each opens the directory in the data directory (`--data`, or the
//! config file's `data`) with a connection of its own, so it works while a
//! relay serves the same directory (SQLite WAL and a busy timeout; see
//! `pickup_relay::directory::sqlite`), and the relay sees the change at
//! its next login. With `[store] backend = "postgres"` (`--config`) it
//! opens the configured database instead, which every instance shares
//! (`pickup_relay::directory::postgres`). Results go to stdout (lists,
//! and the one line a script may capture: a new terminal's key);
//! everything said to the operator goes to stderr. Exit status 0, or 1 with one `error: …` line.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use pickup_proto::identity::DeviceKey;
use pickup_relay::config::peers::parse_key;
use pickup_relay::config::Backend;
use pickup_relay::directory::{Directory, PgDirectory, SqliteDirectory, UserRecord};
use pickup_relay::random::{OsRandom, Random};
use pickup_relay::relay::utc_text;

/// Where the relay's data is: the same flags as `serve`.
#[derive(Debug, Args)]
pub struct Place {
    /// Data directory. Default: the config file's, else ./pickup-data.
    #[arg(long, value_name = "DIR", global = true)]
    data: Option<PathBuf>,
    /// TOML configuration file (for `data` and `[auth.password]`).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

/// `pickup-relay user …`
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    place: Place,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; asks for the password twice on the terminal.
    Add {
        /// Login name: 1 to 32 of a-z 0-9 . _ -, starting with a letter or digit.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users: name, quotas, when added.
    List,
    /// Change a user's password; its login tokens are revoked.
    Passwd {
        /// The user.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user, with its terminals and login tokens.
    Remove {
        /// The user.
        name: String,
    },
    /// Show or set a user's quotas; a limit not given is kept.
    Quota {
        /// The user.
        name: String,
        /// Bytes of named files, or `none` for no limit.
        #[arg(long, value_name = "N|none", value_parser = parse_limit)]
        bytes: Option<Limit>,
        /// Number of named files, or `none` for no limit.
        #[arg(long, value_name = "N|none", value_parser = parse_limit)]
        files: Option<Limit>,
    },
    /// Let SENDER push batches to OWNER's terminals (or, with
    /// `--remove`, no longer); without SENDER, list whom OWNER allows.
    /// A user may always push to its own terminals.
    Allow {
        /// The user whose terminals receive.
        owner: String,
        /// The user who may push to them: a user of this relay, or
        /// `USER@PAIR` for a user of the peer relay `[[peers]]` lists as
        /// PAIR.
        sender: Option<String>,
        /// Withdraw the permission instead.
        #[arg(long)]
        remove: bool,
    },
}

/// `pickup-relay terminal …`
#[derive(Debug, Args)]
pub struct TerminalArgs {
    #[command(flatten)]
    place: Place,
    #[command(subcommand)]
    command: TerminalCommand,
}

#[derive(Debug, Subcommand)]
enum TerminalCommand {
    /// Register a terminal; prints its new device key once, on stdout.
    Add {
        /// The name the terminal authenticates with (same rules as users').
        name: String,
        /// The user it acts for.
        #[arg(long, value_name = "USER")]
        owner: String,
        /// Register the key in FILE (32 hex digits) instead of drawing a
        /// new one: for keys provisioned into devices beforehand. Nothing
        /// is printed on stdout then.
        #[arg(long, value_name = "FILE")]
        key_file: Option<std::path::PathBuf>,
    },
    /// List terminals: name, owner, when added (never their keys).
    List,
    /// Remove a terminal: its next authentication fails.
    Remove {
        /// The terminal.
        name: String,
    },
}

/// A quota flag's value: a number, or `none` for no limit.
#[derive(Debug, Clone, Copy)]
struct Limit(Option<u64>);

fn parse_limit(text: &str) -> Result<Limit, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    text.parse()
        .map(|n| Limit(Some(n)))
        .map_err(|_| format!("{text:?} is neither a whole number nor `none`"))
}

/// Runs `pickup-relay user …`.
pub fn user(args: UserArgs) -> ExitCode {
    report(run_user(args))
}

/// Runs `pickup-relay terminal …`.
pub fn terminal(args: TerminalArgs) -> ExitCode {
    report(run_terminal(args))
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connections an admin command keeps: it runs one step at a time.
const ADMIN_POSTGRES_CONNECTIONS: usize = 1;

/// The directory `place` names: with `backend = "postgres"` the
/// configuration's database (its schema brought up to date), else the
/// data directory's. There `create` lets `add` start a data directory no
/// relay has served yet, while the other commands report a missing one
/// (most likely a mistyped `--data`).
fn open(place: &Place, create: bool) -> Result<Box<dyn Directory>, String> {
    let config = crate::load_config(place.config.as_deref(), place.data.as_deref())?;
    config.validate()?;
    let params = config.auth.password;
    if config.store.backend == Backend::Postgres {
        // `validate` has checked that the URL is there.
        let url = config.store.postgres_url.as_deref().unwrap_or_default();
        return PgDirectory::open(url, ADMIN_POSTGRES_CONNECTIONS, params)
            .map(|d| Box::new(d) as Box<dyn Directory>)
            .map_err(|e| format!("the accounts in postgres: {e}"));
    }
    let dir = if create {
        SqliteDirectory::open(&config.data, params)
    } else {
        SqliteDirectory::open_existing(&config.data, params)
    };
    dir.map(|d| Box::new(d) as Box<dyn Directory>)
        .map_err(|e| e.to_string())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn run_user(args: UserArgs) -> Result<(), String> {
    match args.command {
        UserCommand::Add {
            name,
            password_stdin,
        } => {
            // Opened first: a bad --data or name fails before the prompt.
            let dir = open(&args.place, true)?;
            pickup_relay::directory::validate_account_name(&name).map_err(|e| e.to_string())?;
            if dir.user(&name).map_err(|e| e.to_string())?.is_some() {
                return Err(format!("user {name:?} already exists"));
            }
            let password = read_password(&name, password_stdin)?;
            dir.add_user(&name, &password, unix_now())
                .map_err(|e| e.to_string())?;
            eprintln!("user {name:?} added");
        }
        UserCommand::List => {
            let users = open(&args.place, false)?
                .users()
                .map_err(|e| e.to_string())?;
            print_table(
                ["NAME", "QUOTA_BYTES", "QUOTA_FILES", "CREATED"],
                users.iter().map(|u| {
                    [
                        u.name.clone(),
                        limit_text(u.quota_bytes),
                        limit_text(u.quota_files),
                        utc_text(u.created_at),
                    ]
                }),
            )?;
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let dir = open(&args.place, false)?;
            existing_user(&*dir, &name)?;
            let password = read_password(&name, password_stdin)?;
            dir.set_password(&name, &password)
                .map_err(|e| e.to_string())?;
            eprintln!("password of user {name:?} changed; its login tokens are revoked");
        }
        UserCommand::Remove { name } => {
            let dir = open(&args.place, false)?;
            let terminals = dir
                .terminals()
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|t| t.owner == name)
                .count();
            dir.remove_user(&name).map_err(|e| e.to_string())?;
            eprintln!("user {name:?} removed, with its {terminals} terminal(s) and login tokens");
        }
        UserCommand::Quota { name, bytes, files } => {
            let dir = open(&args.place, false)?;
            let mut user = existing_user(&*dir, &name)?;
            if bytes.is_some() || files.is_some() {
                // Read, then written: an operator's command racing another
                // operator's on the same user keeps the last one's values.
                user.quota_bytes = bytes.map_or(user.quota_bytes, |l| l.0);
                user.quota_files = files.map_or(user.quota_files, |l| l.0);
                dir.set_quota(&name, user.quota_bytes, user.quota_files)
                    .map_err(|e| e.to_string())?;
            }
            println!(
                "{name}: bytes {}, files {}",
                limit_text(user.quota_bytes),
                limit_text(user.quota_files)
            );
        }
        UserCommand::Allow {
            owner,
            sender,
            remove,
        } => {
            let dir = open(&args.place, false)?;
            existing_user(&*dir, &owner)?;
            let Some(sender) = sender else {
                if remove {
                    return Err("--remove needs the SENDER to withdraw".into());
                }
                for s in dir.allowed_senders(&owner).map_err(|e| e.to_string())? {
                    println!("{s}");
                }
                return Ok(());
            };
            if sender == owner {
                return Err(format!(
                    "user {owner:?} may always push to its own terminals"
                ));
            }
            if !remove {
                listed_peer_of(&args.place, &sender)?;
            }
            dir.allow_sender(&owner, &sender, !remove)
                .map_err(|e| e.to_string())?;
            if remove {
                eprintln!("user {sender:?} may no longer push to the terminals of {owner:?}");
            } else {
                eprintln!("user {sender:?} may push to the terminals of {owner:?}");
            }
        }
    }
    Ok(())
}

/// For a peer relay's user (`user@pair`, PROTOCOL.md §12.1): that the
/// pair is one the configuration's `[[peers]]` lists, as the session
/// checks an `AllowSender`. Withdrawing is not checked.
fn listed_peer_of(place: &Place, sender: &str) -> Result<(), String> {
    let Some((_, pair)) = sender.split_once('@') else {
        return Ok(());
    };
    let config = crate::load_config(place.config.as_deref(), place.data.as_deref())?;
    if config.peers.iter().any(|p| p.name == pair) {
        return Ok(());
    }
    Err(format!(
        "no peer relay {pair:?} in [[peers]]: a remote sender is USER@PAIR, with PAIR a name of [[peers]]"
    ))
}

fn existing_user(dir: &dyn Directory, name: &str) -> Result<UserRecord, String> {
    pickup_relay::directory::validate_account_name(name).map_err(|e| e.to_string())?;
    dir.user(name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no user {name:?}"))
}

fn run_terminal(args: TerminalArgs) -> Result<(), String> {
    match args.command {
        TerminalCommand::Add {
            name,
            owner,
            key_file,
        } => {
            let dir = open(&args.place, false)?;
            if let Some(path) = key_file {
                let key = read_key_file(&path)?;
                dir.add_terminal(&name, &owner, key, unix_now())
                    .map_err(|e| e.to_string())?;
                eprintln!(
                    "terminal {name:?} added for user {owner:?} with the key in {}",
                    path.display()
                );
                return Ok(());
            }
            let mut key = [0u8; 16];
            if !OsRandom.fill(&mut key) {
                return Err("the operating system gave no random bytes for the key".into());
            }
            dir.add_terminal(&name, &owner, DeviceKey(key), unix_now())
                .map_err(|e| e.to_string())?;
            eprintln!(
                "terminal {name:?} added for user {owner:?}. Its device key follows, shown \
                 this once: configure the terminal with it (the relay cannot show it again)"
            );
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let mut out = std::io::stdout().lock();
            writeln!(out, "{hex}")
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot print the key: {e}"))?;
        }
        TerminalCommand::List => {
            let terminals = open(&args.place, false)?
                .terminals()
                .map_err(|e| e.to_string())?;
            print_table(
                ["NAME", "OWNER", "CREATED"],
                terminals
                    .iter()
                    .map(|t| [t.name.clone(), t.owner.clone(), utc_text(t.created_at)]),
            )?;
        }
        TerminalCommand::Remove { name } => {
            open(&args.place, false)?
                .remove_terminal(&name)
                .map_err(|e| e.to_string())?;
            eprintln!("terminal {name:?} removed");
        }
    }
    Ok(())
}

/// The password for `user`: the first line of stdin, or typed twice on
/// the terminal without echo. Never empty, never echoed or logged.
fn read_password(user: &str, from_stdin: bool) -> Result<String, String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        let end = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(end);
        line
    } else {
        let tty = |prompt: &str| {
            rpassword::prompt_password(prompt).map_err(|e| {
                format!("cannot read a password from the terminal ({e}); use --password-stdin")
            })
        };
        let first = tty(&format!("Password for user {user:?}: "))?;
        let again = tty("Again: ")?;
        if first != again {
            return Err("the passwords do not match".into());
        }
        first
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password)
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or_else(|| "none".to_owned(), |n| n.to_string())
}

/// Prints `header` and `rows` on stdout in columns two spaces apart.
fn print_table<const N: usize>(
    header: [&str; N],
    rows: impl Iterator<Item = [String; N]>,
) -> Result<(), String> {
    let rows: Vec<[String; N]> = rows.collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut text = String::new();
    let mut line = |cells: [&str; N]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        text.push_str(&l);
        text.push('\n');
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| format!("cannot print: {e}"))
}

/// A device key from `path`: 32 hex digits, surrounding whitespace ignored
/// (the form peers' key files share, [`pickup_relay::config::peers::parse_key`]).
fn read_key_file(path: &std::path::Path) -> Result<DeviceKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_key(&text).ok_or_else(|| {
        format!(
            "{} does not hold a device key (32 hex digits)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_limits_read_as_expected() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(1_790_000_000), "2026-09-21T14:13:20Z");
        assert_eq!(utc_text(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(parse_limit("none").unwrap().0, None);
        assert_eq!(parse_limit("12").unwrap().0, Some(12));
        assert!(parse_limit("-1").is_err() && parse_limit("1e3").is_err());
    }
}
