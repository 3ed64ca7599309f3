-- A token's download quota as JSON ({"requests":N,"bytes":N,"period":"30days"}); NULL: none.
ALTER TABLE tokens ADD COLUMN quota TEXT;
-- Quota usage per token and period when there is no shared rate-limit backend (Redis): the
-- replicas add their counts in batches. `period_seconds` and `period_index` name the fixed
-- window (counted from the Unix epoch) the counts belong to.
CREATE TABLE token_quota_usage (
    token_id TEXT NOT NULL,
    period_seconds BIGINT NOT NULL,
    period_index BIGINT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (token_id, period_seconds, period_index)
);
