-- The package patterns a token is limited to (package scopes), joined by commas
-- ('acme/*,@acme/*,com.acme:*'); '' = every package.
ALTER TABLE tokens ADD COLUMN packages TEXT NOT NULL DEFAULT '';
