-- The usage ledger: per token, usage key (a normalized path; `other` for what overflowed the
-- in-memory bound) and UTC day ('YYYY-MM-DD'), written in batches by the server.
CREATE TABLE usage_daily (
    token_id TEXT NOT NULL,
    day TEXT NOT NULL,
    usage_key TEXT NOT NULL,
    requests BIGINT NOT NULL,
    bytes_sent BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    status_2xx BIGINT NOT NULL,
    status_3xx BIGINT NOT NULL,
    status_4xx BIGINT NOT NULL,
    status_5xx BIGINT NOT NULL,
    PRIMARY KEY (token_id, day, usage_key)
);
CREATE INDEX usage_daily_by_key ON usage_daily (usage_key, day);
CREATE INDEX usage_daily_by_day ON usage_daily (day);

-- Distinct client addresses per ledger row, at most usage.max_addresses each.
CREATE TABLE usage_addresses (
    token_id TEXT NOT NULL,
    day TEXT NOT NULL,
    usage_key TEXT NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (token_id, day, usage_key, address)
);
CREATE INDEX usage_addresses_by_day ON usage_addresses (day);

-- Webhook events that one replica has claimed (and sent): token.expiring once per token and
-- window, token.anomaly once per token and hour.
CREATE TABLE webhook_claims (
    claim TEXT PRIMARY KEY,
    claimed_at BIGINT NOT NULL
);
