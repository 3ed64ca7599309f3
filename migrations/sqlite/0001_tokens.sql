-- Tokens managed through the admin API and the CLI. Times are Unix milliseconds.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    hash        TEXT NOT NULL,
    permission  TEXT NOT NULL,
    routes      TEXT NOT NULL DEFAULT '[]',
    rate_limit  TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    generation  BIGINT NOT NULL
);

-- Last use of any token (file, database or bootstrap), written behind in batches.
CREATE TABLE token_usage (
    id           TEXT PRIMARY KEY NOT NULL,
    last_used_at BIGINT NOT NULL
);

-- A counter bumped by every token write: replicas and the server poll it to notice writes
-- made by another process.
CREATE TABLE tollgate_meta (
    k TEXT PRIMARY KEY NOT NULL,
    v BIGINT NOT NULL
);
INSERT INTO tollgate_meta (k, v) VALUES ('changes', 0);
