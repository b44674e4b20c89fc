-- Access-token checks (bg.open.accesstoken.info.get), one row per shop: the last answer.

-- name: get_token_check
SELECT shop_id, token_sha256, expires_at, api_scopes, mall_id, payload, checked_at
FROM token_checks
WHERE shop_id = $1;

-- name: list_token_checks
-- For status and /metrics: every shop's last answer.
SELECT shop_id, token_sha256, expires_at, api_scopes, mall_id, payload, checked_at
FROM token_checks
ORDER BY shop_id;

-- name: save_token_check
INSERT INTO token_checks AS t
    (shop_id, token_sha256, expires_at, api_scopes, mall_id, payload, checked_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (shop_id) DO UPDATE SET
    token_sha256 = EXCLUDED.token_sha256,
    expires_at = EXCLUDED.expires_at,
    api_scopes = EXCLUDED.api_scopes,
    mall_id = EXCLUDED.mall_id,
    payload = EXCLUDED.payload,
    checked_at = EXCLUDED.checked_at;

-- name: save_token_check_failure
-- A check Temu refused (sql/0015): the webhook receiver's mallId map counts the shop as tried.
INSERT INTO token_check_failures AS f (shop_id, token_sha256, error, failed_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (shop_id) DO UPDATE SET
    token_sha256 = EXCLUDED.token_sha256,
    error = EXCLUDED.error,
    failed_at = EXCLUDED.failed_at;

-- name: list_token_check_failures
SELECT shop_id, token_sha256, error, failed_at
FROM token_check_failures
ORDER BY shop_id;
