-- Senders from peer relays (PROTOCOL.md §12.1): an owner may allow
-- `user@relay`, a user of a peer relay, who is no row of users. Account
-- names hold no '@', so such a name never stands for a local user; a local
-- sender's grant is still dropped with the user (PgDirectory::remove_user).
ALTER TABLE allowed_senders DROP CONSTRAINT allowed_senders_sender_fkey;
