-- Beside a token's last-use time: the client address and user agent of that use (written in
-- the same batches; NULL until the next use after this migration).
ALTER TABLE token_usage ADD COLUMN last_used_ip TEXT;
ALTER TABLE token_usage ADD COLUMN last_used_user_agent TEXT;
