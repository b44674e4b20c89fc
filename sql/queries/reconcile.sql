-- name: reconcile_cursor_get
SELECT position FROM reconciler_cursor WHERE name = $1;

-- name: reconcile_cursor_set
-- Never moves backwards: two planners racing (two machines) both end at the larger position.
INSERT INTO reconciler_cursor AS c (name, position, updated_at)
VALUES ($1, $2, now())
ON CONFLICT (name) DO UPDATE SET
    position = greatest(c.position, EXCLUDED.position),
    updated_at = EXCLUDED.updated_at;

-- name: reconcile_plan_label_tasks
-- One upload task per return that Temu says waits for a label (status 8, operation 10) and
-- that has none yet; the label will come from Orange Connex unless a merchant label replaces
-- it first. Served by the partial index on status 8, so the cost follows the pending returns.
-- A return whose task is done but that Temu asks again for a label (label rejected or
-- expired) gets that task back, once per request: a request is known by the return's
-- updateAt, which must be later than the one the task answered (payload request_at, else the
-- time the task finished). Our own upload may move updateAt while the list still offers the
-- upload, so the requeued task keeps previous_result and reads the return's logistics first:
-- the earlier upload's tracking number there means no new upload (upload_label.py).
-- $1 kind, $2 dedupe key prefix.
WITH waiting AS (
    SELECT r.shop_id, r.parent_after_sales_sn AS sn, r.update_at,
           $2::text || r.shop_id || ':' || r.parent_after_sales_sn AS key
    FROM returns AS r
    WHERE r.status = 8 AND 10 = ANY (r.available_operations)
),
ins AS (
    INSERT INTO outbox (kind, dedupe_key, shop_id, payload)
    SELECT $1::text, w.key, w.shop_id,
           jsonb_build_object('shop_id', w.shop_id, 'sn', w.sn, 'source', 'oc',
                              'request_at', extract(epoch FROM w.update_at)::bigint)
    FROM waiting AS w
    WHERE NOT EXISTS (SELECT 1 FROM outbox AS o WHERE o.dedupe_key = w.key)
    ORDER BY w.shop_id, w.sn
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING 1
),
reask AS (
    UPDATE outbox AS o SET
        state = 'pending',
        attempts = 0,
        next_attempt_at = now(),
        lease_expires_at = NULL,
        updated_at = now(),
        payload = (o.payload - 'label' - 'attempted' - 'attempt' - 'polls')
            || jsonb_build_object('source', 'oc',
                                  'request_at', extract(epoch FROM w.update_at)::bigint,
                                  'previous_result', o.result)
    FROM waiting AS w
    WHERE o.dedupe_key = w.key AND o.state = 'done'
      AND w.update_at > coalesce(
          to_timestamp(j_bigint(o.payload -> 'request_at')), o.updated_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM reask) AS queued,
       CASE WHEN (SELECT count(*) FROM ins) + (SELECT count(*) FROM reask) > 0
            THEN pg_notify(outbox_channel(), $1::text) END AS notified;

-- name: reconcile_plan_oc_pushes
-- Orange Connex pushes for the returns that changed since the cursor: CANCEL for a return now
-- cancelled (6) or denied (7), UPDATE_TRACKING for each distinct non-empty trackingNumber in
-- its reverse logistics (the whole logisticsInfoList, not only the typed columns' first entry:
-- a return may ship in several packages), with the first carrierName given for that number.
-- after_sales_type rides along: a refund-only return (1) sends no parcel back, so OC is asked
-- once and never waited on for an RMA. Each task gets its messageId here, once, so every retry of that push reuses it. Changes
-- committed late with an id below the cursor (ids are taken at insert, not at commit) are
-- caught by re-reading the last $3 seconds; re-planning is a no-op thanks to the dedupe keys.
-- $1 cursor, $2 max changes read, $3 overlap seconds.
WITH fresh AS (
    SELECT id, shop_id, entity_key
    FROM changes
    WHERE id > $1::bigint AND entity = 'return'
    ORDER BY id
    LIMIT $2
),
late AS (
    SELECT id, shop_id, entity_key
    FROM changes
    WHERE changed_at >= now() - make_interval(secs => $3::float8)
      AND id <= $1::bigint AND entity = 'return'
),
touched AS (
    SELECT DISTINCT shop_id, entity_key AS sn FROM fresh
    UNION
    SELECT DISTINCT shop_id, entity_key FROM late
),
state AS (
    SELECT t.shop_id, t.sn, r.status, r.after_sales_type, l.payload AS logistics
    FROM touched AS t
    JOIN returns AS r ON r.shop_id = t.shop_id AND r.parent_after_sales_sn = t.sn
    LEFT JOIN return_logistics AS l
        ON l.shop_id = t.shop_id AND l.parent_after_sales_sn = t.sn
),
packages AS (
    SELECT s.shop_id, s.sn, btrim(x.e ->> 'trackingNumber') AS tracking_number,
           nullif(btrim(x.e ->> 'carrierName'), '') AS carrier_name, x.ord
    FROM state AS s
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(s.logistics) = 'array' THEN s.logistics ELSE '[]'::jsonb END
    ) WITH ORDINALITY AS x (e, ord)
    WHERE coalesce(btrim(x.e ->> 'trackingNumber'), '') <> ''
),
distinct_tracking AS (
    -- One parcel per number read upper-case without whitespace (tasks.tracking_key): "1z 99"
    -- and "1Z99" are one push, sent as Temu first shows it.
    SELECT shop_id, sn, upper(regexp_replace(tracking_number, '\s', '', 'g')) AS tracking_key,
           (array_agg(tracking_number ORDER BY ord))[1] AS tracking_number,
           (array_agg(carrier_name ORDER BY ord) FILTER (WHERE carrier_name IS NOT NULL))[1]
               AS carrier_name,
           min(ord) AS ord
    FROM packages
    GROUP BY shop_id, sn, upper(regexp_replace(tracking_number, '\s', '', 'g'))
),
cancels AS (
    INSERT INTO outbox (kind, dedupe_key, shop_id, payload)
    SELECT 'oc_cancel', 'oc_cancel:' || shop_id || ':' || sn, shop_id,
           jsonb_build_object('shop_id', shop_id, 'sn', sn, 'temu_status', status,
                              'after_sales_type', after_sales_type,
                              'message_id', replace(gen_random_uuid()::text, '-', ''))
    FROM state
    WHERE status IN (6, 7)
    ORDER BY shop_id, sn
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING 1
),
trackings AS (
    INSERT INTO outbox (kind, dedupe_key, shop_id, payload)
    SELECT 'oc_tracking', 'oc_tracking:' || shop_id || ':' || sn || ':' || tracking_key,
           shop_id,
           jsonb_build_object('shop_id', shop_id, 'sn', sn, 'tracking_number', tracking_number,
                              'carrier_name', carrier_name,
                              'message_id', replace(gen_random_uuid()::text, '-', ''))
    FROM distinct_tracking
    ORDER BY shop_id, sn, ord
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING 1
),
counts AS (
    SELECT (SELECT max(id) FROM fresh) AS last_id,
           (SELECT count(*) FROM fresh) AS read,
           (SELECT count(*) FROM cancels) AS cancels,
           (SELECT count(*) FROM trackings) AS trackings
)
SELECT last_id, read, cancels, trackings,
       CASE WHEN cancels + trackings > 0 THEN pg_notify(outbox_channel(), 'oc') END AS notified
FROM counts;

-- name: reconcile_enqueue_tracking
-- After our own upload: the tracking Temu now shows may be news to the return's OC RMA.
-- The key's number is read as the planner reads it (upper-case, no whitespace).
-- $1 shop_id, $2 sn, $3 tracking number, $4 carrier name, $5 messageId.
WITH ins AS (
    INSERT INTO outbox (kind, dedupe_key, shop_id, payload)
    VALUES ('oc_tracking', 'oc_tracking:' || $1::text || ':' || $2::text || ':'
                           || upper(regexp_replace($3::text, '\s', '', 'g')), $1,
            jsonb_build_object('shop_id', $1::text, 'sn', $2::text, 'tracking_number', $3::text,
                               'carrier_name', $4::text, 'message_id', $5::text))
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING 1
)
SELECT count(*) AS queued,
       CASE WHEN count(*) > 0 THEN pg_notify(outbox_channel(), 'oc_tracking') END AS notified
FROM ins;

-- name: reconcile_return
-- What the reconciler needs about one return; region from its order (the carrier list is per
-- region). $1 parent_after_sales_sn, $2 shop_id (NULL: any shop).
SELECT r.shop_id, r.parent_after_sales_sn, r.parent_order_sn, r.status, r.available_operations,
       r.return_delivery_type, extract(epoch FROM r.create_at)::bigint AS create_at,
       extract(epoch FROM r.update_at)::bigint AS update_at,
       j_int(o.payload -> 'parentOrderMap' -> 'regionId') AS region_id
FROM returns AS r
LEFT JOIN orders AS o ON o.shop_id = r.shop_id AND o.parent_order_sn = r.parent_order_sn
WHERE r.parent_after_sales_sn = $1 AND ($2::text IS NULL OR r.shop_id = $2::text)
ORDER BY r.shop_id;

-- name: reconcile_task_for_update
-- $1 dedupe_key. Locks the row so a label submission and a claim cannot interleave.
SELECT id, kind, state, attempts, payload, result,
       extract(epoch FROM updated_at)::bigint AS updated_at
FROM outbox WHERE dedupe_key = $1 FOR UPDATE;

-- name: reconcile_insert_task
-- $1 kind, $2 dedupe_key, $3 payload, $4 shop_id.
WITH ins AS (
    INSERT INTO outbox (kind, dedupe_key, payload, shop_id)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id
)
SELECT id, pg_notify(outbox_channel(), $1::text) FROM ins;

-- name: reconcile_requeue
-- A pending, dead or done task gets a new payload part and runs again soon; a dead or done one
-- starts its attempts over (its last error stays visible until the next run). Done is requeued
-- only when Temu asks for a label again (the caller decides). $1 id, $2 payload patch.
WITH up AS (
    UPDATE outbox SET
        payload = payload || $2::jsonb,
        attempts = CASE WHEN state IN ('dead', 'done') THEN 0 ELSE attempts END,
        state = 'pending',
        next_attempt_at = now(),
        updated_at = now()
    WHERE id = $1 AND state IN ('pending', 'dead', 'done')
    RETURNING id, kind
)
SELECT id, pg_notify(outbox_channel(), kind) FROM up;

-- name: reconcile_patch_running
-- Durable progress of a running task (e.g. "upload attempted" BEFORE the upload is sent).
-- Only the lease holder, while its lease is valid, and the lease is stretched to cover the
-- call that follows: a worker that lost its lease must not go on to send anything.
-- $1 id, $2 payload patch, $3 owner, $4 seconds the lease must still cover.
UPDATE outbox SET
    payload = payload || $2::jsonb,
    lease_expires_at = greatest(lease_expires_at, now() + make_interval(secs => $4::float8)),
    updated_at = now()
WHERE id = $1 AND state = 'running' AND owner = $3 AND lease_expires_at > now()
RETURNING id;

-- name: reconcile_defer
-- Not a failure (an OC label not issued yet, or a task a pass already ran): back to pending
-- after $3 seconds without using up one of its attempts. $1 id, $2 note, $3 delay seconds,
-- $4 payload patch, $5 owner.
UPDATE outbox SET
    state = 'pending',
    attempts = greatest(attempts - 1, 0),
    next_attempt_at = now() + make_interval(secs => $3::float8),
    last_error = $2,
    payload = payload || $4::jsonb,
    lease_expires_at = NULL,
    updated_at = now()
WHERE id = $1 AND state = 'running' AND owner = $5
RETURNING id;

-- name: reconcile_blocked
-- Pending tasks waiting on a configuration problem (the executor's note starts with $1), for
-- `status`: how many, and the most recent note. Served by the partial index on pending.
SELECT count(*) AS n,
       (array_agg(last_error ORDER BY updated_at DESC, id DESC))[1] AS latest_error,
       (array_agg(dedupe_key ORDER BY updated_at DESC, id DESC))[1] AS latest_key
FROM outbox
WHERE state = 'pending' AND starts_with(last_error, $1::text);
