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
-- The rule every page statement applies (function advance_cursor, migration 13).
SELECT advance_cursor($1, $2, $3, $4) AS position;

-- name: record_success
-- A success ends a run of failures: no more backing off.
INSERT INTO sync_state AS st (shop_id, stream, kind, last_success_at, updated_at)
VALUES ($1, $2, $3, now(), now())
ON CONFLICT (shop_id, stream, kind) DO UPDATE SET
    last_success_at = EXCLUDED.last_success_at,
    failures_in_row = 0,
    retry_after = NULL,
    updated_at = EXCLUDED.updated_at;

-- name: record_error
-- The error is kept after later successes; compare last_error_at with last_success_at to
-- tell a current failure from an old one. failures_in_row counts failed passes in a row for
-- the same error class ($5); another class starts the count again. Returns the new count.
INSERT INTO sync_state AS st
    (shop_id, stream, kind, last_error, last_error_at, updated_at, last_error_class,
     failures_in_row)
VALUES ($1, $2, $3, $4, now(), now(), $5, 1)
ON CONFLICT (shop_id, stream, kind) DO UPDATE SET
    last_error = EXCLUDED.last_error,
    last_error_at = EXCLUDED.last_error_at,
    failures_in_row = CASE
        WHEN st.failures_in_row > 0
             AND st.last_error_class IS NOT DISTINCT FROM EXCLUDED.last_error_class
        THEN st.failures_in_row + 1 ELSE 1 END,
    last_error_class = EXCLUDED.last_error_class,
    updated_at = EXCLUDED.updated_at
RETURNING failures_in_row;

-- name: set_retry_after
-- $4 seconds from now (engine/retry.py's failing_stream_delay); 0 = no backing off.
UPDATE sync_state SET
    retry_after = CASE WHEN $4::float8 > 0 THEN now() + make_interval(secs => $4::float8) END
WHERE shop_id = $1 AND stream = $2 AND kind = $3;

-- name: note_inconsistent
INSERT INTO sync_state AS st (shop_id, stream, kind, inconsistent_windows, updated_at)
VALUES ($1, $2, $3, 1, now())
ON CONFLICT (shop_id, stream, kind) DO UPDATE SET
    inconsistent_windows = st.inconsistent_windows + 1,
    updated_at = EXCLUDED.updated_at;

-- name: backing_off
-- The stream is skipped until retry_after (it failed pass after pass).
SELECT retry_after, failures_in_row, last_error_class, last_error
FROM sync_state
WHERE shop_id = $1 AND stream = $2 AND kind = $3 AND retry_after > now();

-- name: sync_status
-- $1 configured shop ids, $2 enabled streams. Every configured pair is listed, with an empty
-- incremental row when it never synced (a new shop is visible before its first pass); rows of
-- shops or streams no longer configured stay listed with configured = false.
WITH configured AS (
    SELECT s AS shop_id, t AS stream
    FROM unnest($1::text[]) AS s CROSS JOIN unnest($2::text[]) AS t
),
rows AS (
    SELECT st.shop_id, st.stream, st.kind, st.position, st.last_success_at, st.last_error,
           st.last_error_at, st.updated_at, st.last_error_class, st.failures_in_row,
           st.retry_after, st.inconsistent_windows
    FROM sync_state AS st
    UNION ALL
    SELECT c.shop_id, c.stream, 'incremental', NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, 0
    FROM configured AS c
    WHERE NOT EXISTS (
        SELECT 1 FROM sync_state AS x
        WHERE x.shop_id = c.shop_id AND x.stream = c.stream AND x.kind = 'incremental'
    )
)
SELECT r.shop_id, r.stream, r.kind, r.position, r.position AS cursor, r.last_success_at,
       r.last_error, r.last_error_at, r.updated_at, r.last_error_class, r.failures_in_row,
       -- backing off: a stream that failed passes in a row waits until retry_after
       CASE WHEN r.retry_after > now() THEN r.retry_after END AS retry_after,
       r.inconsistent_windows,
       extract(epoch FROM now() - r.position)::float8 AS lag_s,
       (r.last_error_at IS NOT NULL
        AND (r.last_success_at IS NULL OR r.last_error_at > r.last_success_at)) AS failing,
       (cardinality($1::text[]) = 0
        OR EXISTS (SELECT 1 FROM configured AS c
                   WHERE c.shop_id = r.shop_id AND c.stream = r.stream)) AS configured
FROM rows AS r
ORDER BY r.shop_id, r.stream, r.kind = 'incremental' DESC, r.kind;
