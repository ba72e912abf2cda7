-- The relay-wide failed-lookup buckets every instance claims tokens from
-- (docs/design/scale-out.md §6.1), one row per part ('lookups.shared',
-- 'lookups.reserved'): `tokens` as of `refilled_at`, in seconds since the
-- Unix epoch on the database's clock, so a skewed instance clock cannot
-- speed the refill up.
CREATE TABLE rate_buckets (
    name TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    refilled_at DOUBLE PRECISION NOT NULL
);
