-- The client networks a token may be used from, checked after its secret verifies: CIDR
-- networks or single addresses joined by commas ('10.0.0.0/8,2001:db8::/32'); '' = any address.
ALTER TABLE tokens ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '';
