-- Trusted publishing. A token minted by an OIDC exchange keeps its origin (policy, issuer, the
-- job's subject, repository and run id) as JSON; NULL for every other token.
ALTER TABLE tokens ADD COLUMN oidc TEXT;

-- Job-token ids already exchanged, per issuer, until the job token expires: one exchange per
-- job token, across every replica (the primary key makes the second insert fail).
CREATE TABLE oidc_jti (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);

-- Trust policies managed through the admin API and the CLI (beside those of the configuration
-- file): the policy as JSON, as the API shows it. Times are Unix milliseconds.
CREATE TABLE trust_policies (
    name       TEXT PRIMARY KEY NOT NULL,
    spec       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
