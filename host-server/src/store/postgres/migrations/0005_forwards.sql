-- Forwards to peer relays (docs/design/forwarding.md §3): the queue every
-- instance claims from (store/sqlite/forwards.rs on PostgreSQL). `state`
-- is ForwardState's number, `last_error` an ErrorCode's (NULL: none);
-- `claim` counts the claims, and a running row whose `lease_until` passed
-- is due again.
CREATE TABLE forwards(
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch BIGINT NOT NULL,
    code_len BIGINT NOT NULL,
    code_value BYTEA NOT NULL,
    requester TEXT NOT NULL,
    peer TEXT NOT NULL,
    state BIGINT NOT NULL,
    sent BIGINT NOT NULL,
    total BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error BIGINT,
    peer_token BYTEA,
    peer_code_len BIGINT,
    peer_code_value BYTEA,
    peer_expires_at BIGINT NOT NULL,
    claim BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX forwards_by_state ON forwards(state, next_attempt_at);
