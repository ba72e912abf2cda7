//! What only PostgreSQL does: steps tried again after a commit failed.
//! (The directory's behaviour is checked on every implementation in
//! `directory/tests.rs`.)

use pickup_test_servers::{require, Postgres};

use super::*;

/// A directory on a fresh database whose first commit to `event` (`INSERT`
/// or `DELETE`) rows of `table` fails, as a serialization failure: an
/// answer [`Db`] tries again after, as after a lost connection.
fn failing_first_commit(test: &str, event: &str, table: &str) -> Option<PgDirectory> {
    let pg = require(test, Postgres::shared())?;
    let url = pg.database().unwrap();
    let dir = PgDirectory::open(&url, 1, PasswordParams::FAST_FOR_TESTS).unwrap();
    let name = url.rsplit("dbname=").next().unwrap();
    pg.psql(
        name,
        &format!(
            "CREATE TABLE IF NOT EXISTS probe(n INTEGER);
             CREATE SEQUENCE fail_once;
             CREATE FUNCTION fail_once() RETURNS trigger AS $$
             BEGIN
                 IF nextval('fail_once') = 1 THEN
                     RAISE EXCEPTION 'injected' USING ERRCODE = '40001';
                 END IF;
                 RETURN NULL;
             END $$ LANGUAGE plpgsql;
             CREATE CONSTRAINT TRIGGER fail_once AFTER {event} ON {table}
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_once();"
        ),
    )
    .unwrap();
    Some(dir)
}

#[test]
fn a_step_tried_again_hears_what_the_try_that_reached_its_commit_said() {
    let Some(dir) = failing_first_commit("a_step_tried_again_hears", "INSERT", "probe") else {
        return;
    };
    let mut heard = Vec::new();
    let verdict = dir.run(async |tx, previous: Option<&usize>| {
        heard.push(previous.copied());
        tx.execute("INSERT INTO probe VALUES (1)", &[]).await?;
        Ok(Ok(heard.len()))
    });
    assert_eq!(verdict, Ok(2));
    assert_eq!(heard, [None, Some(1)]);
    let rows = dir.run(async |tx, _| {
        let row = tx.query_one("SELECT count(*) FROM probe", &[]).await?;
        Ok(Ok(row.try_get::<_, i64>(0)?))
    });
    assert_eq!(rows, Ok(1), "the failed commit left nothing");
}

#[test]
fn an_addition_tried_again_adds_once() {
    let Some(dir) = failing_first_commit("an_addition_tried_again_adds_once", "INSERT", "users")
    else {
        return;
    };
    dir.add_user("ada", "pw", 7).unwrap();
    assert_eq!(dir.users().unwrap().len(), 1);
    assert!(dir.check_password("ada", "pw").unwrap());
}

#[test]
fn a_removal_tried_again_removes_once() {
    let Some(dir) = failing_first_commit("a_removal_tried_again_removes_once", "DELETE", "users")
    else {
        return;
    };
    dir.add_user("ada", "pw", 0).unwrap();
    dir.add_terminal("t1", "ada", DeviceKey([1; 16]), 0)
        .unwrap();
    dir.remove_user("ada").unwrap();
    assert_eq!(dir.removed_accounts(10).unwrap(), ["@t1", "ada"]);
    assert_eq!(dir.user("ada").unwrap(), None);
    assert_eq!(dir.terminal("t1").unwrap(), None);
}
