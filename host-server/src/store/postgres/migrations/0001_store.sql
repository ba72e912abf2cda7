-- The store's tables: store/sqlite/schema.rs and store/sqlite/deliveries.rs
-- column for column (docs/design/scale-out.md §2.2). Ids that must never be
-- reused are identities; a blob takes the id of the partial upload it was
-- (content_ids), so the two share one sequence. Every number is BIGINT, so
-- each binds as an i64. The S3 tables and columns are migration 4.

CREATE TABLE batches(
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code_len BIGINT NOT NULL,
    code_value BYTEA NOT NULL,
    code_key BYTEA NOT NULL UNIQUE,
    token_key BYTEA NOT NULL UNIQUE,
    owner BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    stale_at BIGINT,
    open BOOLEAN NOT NULL DEFAULT FALSE,
    -- Bumped by every take of the upload (§5.1).
    lease_fence BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX batches_by_expiry ON batches(expires_at);
CREATE INDEX batches_by_staleness ON batches(stale_at) WHERE stale_at IS NOT NULL;

CREATE TABLE files(
    batch BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha1 BYTEA NOT NULL,
    partial BIGINT,
    blob BIGINT,
    executable BOOLEAN,
    mtime BIGINT,
    PRIMARY KEY(batch, idx)
);
CREATE INDEX files_by_blob ON files(blob) WHERE blob IS NOT NULL;

CREATE SEQUENCE content_ids;
-- `batch`: whose fence a sync of the partial checks.
CREATE TABLE partials(
    id BIGINT PRIMARY KEY DEFAULT nextval('content_ids'),
    batch BIGINT NOT NULL,
    durable BIGINT NOT NULL,
    hashed BYTEA
);

CREATE TABLE blobs(
    id BIGINT PRIMARY KEY,
    size BIGINT NOT NULL,
    sha1 BYTEA NOT NULL,
    refs BIGINT NOT NULL,
    threshold BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX blobs_by_sha1 ON blobs(size, sha1);
CREATE INDEX blobs_unreferenced ON blobs(id) WHERE refs <= 0;

CREATE TABLE expired(
    code_key BYTEA PRIMARY KEY,
    expired_at BIGINT NOT NULL
);
CREATE INDEX expired_by_time ON expired(expired_at);

CREATE TABLE blob_owners(
    blob BIGINT NOT NULL,
    owner BYTEA NOT NULL,
    PRIMARY KEY(blob, owner)
);

CREATE TABLE names(
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    blob BIGINT NOT NULL,
    size BIGINT NOT NULL,
    sha1 BYTEA NOT NULL,
    executable BOOLEAN,
    mtime BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY(owner, name)
);
CREATE TABLE name_shares(
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    grantee TEXT NOT NULL,
    PRIMARY KEY(owner, name, grantee)
);
CREATE INDEX name_shares_by_grantee ON name_shares(grantee);
CREATE TABLE kept_blobs(
    blob BIGINT PRIMARY KEY,
    until BIGINT NOT NULL
);
CREATE INDEX kept_blobs_by_time ON kept_blobs(until);

CREATE TABLE deliveries(
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender TEXT NOT NULL,
    push_id BIGINT NOT NULL,
    batch BIGINT NOT NULL,
    code_len BIGINT NOT NULL,
    code_value BYTEA NOT NULL,
    code_key BYTEA NOT NULL,
    terminal TEXT NOT NULL,
    state BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    total BIGINT NOT NULL,
    files BIGINT NOT NULL,
    at BIGINT NOT NULL,
    until BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_read_at BIGINT,
    went_offline BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE(sender, push_id)
);
CREATE INDEX deliveries_by_terminal ON deliveries(terminal, state);
CREATE INDEX deliveries_by_sender_code ON deliveries(sender, code_key);
CREATE INDEX deliveries_by_batch ON deliveries(batch);
CREATE INDEX deliveries_by_state ON deliveries(state, created_at);
CREATE INDEX deliveries_by_until ON deliveries(until);
CREATE TABLE delivery_reads(
    delivery BIGINT NOT NULL,
    file BIGINT NOT NULL,
    read_end BIGINT NOT NULL,
    PRIMARY KEY(delivery, file)
);
