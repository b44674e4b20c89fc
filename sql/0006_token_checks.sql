-- temu-sync schema, version 6: what Temu last said about each shop's access token
-- (bg.open.accesstoken.info.get), so the check runs at most once a day per token, and
-- `status` can show expiry and missing scopes without calling Temu.
--
-- token_sha256 names the token the answer was about (SHA-256 of it, never the token): a token
-- replaced in config.toml does not inherit the old one's answer.
CREATE TABLE token_checks (
    shop_id      text        PRIMARY KEY,
    token_sha256 text        NOT NULL,
    expires_at   timestamptz,          -- result.expiredTime; NULL when Temu did not say
    api_scopes   text[]      NOT NULL, -- result.apiScopeList
    mall_id      text,
    payload      jsonb       NOT NULL, -- the result as sent
    checked_at   timestamptz NOT NULL
);
