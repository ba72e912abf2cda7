-- The accounts (directory/postgres.rs): directory/sqlite.rs's tables,
-- column for column. Numbers are BIGINT (Unix seconds, quotas), the token
-- hash (SHA-256) and the device key (16 bytes) BYTEA.
--
-- Unlike SQLite, the references to a user are foreign keys: two instances
-- (or an admin command beside a relay) write at once, and a key keeps a
-- terminal, token or grant from outliving its user whatever the race. The
-- code takes the same row locks first and reports a clean NotFound; the
-- keys are the backstop. Names sort in byte order (COLLATE "C"), as in
-- SQLite, whatever the database's locale. (`user` is a reserved word,
-- hence the quotes.)

CREATE TABLE users(
    name TEXT COLLATE "C" PRIMARY KEY,
    password TEXT NOT NULL,
    quota_bytes BIGINT,
    quota_files BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE auth_tokens(
    hash BYTEA PRIMARY KEY,
    "user" TEXT COLLATE "C" NOT NULL REFERENCES users(name),
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_tokens_by_user ON auth_tokens("user");

CREATE TABLE terminals(
    name TEXT COLLATE "C" PRIMARY KEY,
    owner TEXT COLLATE "C" NOT NULL REFERENCES users(name),
    key BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX terminals_by_owner ON terminals(owner);

CREATE TABLE removed_accounts(
    name TEXT COLLATE "C" PRIMARY KEY
);

CREATE TABLE allowed_senders(
    owner TEXT COLLATE "C" NOT NULL REFERENCES users(name),
    sender TEXT COLLATE "C" NOT NULL REFERENCES users(name),
    PRIMARY KEY(owner, sender)
);
CREATE INDEX allowed_senders_by_sender ON allowed_senders(sender);
