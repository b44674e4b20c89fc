-- name: get_oc_tokens
SELECT client_id, refresh_token, access_token, expires_at, updated_at
FROM oc_tokens
WHERE client_id = $1;

-- name: save_oc_tokens
INSERT INTO oc_tokens AS t (client_id, refresh_token, access_token, expires_at, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (client_id) DO UPDATE SET
    refresh_token = EXCLUDED.refresh_token,
    access_token = EXCLUDED.access_token,
    expires_at = EXCLUDED.expires_at,
    updated_at = EXCLUDED.updated_at;
