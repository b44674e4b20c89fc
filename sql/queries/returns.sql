-- name: write_returns
-- Elements of result.data of bg.aftersales.parentaftersales.list.get, in one statement; same
-- shape and guarantees as write_orders. Returns the keys inserted or changed, which are the
-- ones whose lines and logistics must be fetched again.
-- $1 shop_id, $2 items (jsonb array), $3 stream, $4 kind, $5 position (NULL $3: no cursor).
WITH items AS (
    SELECT e.item, e.ord, nullif(e.item ->> 'parentAfterSalesSn', '') AS sn
    FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS e (item, ord)
),
src AS (
    SELECT DISTINCT ON (sn) sn, item
    FROM items
    WHERE sn IS NOT NULL
    ORDER BY sn, ord DESC
),
old_r AS (
    SELECT s.sn, s.item, r.payload AS old_payload, r.status AS old_status
    FROM src AS s
    LEFT JOIN LATERAL (  -- one primary-key probe per row whatever the statistics: see orders.sql
        SELECT x.payload, x.status
        FROM returns AS x
        WHERE x.shop_id = $1::text AND x.parent_after_sales_sn = s.sn
        LIMIT 1
    ) AS r ON true
),
up_r AS (
    INSERT INTO returns AS t (
        shop_id, parent_after_sales_sn, parent_order_sn, status, status_group,
        after_sales_type, available_operations, return_delivery_type, create_at, update_at,
        payload, synced_at, created_at
    )
    SELECT $1::text, sn,
           nullif(item ->> 'parentOrderSn', ''),
           j_int(item -> 'parentAfterSalesStatus'),
           j_int(item -> 'afterSalesStatusGroup'),
           j_int(item -> 'afterSalesType'),
           j_int_array(item -> 'availableOperateList'),
           j_int(item -> 'returnDeliveryType'),
           j_ts(item -> 'createAt'),
           j_ts(item -> 'updateAt'),
           item, now(), now()
    FROM old_r
    WHERE old_payload IS DISTINCT FROM item
    ORDER BY sn
    ON CONFLICT (shop_id, parent_after_sales_sn) DO UPDATE SET
        parent_order_sn = EXCLUDED.parent_order_sn,
        status = EXCLUDED.status,
        status_group = EXCLUDED.status_group,
        after_sales_type = EXCLUDED.after_sales_type,
        available_operations = EXCLUDED.available_operations,
        return_delivery_type = EXCLUDED.return_delivery_type,
        create_at = EXCLUDED.create_at,
        update_at = EXCLUDED.update_at,
        payload = EXCLUDED.payload,
        synced_at = EXCLUDED.synced_at
    WHERE t.payload IS DISTINCT FROM EXCLUDED.payload
    RETURNING t.parent_after_sales_sn AS sn, (t.xmax = 0) AS inserted,
              t.status AS new_status, t.payload
),
ch_r AS (
    INSERT INTO changes (shop_id, entity, entity_key, op, changed_fields, old_status, new_status)
    SELECT $1::text, 'return', u.sn,
           CASE WHEN u.inserted THEN 'insert' ELSE 'update' END,
           CASE WHEN NOT u.inserted THEN jsonb_changed_keys(o.old_payload, u.payload) END,
           CASE WHEN NOT u.inserted THEN o.old_status END,
           u.new_status
    FROM up_r AS u
    JOIN old_r AS o USING (sn)
    ORDER BY u.sn
),
adv AS (
    SELECT advance_cursor($1::text, $3::text, $4::text, $5::timestamptz)
    WHERE $3::text IS NOT NULL
)
SELECT
    (SELECT count(*) FROM src) AS total,
    (SELECT count(*) FROM items WHERE sn IS NULL) AS skipped,
    (SELECT count(*) FILTER (WHERE inserted) FROM up_r) AS inserted,
    (SELECT count(*) FILTER (WHERE NOT inserted) FROM up_r) AS updated,
    (SELECT coalesce(array_agg(sn ORDER BY sn), '{}') FROM up_r) AS changed_sns,
    (SELECT count(*) FROM adv) AS advanced;

-- name: write_return_lines
-- Elements of result.data of bg.aftersales.aftersales.list.get. $1 shop_id, $2 items.
WITH items AS (
    SELECT e.item, e.ord, nullif(e.item ->> 'afterSalesSn', '') AS sn
    FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS e (item, ord)
),
src AS (
    SELECT DISTINCT ON (sn) sn, item
    FROM items
    WHERE sn IS NOT NULL
    ORDER BY sn, ord DESC
),
old_l AS (
    SELECT s.sn, s.item, l.payload AS old_payload, l.after_sales_status AS old_status
    FROM src AS s
    LEFT JOIN LATERAL (
        SELECT x.payload, x.after_sales_status
        FROM return_lines AS x
        WHERE x.shop_id = $1::text AND x.after_sales_sn = s.sn
        LIMIT 1
    ) AS l ON true
),
up_l AS (
    INSERT INTO return_lines AS t (
        shop_id, after_sales_sn, parent_after_sales_sn, after_sales_status, goods_id, sku_id,
        quantity, payload, synced_at, created_at
    )
    SELECT $1::text, sn,
           nullif(item ->> 'parentAfterSalesSn', ''),
           j_int(item -> 'afterSalesStatus'),
           j_bigint(item -> 'goodsId'),
           j_bigint(item -> 'skuId'),
           j_int(item -> 'applyAfterSalesGoodsNumber'),
           item, now(), now()
    FROM old_l
    WHERE old_payload IS DISTINCT FROM item
    ORDER BY sn
    ON CONFLICT (shop_id, after_sales_sn) DO UPDATE SET
        parent_after_sales_sn = EXCLUDED.parent_after_sales_sn,
        after_sales_status = EXCLUDED.after_sales_status,
        goods_id = EXCLUDED.goods_id,
        sku_id = EXCLUDED.sku_id,
        quantity = EXCLUDED.quantity,
        payload = EXCLUDED.payload,
        synced_at = EXCLUDED.synced_at
    WHERE t.payload IS DISTINCT FROM EXCLUDED.payload
    RETURNING t.after_sales_sn AS sn, (t.xmax = 0) AS inserted,
              t.after_sales_status AS new_status, t.payload
),
ch_l AS (
    INSERT INTO changes (shop_id, entity, entity_key, op, changed_fields, old_status, new_status)
    SELECT $1::text, 'return_line', u.sn,
           CASE WHEN u.inserted THEN 'insert' ELSE 'update' END,
           CASE WHEN NOT u.inserted THEN jsonb_changed_keys(o.old_payload, u.payload) END,
           CASE WHEN NOT u.inserted THEN o.old_status END,
           u.new_status
    FROM up_l AS u
    JOIN old_l AS o USING (sn)
    ORDER BY u.sn
)
SELECT
    (SELECT count(*) FROM src) AS total,
    (SELECT count(*) FROM items WHERE sn IS NULL) AS skipped,
    (SELECT count(*) FILTER (WHERE inserted) FROM up_l) AS inserted,
    (SELECT count(*) FILTER (WHERE NOT inserted) FROM up_l) AS updated;

-- name: write_return_logistics
-- bg.aftersales.parentreturnorder.get for one return. $1 shop_id, $2 parent_after_sales_sn,
-- $3 logisticsInfoList (jsonb array). The typed columns come from the first entry that has a
-- tracking number (else the first entry): the list is usually one package, and Temu does not
-- document an order for several. Returns one row when the stored payload changed. A read
-- logistics list is no longer pending (logistics_pending).
WITH done AS (
    DELETE FROM logistics_pending WHERE shop_id = $1 AND parent_after_sales_sn = $2
),
pick AS (
    SELECT (
        SELECT e
        FROM jsonb_array_elements(
            CASE WHEN jsonb_typeof($3::jsonb) = 'array' THEN $3::jsonb ELSE '[]'::jsonb END
        ) WITH ORDINALITY AS x (e, ord)
        ORDER BY coalesce(e ->> 'trackingNumber', '') = '', ord
        LIMIT 1
    ) AS e
)
INSERT INTO return_logistics AS t (
    shop_id, parent_after_sales_sn, carrier_name, tracking_number, return_warehouse_type,
    return_warehouse_region1_name, payload, fetched_at
)
SELECT $1::text, $2::text,
       nullif(e ->> 'carrierName', ''),
       nullif(e ->> 'trackingNumber', ''),
       j_int(e -> 'returnWarehouseType'),
       nullif(e ->> 'returnWarehouseRegion1Name', ''),
       $3::jsonb, now()
FROM pick
ON CONFLICT (shop_id, parent_after_sales_sn) DO UPDATE SET
    carrier_name = EXCLUDED.carrier_name,
    tracking_number = EXCLUDED.tracking_number,
    return_warehouse_type = EXCLUDED.return_warehouse_type,
    return_warehouse_region1_name = EXCLUDED.return_warehouse_region1_name,
    payload = EXCLUDED.payload,
    fetched_at = EXCLUDED.fetched_at
WHERE t.payload IS DISTINCT FROM EXCLUDED.payload
RETURNING (t.xmax = 0) AS inserted;

-- name: want_logistics
-- Returns whose logistics could not be read now ($2 sns, $3 reason): read again at the next
-- pass. A row already waiting keeps its schedule.
INSERT INTO logistics_pending AS p (shop_id, parent_after_sales_sn, last_error)
SELECT $1, sn, $3 FROM unnest($2::text[]) AS sn
ON CONFLICT (shop_id, parent_after_sales_sn) DO UPDATE SET last_error = EXCLUDED.last_error;

-- name: logistics_due
-- $1 shop_id, $2 at most this many, the longest waiting first; $3 only rows older than this
-- (the pass's start: what this pass could not read is read again at the next one).
SELECT parent_after_sales_sn, attempts
FROM logistics_pending
WHERE shop_id = $1 AND next_attempt_at <= now() AND first_seen_at < $3
ORDER BY next_attempt_at, parent_after_sales_sn
LIMIT $2;

-- name: logistics_later
-- Read again and still nothing: $3 error, $4 seconds until the next try.
UPDATE logistics_pending SET
    attempts = attempts + 1,
    last_error = $3,
    next_attempt_at = now() + make_interval(secs => $4::float8)
WHERE shop_id = $1 AND parent_after_sales_sn = $2;

-- name: logistics_reread_change
-- Logistics read again changed what is stored: one 'return' change (changed_fields
-- {logisticsInfoList}) so the reconciler's OC planner, driven by the change log, sees it.
INSERT INTO changes (shop_id, entity, entity_key, op, changed_fields, old_status, new_status)
SELECT $1::text, 'return', $2::text, 'update', ARRAY['logisticsInfoList'], r.status, r.status
FROM returns AS r
WHERE r.shop_id = $1::text AND r.parent_after_sales_sn = $2::text;

-- name: logistics_pending_count
SELECT count(*) FROM logistics_pending WHERE $1::text IS NULL OR shop_id = $1::text;

-- name: get_return_logistics
SELECT shop_id, parent_after_sales_sn, carrier_name, tracking_number, return_warehouse_type,
       return_warehouse_region1_name, payload, fetched_at
FROM return_logistics
WHERE shop_id = $1 AND parent_after_sales_sn = $2;

-- name: returns_awaiting_label
-- Returns for which Temu waits for the merchant's label (status 8 and operation 10 offered).
SELECT r.shop_id, r.parent_after_sales_sn, r.parent_order_sn, r.return_delivery_type,
       r.update_at, r.payload
FROM returns AS r
WHERE r.status = 8 AND 10 = ANY (r.available_operations)
  AND ($1::text IS NULL OR r.shop_id = $1::text)
ORDER BY r.shop_id, r.update_at NULLS LAST, r.parent_after_sales_sn;
