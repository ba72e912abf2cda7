//! The same checks against every directory: each test body takes a
//! `&dyn Directory` and runs once per implementation (PostgreSQL's when
//! the test servers have it, else with a `skipped:` line).

use pickup_proto::identity::DeviceKey;
use pickup_proto::message::AuthToken;
use pickup_test_servers::{require, Postgres};

use super::*;

const FAST: PasswordParams = PasswordParams::FAST_FOR_TESTS;

/// A PostgreSQL directory on a fresh database, `None` (after a `skipped:`
/// line) without PostgreSQL.
fn postgres(test: &str) -> Option<PgDirectory> {
    let pg = require(test, Postgres::shared())?;
    let url = pg.database().unwrap();
    Some(PgDirectory::open(&url, 2, FAST).unwrap())
}

/// Runs `check` on a fresh memory directory, a fresh SQLite one and a
/// fresh PostgreSQL one.
fn each(check: impl Fn(&dyn Directory)) {
    check(&MemoryDirectory::new(FAST));
    let dir = tempfile::tempdir().unwrap();
    check(&SqliteDirectory::open(&dir.path().join("data"), FAST).unwrap());
    // libtest runs each test on a thread named after it: the skip line's.
    let thread = std::thread::current();
    if let Some(pg) = postgres(thread.name().unwrap_or("a directory test")) {
        check(&pg);
    }
}

fn key(n: u8) -> DeviceKey {
    DeviceKey([n; 16])
}

fn token(n: u8) -> AuthToken {
    AuthToken([n; 16])
}

#[test]
fn users_are_added_listed_changed_and_removed() {
    each(|d| {
        d.add_user("bob", "pw-b", 20).unwrap();
        d.add_user("ada", "pw-a", 10).unwrap();
        let names: Vec<_> = d.users().unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["ada", "bob"], "sorted by name");
        let ada = d.user("ada").unwrap().unwrap();
        assert_eq!(
            ada,
            UserRecord {
                name: "ada".into(),
                quota_bytes: None,
                quota_files: None,
                created_at: 10
            }
        );
        d.set_quota("ada", Some(1 << 40), Some(7)).unwrap();
        let ada = d.user("ada").unwrap().unwrap();
        assert_eq!((ada.quota_bytes, ada.quota_files), (Some(1 << 40), Some(7)));
        d.set_quota("ada", None, Some(u64::MAX)).unwrap();
        let ada = d.user("ada").unwrap().unwrap();
        assert_eq!(ada.quota_bytes, None);
        // SQLite keeps at most i64::MAX: as good as no limit.
        assert!(ada.quota_files >= Some(i64::MAX as u64));
        d.remove_user("bob").unwrap();
        assert_eq!(d.user("bob").unwrap(), None);
        assert_eq!(d.users().unwrap().len(), 1);
        assert_eq!(
            d.remove_user("bob"),
            Err(DirectoryError::NotFound("user \"bob\"".into()))
        );
        assert_eq!(
            d.remove_user("bob").unwrap_err().to_string(),
            "no user \"bob\""
        );
        assert!(matches!(
            d.set_quota("bob", None, None),
            Err(DirectoryError::NotFound(_))
        ));
        assert!(matches!(
            d.set_password("bob", "x"),
            Err(DirectoryError::NotFound(_))
        ));
    });
}

#[test]
fn a_taken_name_is_refused_whether_user_or_terminal() {
    each(|d| {
        d.add_user("ada", "pw", 0).unwrap();
        let e = d.add_user("ada", "other", 0).unwrap_err();
        assert_eq!(e, DirectoryError::Exists("user \"ada\"".into()));
        assert_eq!(e.to_string(), "user \"ada\" already exists");
        assert!(
            d.check_password("ada", "pw").unwrap(),
            "the first password stays"
        );
        d.add_terminal("sensor-1", "ada", key(1), 0).unwrap();
        assert!(matches!(
            d.add_terminal("sensor-1", "ada", key(2), 0),
            Err(DirectoryError::Exists(_))
        ));
        assert!(matches!(
            d.add_user("sensor-1", "pw", 0),
            Err(DirectoryError::Exists(_))
        ));
        assert!(matches!(
            d.add_terminal("ada", "ada", key(2), 0),
            Err(DirectoryError::Exists(_))
        ));
        assert_eq!(d.terminal("sensor-1").unwrap().unwrap().key, key(1));
    });
}

#[test]
fn passwords_are_checked_and_unknown_users_fail_alike() {
    each(|d| {
        d.add_user("ada", "hunter2", 0).unwrap();
        assert!(d.check_password("ada", "hunter2").unwrap());
        assert!(!d.check_password("ada", "hunter3").unwrap());
        assert!(!d.check_password("ada", "").unwrap());
        assert!(!d.check_password("bob", "hunter2").unwrap());
        assert!(!d.check_password("bob", "pickup dummy password").unwrap());
        assert!(!d.check_password("../etc", "hunter2").unwrap());
        d.set_password("ada", "correct horse").unwrap();
        assert!(!d.check_password("ada", "hunter2").unwrap());
        assert!(d.check_password("ada", "correct horse").unwrap());
    });
}

#[test]
fn tokens_expire_are_revoked_and_die_with_a_new_password() {
    each(|d| {
        d.add_user("ada", "pw", 0).unwrap();
        d.add_user("bob", "pw", 0).unwrap();
        d.add_token("ada", &token(1), 100).unwrap();
        d.add_token("ada", &token(2), 100).unwrap();
        d.add_token("bob", &token(3), 100).unwrap();
        assert!(matches!(
            d.add_token("eve", &token(4), 100),
            Err(DirectoryError::NotFound(_))
        ));
        let info = d.check_token(&token(1), 99).unwrap().unwrap();
        assert_eq!(
            info,
            TokenInfo {
                user: "ada".into(),
                expires_at: 100
            }
        );
        assert_eq!(d.check_token(&token(1), 100).unwrap(), None, "expired");
        assert_eq!(d.check_token(&token(9), 0).unwrap(), None, "unknown");
        assert!(d.revoke_token(&token(2)).unwrap());
        assert!(!d.revoke_token(&token(2)).unwrap());
        assert_eq!(d.check_token(&token(2), 0).unwrap(), None, "revoked");
        d.set_password("ada", "new").unwrap();
        assert_eq!(d.check_token(&token(1), 0).unwrap(), None, "passwd revokes");
        assert!(
            d.check_token(&token(3), 0).unwrap().is_some(),
            "others' stay"
        );
        d.add_token("bob", &token(5), 50).unwrap();
        assert_eq!(d.remove_expired_tokens(50).unwrap(), 1);
        assert!(d.check_token(&token(3), 50).unwrap().is_some());
    });
}

#[test]
fn removing_a_user_removes_its_terminals_and_tokens() {
    each(|d| {
        d.add_user("ada", "pw", 0).unwrap();
        d.add_user("bob", "pw", 0).unwrap();
        d.add_terminal("t-ada", "ada", key(1), 5).unwrap();
        d.add_terminal("t-bob", "bob", key(2), 6).unwrap();
        assert!(matches!(
            d.add_terminal("t-eve", "eve", key(3), 0),
            Err(DirectoryError::NotFound(_))
        ));
        d.add_token("ada", &token(1), 100).unwrap();
        assert_eq!(
            d.terminal("t-ada").unwrap().unwrap(),
            TerminalRecord {
                name: "t-ada".into(),
                owner: "ada".into(),
                key: key(1),
                created_at: 5
            }
        );
        d.remove_user("ada").unwrap();
        assert_eq!(d.terminal("t-ada").unwrap(), None);
        assert_eq!(d.check_token(&token(1), 0).unwrap(), None);
        let names: Vec<_> = d.terminals().unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["t-bob"]);
        d.remove_terminal("t-bob").unwrap();
        assert!(d.terminals().unwrap().is_empty());
        assert_eq!(
            d.remove_terminal("t-bob").unwrap_err().to_string(),
            "no terminal \"t-bob\""
        );
        // The name is free again, for either kind of account, once the
        // relay released what the terminal held.
        d.forget_removed(&d.removed_accounts(10).unwrap()).unwrap();
        d.add_user("t-bob", "pw", 0).unwrap();
    });
}

#[test]
fn hostile_names_are_refused() {
    let long = "a".repeat(4096);
    let hostile = [
        "",
        "/",
        "a/b",
        "..",
        ".hidden",
        "-rf",
        "_x",
        "Ada",
        "a b",
        "a\n",
        "a\u{0}",
        "a\u{1b}[2J",
        "é",
        "ａ",
        &long,
        &"b".repeat(33),
    ];
    each(|d| {
        d.add_user("ada", "pw", 0).unwrap();
        for name in hostile {
            let e = d.add_user(name, "pw", 0).unwrap_err();
            assert!(matches!(e, DirectoryError::InvalidName(_)), "{name:?}: {e}");
            assert!(e.to_string().len() < 200, "the error quotes a bounded name");
            assert!(!e.to_string().contains('\n'), "escaped");
            assert!(matches!(
                d.add_terminal(name, "ada", key(1), 0),
                Err(DirectoryError::InvalidName(_))
            ));
            assert!(matches!(
                d.add_terminal("t", name, key(1), 0),
                Err(DirectoryError::InvalidName(_))
            ));
            assert!(matches!(
                d.remove_user(name),
                Err(DirectoryError::InvalidName(_))
            ));
            assert_eq!(d.user(name).unwrap(), None);
            assert!(!d.check_password(name, "pw").unwrap());
            assert_eq!(d.terminal(name).unwrap(), None);
            assert!(!d.allows_sender("ada", name).unwrap());
            assert!(d.allowed_senders(name).unwrap().is_empty());
            assert!(matches!(
                d.add_token(name, &token(1), 100),
                Err(DirectoryError::NotFound(_))
            ));
        }
        assert_eq!(d.users().unwrap().len(), 1);
        assert!(d.terminals().unwrap().is_empty());
    });
    for ok in ["a", "0", "ada.lovelace", "sensor_1-b", &"c".repeat(32)] {
        validate_account_name(ok).unwrap();
    }
}

#[test]
fn the_database_holds_no_password_nor_token_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let d = SqliteDirectory::open(&data, FAST).unwrap();
        d.add_user("ada", "hunter2-secret", 1).unwrap();
        d.add_token("ada", &token(0x3c), 100).unwrap();
        d.add_terminal("t", "ada", key(0x77), 1).unwrap();
    }
    let d = SqliteDirectory::open(&data, FAST).unwrap();
    assert!(d.check_password("ada", "hunter2-secret").unwrap());
    assert!(d.check_token(&token(0x3c), 0).unwrap().is_some());
    assert_eq!(d.terminal("t").unwrap().unwrap().key, key(0x77));
    drop(d);
    let mut bytes = std::fs::read(data.join("relay.sqlite")).unwrap();
    // The last connection's close moved the WAL into the file; read any
    // WAL left all the same.
    bytes.extend(std::fs::read(data.join("relay.sqlite-wal")).unwrap_or_default());
    let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!find(b"hunter2-secret"));
    assert!(!find(&[0x3c; 16]));
    assert!(find(&[0x77; 16]), "device keys are stored: HMACs need them");
}

#[test]
fn the_store_and_the_directory_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = SqliteDirectory::open(&data, FAST).unwrap();
    d.add_user("ada", "pw", 1).unwrap();
    // The store opens the same file afterwards, keeps its own tables and
    // leaves the directory's alone.
    let (_store, _) = crate::store::sqlite::SqliteStore::open(&data).unwrap();
    assert!(d.user("ada").unwrap().is_some());
    let again = SqliteDirectory::open(&data, FAST).unwrap();
    assert!(again.check_password("ada", "pw").unwrap());
}

#[test]
fn removed_accounts_wait_for_the_relay_and_keep_their_names_until_released() {
    each(|d| {
        d.add_user("ada", "pw", 1).unwrap();
        d.add_terminal("t1", "ada", key(1), 1).unwrap();
        d.add_user("bob", "pw", 1).unwrap();
        d.add_terminal("t2", "bob", key(2), 1).unwrap();
        assert_eq!(d.removed_accounts(10).unwrap(), Vec::<String>::new());
        d.remove_terminal("t2").unwrap();
        d.remove_user("ada").unwrap();
        assert_eq!(d.removed_accounts(10).unwrap(), ["@t1", "@t2", "ada"]);
        assert_eq!(d.removed_accounts(2).unwrap(), ["@t1", "@t2"]);
        // Taken again before the relay released the files: they would be
        // inherited.
        assert!(matches!(
            d.add_user("ada", "pw", 2),
            Err(DirectoryError::Exists(_))
        ));
        assert!(matches!(
            d.add_terminal("t1", "bob", key(3), 2),
            Err(DirectoryError::Exists(_))
        ));
        d.forget_removed(&["@t1".to_owned(), "ada".to_owned()])
            .unwrap();
        assert_eq!(d.removed_accounts(10).unwrap(), ["@t2"]);
        d.add_user("ada", "pw", 3).unwrap();
        d.add_terminal("t1", "ada", key(4), 3).unwrap();
    });
}

#[test]
fn allowed_senders_are_granted_withdrawn_and_go_with_either_user() {
    each(|d| {
        d.add_user("ada", "pw-a", 1).unwrap();
        d.add_user("bob", "pw-b", 1).unwrap();
        d.add_user("cy", "pw-c", 1).unwrap();
        assert!(!d.allows_sender("ada", "bob").unwrap());
        d.allow_sender("ada", "bob", true).unwrap();
        d.allow_sender("ada", "bob", true).unwrap();
        assert!(d.allows_sender("ada", "bob").unwrap());
        assert!(!d.allows_sender("bob", "ada").unwrap(), "one way only");
        assert_eq!(d.allowed_senders("ada").unwrap(), ["bob"]);
        d.allow_sender("ada", "bob", false).unwrap();
        assert!(!d.allows_sender("ada", "bob").unwrap());
        // A grant to a name nobody holds is not kept for its next holder.
        assert!(matches!(
            d.allow_sender("ada", "nobody", true),
            Err(DirectoryError::NotFound(_))
        ));
        assert!(d.allow_sender("ada", "../x", true).is_err());
        d.allow_sender("ada", "cy", true).unwrap();
        d.allow_sender("cy", "ada", true).unwrap();
        d.remove_user("cy").unwrap();
        assert!(!d.allows_sender("ada", "cy").unwrap());
        assert!(d.allowed_senders("cy").unwrap().is_empty());
    });
}

#[test]
fn a_peer_relays_user_is_allowed_by_name_and_goes_with_the_owner() {
    each(|d| {
        d.add_user("ada", "pw-a", 1).unwrap();
        d.add_user("alice", "pw-l", 1).unwrap();
        // Nobody here holds the name: it is stored all the same.
        d.allow_sender("ada", "alice@site-a", true).unwrap();
        d.allow_sender("ada", "alice@site-a", true).unwrap();
        d.allow_sender("ada", "bob@site-b", true).unwrap();
        d.allow_sender("ada", "alice", true).unwrap();
        assert!(d.allows_sender("ada", "alice@site-a").unwrap());
        assert_eq!(
            d.allowed_senders("ada").unwrap(),
            ["alice", "alice@site-a", "bob@site-b"]
        );
        // The local user and the remote one are two senders.
        d.allow_sender("ada", "alice", false).unwrap();
        assert!(!d.allows_sender("ada", "alice").unwrap());
        assert!(d.allows_sender("ada", "alice@site-a").unwrap());
        assert!(!d.allows_sender("ada", "alice@site-b").unwrap());
        // Removing the local alice leaves the remote one's grant.
        d.remove_user("alice").unwrap();
        assert!(d.allows_sender("ada", "alice@site-a").unwrap());
        d.allow_sender("ada", "bob@site-b", false).unwrap();
        assert_eq!(d.allowed_senders("ada").unwrap(), ["alice@site-a"]);
        // Only USER@RELAY, each an account name.
        for bad in ["@site-a", "alice@", "a@b@c", "Alice@site-a", "alice@site a"] {
            assert!(
                matches!(
                    d.allow_sender("ada", bad, true),
                    Err(DirectoryError::InvalidName(_))
                ),
                "{bad}"
            );
            assert!(!d.allows_sender("ada", bad).unwrap(), "{bad}");
        }
        // The owner must still be a user.
        assert!(matches!(
            d.allow_sender("nobody", "alice@site-a", true),
            Err(DirectoryError::NotFound(_))
        ));
        d.remove_user("ada").unwrap();
        assert!(!d.allows_sender("ada", "alice@site-a").unwrap());
        assert!(d.allowed_senders("ada").unwrap().is_empty());
    });
}

/// Remote sender names cost the owner nothing to invent: a cap keeps one
/// account from growing the table without end. Local senders, a granted
/// name again and withdrawals do not count against it.
#[test]
fn an_owner_allows_at_most_max_remote_senders_users_of_peer_relays() {
    each(|d| {
        d.add_user("ada", "pw-a", 1).unwrap();
        d.add_user("bob", "pw-b", 1).unwrap();
        for i in 0..MAX_REMOTE_SENDERS {
            d.allow_sender("ada", &format!("u{i}@site-a"), true)
                .unwrap();
        }
        assert!(matches!(
            d.allow_sender("ada", "one-more@site-a", true),
            Err(DirectoryError::Full(_))
        ));
        assert!(!d.allows_sender("ada", "one-more@site-a").unwrap());
        // Already granted, or local: taken.
        d.allow_sender("ada", "u0@site-a", true).unwrap();
        d.allow_sender("ada", "bob", true).unwrap();
        // Another owner has its own room.
        d.allow_sender("bob", "one-more@site-a", true).unwrap();
        // A withdrawal makes room.
        d.allow_sender("ada", "u0@site-a", false).unwrap();
        d.allow_sender("ada", "one-more@site-a", true).unwrap();
        assert_eq!(
            d.allowed_senders("ada").unwrap().len() as u64,
            MAX_REMOTE_SENDERS + 1
        );
    });
}

/// Two handles on one database, as two relay instances (or a relay and
/// an admin command) hold them.
fn two_handles(test: &str) -> Option<(PgDirectory, PgDirectory)> {
    let pg = require(test, Postgres::shared())?;
    let url = pg.database().unwrap();
    let a = PgDirectory::open(&url, 2, FAST).unwrap();
    let b = PgDirectory::open(&url, 2, FAST).unwrap();
    Some((a, b))
}

#[test]
fn postgres_instances_see_each_others_changes_at_once() {
    let Some((a, b)) = two_handles("postgres_instances_see_each_others_changes_at_once") else {
        return;
    };
    a.add_user("ada", "hunter2", 1).unwrap();
    assert!(b.check_password("ada", "hunter2").unwrap());
    assert!(matches!(
        b.add_user("ada", "other", 2),
        Err(DirectoryError::Exists(_))
    ));
    b.add_token("ada", &token(1), 100).unwrap();
    assert_eq!(a.check_token(&token(1), 0).unwrap().unwrap().user, "ada");
    assert!(a.revoke_token(&token(1)).unwrap());
    assert_eq!(b.check_token(&token(1), 0).unwrap(), None);
    a.add_token("ada", &token(2), 100).unwrap();
    b.set_password("ada", "new").unwrap();
    assert_eq!(a.check_token(&token(2), 0).unwrap(), None);
    assert!(a.check_password("ada", "new").unwrap());
    a.add_terminal("t1", "ada", key(1), 1).unwrap();
    assert_eq!(b.terminal("t1").unwrap().unwrap().key, key(1));
    b.remove_user("ada").unwrap();
    assert_eq!(a.user("ada").unwrap(), None);
    assert_eq!(a.terminal("t1").unwrap(), None);
    assert_eq!(a.removed_accounts(10).unwrap(), ["@t1", "ada"]);
}

/// Rounds of each race below: each round is two calls on two threads,
/// released together; a broken rule shows up in some round, not surely in
/// one.
const RACE_ROUNDS: usize = 10;

/// Runs `left` and `right` at once on two threads.
fn race<L: Send, R: Send>(
    left: impl FnOnce() -> L + Send,
    right: impl FnOnce() -> R + Send,
) -> (L, R) {
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let l = s.spawn(|| {
            start.wait();
            left()
        });
        let r = s.spawn(|| {
            start.wait();
            right()
        });
        (l.join().unwrap(), r.join().unwrap())
    })
}

#[test]
fn postgres_instances_adding_one_name_at_once_get_one_account() {
    let Some((a, b)) = two_handles("postgres_instances_adding_one_name_at_once") else {
        return;
    };
    a.add_user("owner", "pw", 0).unwrap();
    for round in 0..RACE_ROUNDS {
        let name = format!("u{round}");
        let (one, two) = race(
            || a.add_user(&name, "from-a", 0),
            || b.add_user(&name, "from-b", 0),
        );
        let exists = DirectoryError::Exists(user_named(&name));
        match (&one, &two) {
            (Ok(()), Err(e)) | (Err(e), Ok(())) => assert_eq!(*e, exists),
            other => panic!("round {round}: {other:?}"),
        }
        let winner = if one.is_ok() { "from-a" } else { "from-b" };
        assert!(b.check_password(&name, winner).unwrap());
        // A user and a terminal of one name: one namespace.
        let name = format!("x{round}");
        let (user, terminal) = race(
            || a.add_user(&name, "pw", 0),
            || b.add_terminal(&name, "owner", key(1), 0),
        );
        assert!(
            user.is_ok() != terminal.is_ok(),
            "round {round}: {user:?} {terminal:?}"
        );
        assert!(matches!(user.and(terminal), Err(DirectoryError::Exists(_))));
    }
}

#[test]
fn postgres_nothing_outlives_a_user_removed_while_it_is_added() {
    let Some((a, b)) = two_handles("postgres_nothing_outlives_a_user_removed") else {
        return;
    };
    a.add_user("ada", "pw", 0).unwrap();
    for round in 0..RACE_ROUNDS {
        let (owner, terminal) = (format!("o{round}"), format!("t{round}"));
        a.add_user(&owner, "pw", 0).unwrap();
        let tok = token(round as u8);
        let (added, removed) = race(
            || {
                (
                    b.add_terminal(&terminal, &owner, key(2), 0),
                    b.add_token(&owner, &tok, 100),
                    b.allow_sender(&owner, "ada", true),
                    b.allow_sender("ada", &owner, true),
                )
            },
            || a.remove_user(&owner),
        );
        removed.unwrap();
        for result in [added.0, added.1, added.2, added.3] {
            assert!(
                matches!(result, Ok(()) | Err(DirectoryError::NotFound(_))),
                "round {round}: {result:?}"
            );
        }
        assert_eq!(a.terminal(&terminal).unwrap(), None, "round {round}");
        assert_eq!(a.check_token(&tok, 0).unwrap(), None, "round {round}");
        assert!(a.allowed_senders(&owner).unwrap().is_empty());
        assert!(!a.allows_sender("ada", &owner).unwrap());
    }
    assert!(a.allowed_senders("ada").unwrap().is_empty());
}
