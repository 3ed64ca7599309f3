-- Overlapping rotation: the secret a regeneration replaced, still accepted until
-- previous_valid_until (milliseconds since the epoch), or until the new secret is first used.
-- Both NULL when there is no overlap.
ALTER TABLE tokens ADD COLUMN previous_hash TEXT;
ALTER TABLE tokens ADD COLUMN previous_valid_until BIGINT;
