-- A disabled token is refused after its secret verifies, and works again once enabled: it
-- keeps its id, secret and history. 0 = enabled, 1 = disabled (an integer, read alike by both
-- backends).
ALTER TABLE tokens ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;
