-- Push forwards (PROTOCOL.md §12.1): a forward may push its copy to a
-- terminal at the peer once the peer verified it. `push_terminal` and
-- `push_id` (the id's 64 bits as a signed BIGINT) are both NULL for a plain
-- forward. A requester's push ids are unique (a retried ForwardPush finds
-- its forward); the cap on a requester's open forwards counts by
-- `forwards_by_requester`.
ALTER TABLE forwards ADD COLUMN push_terminal TEXT, ADD COLUMN push_id BIGINT;
CREATE UNIQUE INDEX forwards_by_push ON forwards(requester, push_id) WHERE push_id IS NOT NULL;
CREATE INDEX forwards_by_requester ON forwards(requester, state);
