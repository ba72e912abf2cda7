//! Accounts and named files (PROTOCOL.md §8): `login`, `logout`, `whoami`,
//! `ls`, `rm`, `share`.
//!
//! A login's token is kept per relay in the state directory (mode 0600,
//! [`LoginFile`]); the other commands authenticate with it, or as a
//! registered terminal with `--terminal NAME --key-file FILE`.

mod exchange;

use std::io::BufRead;
use std::path::PathBuf;

use clap::Args;
use pickup_proto::identity::DeviceKey;
use pickup_proto::message::{Login as LoginMsg, Message, RemoveNamed, ShareNamed};
use serde_json::json;

pub(crate) use exchange::{refusal, Credential, Delivered, Exchange, Reply};

use super::addr::Relays;
use super::state::{Login, LoginFile};
use super::{default_state_dir, Common, Exit, Failure};

fn state_dir(common: &Common) -> Result<PathBuf, Failure> {
    common
        .state_dir
        .clone()
        .or_else(default_state_dir)
        .ok_or_else(|| Failure::new(Exit::Usage, "no state directory: set --state-dir or HOME"))
}

/// The relay's address with how a `tls://` relay is trusted (`--ca`,
/// `--pin`), as every command dials it.
fn relay_addr(common: &Common) -> Result<Relays, Failure> {
    common.relay_addr()
}

/// Reads a device key file: 32 hex digits (what `pickup-relay terminal
/// add` printed), surrounding whitespace ignored.
pub(crate) fn read_key_file(path: &std::path::Path) -> Result<DeviceKey, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            Exit::Local,
            format!("cannot read key file {}: {e}", path.display()),
        )
    })?;
    let hex = text.trim();
    let mut key = [0u8; 16];
    let ok = hex.len() == 32
        && hex.is_ascii()
        && key.iter_mut().enumerate().all(|(i, b)| {
            match u8::from_str_radix(&hex[2 * i..2 * i + 2], 16) {
                Ok(v) => {
                    *b = v;
                    true
                }
                Err(_) => false,
            }
        });
    if ok {
        Ok(DeviceKey(key))
    } else {
        Err(Failure::new(
            Exit::Usage,
            format!(
                "key file {} does not hold a device key (32 hex digits)",
                path.display()
            ),
        ))
    }
}

/// How this command authenticates: as a terminal if `--terminal` is
/// given, else with the login kept for the relay; `None` if neither.
pub(crate) fn credential(common: &Common) -> Result<Option<Credential>, Failure> {
    if let Some(name) = &common.terminal {
        let Some(path) = &common.key_file else {
            return Err(Failure::new(
                Exit::Usage,
                "--terminal needs --key-file FILE (the device key)",
            ));
        };
        let key = read_key_file(path)?;
        return Ok(Some(Credential::Terminal {
            name: name.clone(),
            key,
        }));
    }
    let addr = relay_addr(common)?;
    let file = LoginFile::new(&state_dir(common)?, &addr.key());
    Ok(file.load().map(|l| Credential::Token(l.token)))
}

/// The credential a named transfer needs, or the one-line refusal to log
/// in first.
pub(crate) fn required_credential(common: &Common) -> Result<Credential, Failure> {
    let addr = relay_addr(common)?;
    credential(common)?.ok_or_else(|| {
        Failure::new(
            Exit::Refused,
            format!(
                "not logged in to {}: run `pickup login USER` first (or give --terminal and --key-file)",
                addr.canonical()
            ),
        )
    })
}

/// An authenticated session, or the one-line refusal to log in first.
fn authenticated(common: &Common) -> Result<(Exchange, String), Failure> {
    let addr = relay_addr(common)?;
    let Some(who) = credential(common)? else {
        return Err(Failure::new(
            Exit::Refused,
            format!(
                "not logged in to {}: run `pickup login USER` first",
                addr.canonical()
            ),
        ));
    };
    let mut ex = Exchange::open(&addr)?;
    let user = ex.authenticate(&who)?;
    Ok((ex, user))
}

/// Reads a password: one line from stdin, or a prompt without echo.
fn read_password(from_stdin: bool, prompt: &str) -> Result<String, Failure> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::new(Exit::Local, format!("cannot read the password: {e}")))?;
        let pw = line.trim_end_matches(['\r', '\n']).to_string();
        if pw.is_empty() {
            return Err(Failure::new(Exit::Usage, "empty password on stdin"));
        }
        return Ok(pw);
    }
    rpassword::prompt_password(prompt).map_err(|e| {
        Failure::new(
            Exit::Usage,
            format!("cannot prompt for a password ({e}); use --password-stdin"),
        )
    })
}

/// `pickup login USER`.
#[derive(Args, Debug)]
pub(crate) struct LoginArgs {
    /// The user name
    user: String,
    /// Read the password from the first line of stdin (for scripts)
    #[arg(long)]
    password_stdin: bool,
    #[arg(skip)]
    pub common: Common,
}

pub(crate) fn login(args: LoginArgs) -> Result<(), Failure> {
    let addr = relay_addr(&args.common)?;
    let dir = state_dir(&args.common)?;
    let password = read_password(args.password_stdin, "Password: ")?;
    let mut ex = Exchange::open(&addr)?;
    let reply = ex.request(&Message::Login(LoginMsg {
        user: &args.user,
        password: &password,
    }))?;
    drop(password);
    let Reply::Authenticated {
        user,
        token,
        expires_at,
        ..
    } = reply
    else {
        return Err(Failure::new(Exit::Refused, "the relay did not log in"));
    };
    ex.close();
    let relay = addr.canonical();
    let key = addr.key();
    LoginFile::new(&dir, &key)
        .save(
            &key,
            &Login {
                user: user.clone(),
                token,
                expires_at,
            },
        )
        .map_err(|e| Failure::new(Exit::Local, format!("cannot keep the login: {e}")))?;
    if args.common.json {
        println!(
            "{}",
            json!({ "user": user, "relay": relay, "expires_at": expires_at })
        );
    } else {
        eprintln!("logged in to {relay} as {user}");
    }
    Ok(())
}

/// `pickup logout`.
#[derive(Args, Debug)]
pub(crate) struct LogoutArgs {
    #[arg(skip)]
    pub common: Common,
}

pub(crate) fn logout(args: LogoutArgs) -> Result<(), Failure> {
    let addr = relay_addr(&args.common)?;
    let relay = addr.canonical();
    let file = LoginFile::new(&state_dir(&args.common)?, &addr.key());
    let Some(kept) = file.load() else {
        return Err(Failure::new(
            Exit::Refused,
            format!("not logged in to {relay}"),
        ));
    };
    // Revoked at the relay first: a token forgotten here only would still
    // work for whoever copied it.
    let mut ex = Exchange::open(&addr)?;
    let revoked = ex
        .authenticate(&Credential::Token(kept.token))
        .and_then(|_| ex.request(&Message::Logout));
    file.remove()
        .map_err(|e| Failure::new(Exit::Local, format!("cannot forget the login: {e}")))?;
    match revoked {
        Ok(_) => {
            ex.close();
            if args.common.json {
                println!("{}", json!({ "logged_out": kept.user, "relay": relay }));
            } else {
                eprintln!("logged out of {relay}");
            }
            Ok(())
        }
        // A token the relay no longer knows is as good as revoked.
        Err(f) if f.exit == Exit::Refused => {
            eprintln!("logged out of {relay} (the relay had already forgotten the login)");
            Ok(())
        }
        Err(f) => Err(f),
    }
}

/// `pickup whoami`.
#[derive(Args, Debug)]
pub(crate) struct WhoamiArgs {
    #[arg(skip)]
    pub common: Common,
}

pub(crate) fn whoami(args: WhoamiArgs) -> Result<(), Failure> {
    let (ex, user) = authenticated(&args.common)?;
    ex.close();
    let relay = relay_addr(&args.common)?.canonical();
    let terminal = args.common.terminal.as_deref();
    if args.common.json {
        println!(
            "{}",
            json!({ "user": user, "terminal": terminal, "relay": relay })
        );
    } else {
        match terminal {
            Some(t) => println!("{user} (terminal {t}) at {relay}"),
            None => println!("{user} at {relay}"),
        }
    }
    Ok(())
}

/// `pickup ls`.
#[derive(Args, Debug)]
pub(crate) struct LsArgs {
    #[arg(skip)]
    pub common: Common,
}

pub(crate) fn ls(args: LsArgs) -> Result<(), Failure> {
    let (mut ex, _) = authenticated(&args.common)?;
    let Reply::Listing(files) = ex.request(&Message::ListNamed)? else {
        return Err(Failure::new(Exit::Refused, "the relay sent no listing"));
    };
    ex.close();
    if args.common.json {
        let files: Vec<_> = files
            .iter()
            .map(|(name, size, sha1)| json!({"name": name, "size": size, "sha1": sha1.to_string()}))
            .collect();
        println!("{}", json!({ "files": files }));
    } else {
        for (name, size, sha1) in &files {
            println!("{size:>14}  {sha1}  {name}");
        }
    }
    Ok(())
}

/// `pickup rm NAME`.
#[derive(Args, Debug)]
pub(crate) struct RmArgs {
    /// The name to delete
    name: String,
    #[arg(skip)]
    pub common: Common,
}

pub(crate) fn rm(args: RmArgs) -> Result<(), Failure> {
    let (mut ex, _) = authenticated(&args.common)?;
    ex.request(&Message::RemoveNamed(RemoveNamed { name: &args.name }))?;
    ex.close();
    if args.common.json {
        println!("{}", json!({ "removed": args.name }));
    }
    Ok(())
}

/// `pickup share NAME --with USER [--revoke]`.
#[derive(Args, Debug)]
pub(crate) struct ShareArgs {
    /// The name to share
    name: String,
    /// Who may read it: a user name, or @TERMINAL
    #[arg(long, value_name = "USER|@TERMINAL")]
    with: String,
    /// Take the access back instead
    #[arg(long)]
    revoke: bool,
    #[arg(skip)]
    pub common: Common,
}

pub(crate) fn share(args: ShareArgs) -> Result<(), Failure> {
    let (mut ex, _) = authenticated(&args.common)?;
    ex.request(&Message::ShareNamed(ShareNamed {
        name: &args.name,
        with: &args.with,
        allow: !args.revoke,
    }))?;
    ex.close();
    if args.common.json {
        println!(
            "{}",
            json!({ "name": args.name, "with": args.with, "shared": !args.revoke })
        );
    }
    Ok(())
}
