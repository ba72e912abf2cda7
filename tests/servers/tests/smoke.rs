//! The servers start, and they do what the relay's PostgreSQL + S3 backend
//! relies on, with the clients it uses (tokio-postgres, object_store):
//! transactions, advisory locks and LISTEN/NOTIFY; ranged GETs, create-only
//! PUTs, and multipart uploads continued by a second client from the id.
#![allow(clippy::unwrap_used)]

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use pickup_test_servers::{require, Bucket, Postgres, S3};

fn s3_client(b: &Bucket) -> AmazonS3 {
    // reqwest is built without a provider of its own (no aws-lc-rs): the
    // relay uses ring, as its TLS listeners do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    AmazonS3Builder::new()
        .with_endpoint(&b.endpoint)
        .with_allow_http(true)
        .with_region(&b.region)
        .with_bucket_name(&b.name)
        .with_access_key_id(&b.access_key_id)
        .with_secret_access_key(&b.secret_access_key)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap()
}

#[test]
fn postgres_runs_transactions_locks_and_notifications() {
    let Some(pg) = require("postgres smoke test", Postgres::shared()) else {
        return;
    };
    let url = pg.database().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("CREATE TABLE t(id BIGINT PRIMARY KEY, v BYTEA NOT NULL)")
            .await
            .unwrap();
        let tx = client.transaction().await.unwrap();
        tx.execute("SELECT pg_advisory_xact_lock(42)", &[])
            .await
            .unwrap();
        tx.execute(
            "INSERT INTO t VALUES ($1, $2)",
            &[&7i64, &b"bytes".as_slice()],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let row = client
            .query_one("SELECT v FROM t WHERE id = $1", &[&7i64])
            .await
            .unwrap();
        assert_eq!(row.get::<_, Vec<u8>>(0), b"bytes");
        let sync: String = client
            .query_one("SHOW synchronous_commit", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(sync, "on");
    });
    assert_eq!(
        pg.psql(&url_db(&url), "SELECT count(*) FROM t")
            .unwrap()
            .trim(),
        "1"
    );
}

/// The `dbname=` of a connection string.
fn url_db(url: &str) -> String {
    url.split_whitespace()
        .find_map(|kv| kv.strip_prefix("dbname="))
        .unwrap()
        .to_string()
}

#[test]
fn a_restarted_postgres_takes_new_connections() {
    let Some(pg) = require("postgres restart test", Postgres::start()) else {
        return;
    };
    let url = pg.database().unwrap();
    pg.restart().unwrap();
    assert_eq!(pg.psql(&url_db(&url), "SELECT 1").unwrap().trim(), "1");
}

#[test]
fn s3_serves_ranges_create_only_puts_and_resumable_multipart_uploads() {
    let Some(s3) = require("s3 smoke test", S3::shared()) else {
        return;
    };
    let bucket = s3.bucket().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let a = s3_client(&bucket);
        let key = Path::from("tail/1/0/0-5");
        let create = PutOptions::from(PutMode::Create);
        a.put_opts(&key, PutPayload::from_static(b"hello"), create.clone())
            .await
            .unwrap();
        let again = a
            .put_opts(&key, PutPayload::from_static(b"other"), create)
            .await;
        assert!(
            matches!(again, Err(object_store::Error::AlreadyExists { .. })),
            "{again:?}"
        );
        assert_eq!(&a.get_range(&key, 1..3).await.unwrap()[..], b"el");

        // One client starts a multipart upload and sends part 0; a second
        // client (another relay instance) sends part 1 by the upload id
        // alone and completes it.
        let blob = Path::from("blobs/1");
        let id = a.create_multipart(&blob).await.unwrap();
        let part0 = vec![1u8; 5 << 20];
        let p0 = a
            .put_part(&blob, &id, 0, PutPayload::from(part0.clone()))
            .await
            .unwrap();
        let b = s3_client(&bucket);
        let p1 = b
            .put_part(&blob, &id, 1, PutPayload::from_static(b"tail"))
            .await
            .unwrap();
        b.complete_multipart(&blob, &id, vec![p0, p1])
            .await
            .unwrap();
        let all = a.get(&blob).await.unwrap().bytes().await.unwrap();
        assert_eq!(all.len(), part0.len() + 4);
        assert_eq!(&all[part0.len()..], b"tail");

        // An aborted upload leaves no object.
        let gone = Path::from("blobs/2");
        let id = a.create_multipart(&gone).await.unwrap();
        a.put_part(&gone, &id, 0, PutPayload::from_static(b"x"))
            .await
            .unwrap();
        a.abort_multipart(&gone, &id).await.unwrap();
        assert!(matches!(
            a.head(&gone).await,
            Err(object_store::Error::NotFound { .. })
        ));
    });
}
