-- Finished forwards (Done, Failed) are deleted by the relay's sweep once
-- `[forward] keep_finished_secs` passed since they finished. A final forward
-- changes no more (a retry by command makes it open again), so its
-- `updated_at` is its finish time and no column is added; this index lets a
-- sweep read only the rows it deletes.
CREATE INDEX forwards_finished ON forwards(state, updated_at);
