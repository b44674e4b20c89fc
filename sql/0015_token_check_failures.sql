-- temu-sync schema, version 15: token checks that Temu answered with a refusal (an expired,
-- revoked or unknown token, a refused app, a token that may not ask about itself).
--
-- Such a check stores nothing in token_checks, so the shop's mallId stays unknown; the
-- webhook receiver answers 503 for an unknown mallId only while some shop of the app has not
-- been tried yet, and this row says it has (for the token named by token_sha256), in every
-- daemon of a cluster, not only the one whose pass made the check.
CREATE TABLE token_check_failures (
    shop_id      text        PRIMARY KEY,
    token_sha256 text        NOT NULL,
    error        text        NOT NULL, -- the error as logged (secrets scrubbed)
    failed_at    timestamptz NOT NULL
);
