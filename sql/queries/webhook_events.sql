-- name: insert_webhook_event
-- One received event, one row per shop it is for (several only when the event names no
-- mallId and its app has several shops: each re-reads its own recent window); a row with the
-- same event_key (a re-send or a duplicate) wins. Returns the new rows' ids (none: already
-- stored).
-- $1 event_key per shop, $2 app_key, $3 shop_id per shop, $4 mall_id, $5 code,
-- $6 parent_order_sn, $7 order_sn, $8 parent_after_sales_sn, $9 update_time, $10 sent_at,
-- $11 payload.
INSERT INTO webhook_events (
    event_key, app_key, shop_id, mall_id, code, parent_order_sn, order_sn,
    parent_after_sales_sn, update_time, sent_at, payload
)
SELECT u.event_key, $2, u.shop_id, $4, $5, $6, $7, $8, $9, $10, $11::jsonb
FROM unnest($1::text[], $3::text[]) AS u (event_key, shop_id)
ON CONFLICT (event_key) DO NOTHING
RETURNING id

-- name: claim_webhook_events
-- Up to $1 due, unclaimed events, claimed for $2 seconds (a consumer that dies releases
-- them when the claim expires). SKIP LOCKED: concurrent consumers take different rows.
-- $3: only these shops (NULL: any).
UPDATE webhook_events AS e
SET attempts = e.attempts + 1,
    claimed_until = now() + make_interval(secs => $2::float8)
FROM (
    SELECT id
    FROM webhook_events
    WHERE processed_at IS NULL
      AND next_attempt_at <= now()
      AND (claimed_until IS NULL OR claimed_until < now())
      AND ($3::text[] IS NULL OR shop_id = ANY ($3::text[]))
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) AS due
WHERE e.id = due.id
RETURNING e.id, e.app_key, e.shop_id, e.mall_id, e.code, e.parent_order_sn, e.order_sn,
          e.parent_after_sales_sn, e.update_time, e.payload, e.received_at, e.attempts

-- name: mark_webhook_events_processed
-- $1 ids, $2 outcome ('read' or 'not_found').
UPDATE webhook_events
SET processed_at = now(), outcome = $2, claimed_until = NULL
WHERE id = ANY ($1::bigint[]) AND processed_at IS NULL
RETURNING id, received_at, processed_at

-- name: fail_webhook_events
-- The re-read failed: retry after $3 seconds, or give up after $4 attempts (polling still
-- brings the change in). $1 ids, $2 error. Returns each row's new state.
UPDATE webhook_events
SET last_error = $2,
    claimed_until = NULL,
    next_attempt_at = now() + make_interval(secs => $3::float8),
    processed_at = CASE WHEN attempts >= $4 THEN now() END,
    outcome = CASE WHEN attempts >= $4 THEN 'gave_up' END
WHERE id = ANY ($1::bigint[]) AND processed_at IS NULL
RETURNING id, processed_at IS NOT NULL AS gave_up

-- name: prune_webhook_events
-- Processed events older than $1 days; unprocessed ones are kept whatever their age.
DELETE FROM webhook_events
WHERE processed_at < now() - make_interval(days => $1::int)

-- name: webhook_events_summary
-- Counts for status and /metrics: pending (not yet processed) and processed by outcome.
SELECT coalesce(outcome, 'pending') AS outcome, count(*)::bigint AS n
FROM webhook_events
GROUP BY 1

-- name: release_webhook_events
-- Claimed, then this process lost the app's lease before the re-read could be sent: back to
-- the queue at once for the lease's new owner, the attempt not counted. $1 ids.
UPDATE webhook_events
SET claimed_until = NULL,
    attempts = greatest(attempts - 1, 0)
WHERE id = ANY ($1::bigint[]) AND processed_at IS NULL
