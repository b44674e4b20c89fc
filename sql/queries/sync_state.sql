-- name: get_cursor
SELECT position FROM sync_state WHERE shop_id = $1 AND stream = $2 AND kind = $3;

-- name: set_cursor
-- Explicit cursor moves (operator reset, backfill bookkeeping) may go backwards; the
-- monotonic rule applies to advances made together with written pages.
INSERT INTO sync_state AS st (shop_id, stream, kind, position, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (shop_id, stream, kind) DO UPDATE SET
    position = EXCLUDED.position,
    updated_at = EXCLUDED.updated_at;

-- name: advance_cursor
-- Same rule as the cursor CTE of write_orders / write_returns.
INSERT INTO sync_state AS st (shop_id, stream, kind, position, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (shop_id, stream, kind) DO UPDATE SET
    position = CASE WHEN st.kind = 'incremental'
                    THEN greatest(st.position, EXCLUDED.position)
                    ELSE EXCLUDED.position END,
    updated_at = EXCLUDED.updated_at
RETURNING position;

-- name: record_success
INSERT INTO sync_state AS st (shop_id, stream, kind, last_success_at, updated_at)
VALUES ($1, $2, $3, now(), now())
ON CONFLICT (shop_id, stream, kind) DO UPDATE SET
    last_success_at = EXCLUDED.last_success_at,
    updated_at = EXCLUDED.updated_at;

-- name: record_error
-- The error is kept after later successes; compare last_error_at with last_success_at to
-- tell a current failure from an old one.
INSERT INTO sync_state AS st (shop_id, stream, kind, last_error, last_error_at, updated_at)
VALUES ($1, $2, $3, $4, now(), now())
ON CONFLICT (shop_id, stream, kind) DO UPDATE SET
    last_error = EXCLUDED.last_error,
    last_error_at = EXCLUDED.last_error_at,
    updated_at = EXCLUDED.updated_at;

-- name: sync_status
SELECT shop_id, stream, kind, position, position AS cursor, last_success_at, last_error, last_error_at, updated_at,
       extract(epoch FROM now() - position)::float8 AS lag_s,
       (last_error_at IS NOT NULL
        AND (last_success_at IS NULL OR last_error_at > last_success_at)) AS failing
FROM sync_state
ORDER BY shop_id, stream, kind = 'incremental' DESC, kind;
