-- The usage ledger keyed by package: a row whose usage_key is a package key
-- (`pkg:{ecosystem}/{package}[@{version}]`) names its parts here; a path row and `other` leave
-- them empty. The reverse lookup reads rows by (package, day).
ALTER TABLE usage_daily ADD COLUMN ecosystem TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_daily ADD COLUMN package TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_daily ADD COLUMN version TEXT NOT NULL DEFAULT '';
CREATE INDEX usage_daily_by_package ON usage_daily (package, day);

ALTER TABLE usage_addresses ADD COLUMN ecosystem TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_addresses ADD COLUMN package TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_addresses ADD COLUMN version TEXT NOT NULL DEFAULT '';
CREATE INDEX usage_addresses_by_package ON usage_addresses (package, day);
