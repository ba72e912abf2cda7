-- Contents in object storage (docs/design/scale-out.md §2.2, §3, §5.3):
-- where each partial upload's durable bytes are (multipart parts of its
-- blob's key, then tail segments), and the objects no row reaches any
-- more, for the collector.

-- `part_size`: S, fixed when the file is announced (the default only
-- covers rows made before this migration: 8 MiB, the smallest S).
ALTER TABLE partials
    ADD COLUMN part_size BIGINT NOT NULL DEFAULT 8388608,
    ADD COLUMN upload_id TEXT,
    ADD COLUMN parts_end BIGINT NOT NULL DEFAULT 0;

-- Part k of the partial's multipart upload: bytes [k*S, (k+1)*S).
CREATE TABLE partial_parts(
    partial BIGINT NOT NULL,
    part_idx BIGINT NOT NULL,
    etag TEXT NOT NULL,
    PRIMARY KEY(partial, part_idx)
);

-- The object tail/{partial}/{fence}/{start_at}-{end_at}.
CREATE TABLE partial_segments(
    partial BIGINT NOT NULL,
    start_at BIGINT NOT NULL,
    end_at BIGINT NOT NULL,
    fence BIGINT NOT NULL,
    PRIMARY KEY(partial, start_at)
);

-- Objects to delete (and multipart uploads to abort) once `not_before`
-- (seconds since the epoch, the database's clock) has passed.
CREATE TABLE doomed_objects(
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key TEXT NOT NULL,
    upload_id TEXT,
    not_before BIGINT NOT NULL
);
CREATE INDEX doomed_objects_by_time ON doomed_objects(not_before);
