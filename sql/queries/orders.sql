-- name: write_orders
-- One page of bg.order.list.v2.get items in ONE statement (so one round trip and one implicit
-- transaction): orders, their lines, the changes rows and optionally the sync cursor.
-- $1 shop_id, $2 page items (jsonb array), $3 stream, $4 kind, $5 position (NULL $3: no cursor),
-- $6 orderSn values of lines to leave out (NULL: none; set only when isolating a bad line).
--
-- Rows whose payload is unchanged are filtered out before the INSERT, so they are never
-- locked or rewritten (no new row version, no WAL). ON CONFLICT ... WHERE repeats the check for
-- a row another session inserted or changed after this statement's snapshot. Duplicate keys in
-- one page collapse to the last occurrence (ON CONFLICT cannot touch a row twice).
WITH items AS (
    SELECT e.item, e.ord, nullif(e.item -> 'parentOrderMap' ->> 'parentOrderSn', '') AS sn
    FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS e (item, ord)
),
src AS (
    SELECT DISTINCT ON (sn) sn, item, ord
    FROM items
    WHERE sn IS NOT NULL
    ORDER BY sn, ord DESC
),
old_o AS (
    SELECT s.sn, s.item, s.ord, o.payload AS old_payload, o.parent_order_status AS old_status,
           o.payload IS DISTINCT FROM s.item AS changed
    FROM src AS s
    LEFT JOIN LATERAL (
        -- LATERAL ... LIMIT 1 pins the plan to one primary-key probe per incoming row. As a
        -- plain join, a plan cached while the table was small or unanalyzed (a new install)
        -- becomes a hash join over the whole table on every later page.
        SELECT x.payload, x.parent_order_status
        FROM orders AS x
        WHERE x.shop_id = $1::text AND x.parent_order_sn = s.sn
        LIMIT 1
    ) AS o ON true
),
up_o AS (
    INSERT INTO orders AS t (
        shop_id, parent_order_sn, parent_order_status, parent_order_time, update_time,
        payload, synced_at, created_at
    )
    SELECT $1::text, sn,
           j_int(item -> 'parentOrderMap' -> 'parentOrderStatus'),
           j_ts(item -> 'parentOrderMap' -> 'parentOrderTime'),
           j_ts(item -> 'parentOrderMap' -> 'updateTime'),
           item, now(), now()
    FROM old_o
    WHERE changed
    ORDER BY sn  -- a stable lock order keeps concurrent writers of one shop from deadlocking
    ON CONFLICT (shop_id, parent_order_sn) DO UPDATE SET
        parent_order_status = EXCLUDED.parent_order_status,
        parent_order_time = EXCLUDED.parent_order_time,
        update_time = EXCLUDED.update_time,
        payload = EXCLUDED.payload,
        synced_at = EXCLUDED.synced_at
    WHERE t.payload IS DISTINCT FROM EXCLUDED.payload
    RETURNING t.parent_order_sn AS sn, (t.xmax = 0) AS inserted,
              t.parent_order_status AS new_status, t.payload
),
ch_o AS (
    INSERT INTO changes (shop_id, entity, entity_key, op, changed_fields, old_status, new_status)
    SELECT $1::text, 'order', u.sn,
           CASE WHEN u.inserted THEN 'insert' ELSE 'update' END,
           CASE WHEN NOT u.inserted THEN
               jsonb_changed_keys(o.old_payload -> 'parentOrderMap', u.payload -> 'parentOrderMap')
               || array_remove(jsonb_changed_keys(o.old_payload, u.payload), 'parentOrderMap')
           END,
           CASE WHEN NOT u.inserted THEN o.old_status END,
           u.new_status
    FROM up_o AS u
    JOIN old_o AS o USING (sn)
    ORDER BY u.sn
),
-- Lines are part of their order's payload, so an unchanged order has unchanged lines: only
-- lines of new or changed orders are diffed (for no-op pages the bulk of the work).
all_lines AS (
    SELECT s.sn AS parent_sn, s.ord, s.changed, l.lord, l.line,
           nullif(l.line ->> 'orderSn', '') AS lsn
    FROM old_o AS s
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(s.item -> 'orderList') = 'array'
             THEN s.item -> 'orderList' ELSE '[]'::jsonb END
    ) WITH ORDINALITY AS l (line, lord)
),
lines AS (
    SELECT DISTINCT ON (lsn) lsn, parent_sn, line
    FROM all_lines
    WHERE lsn IS NOT NULL AND changed AND NOT (lsn = ANY (coalesce($6::text[], '{}')))
    ORDER BY lsn, ord DESC, lord DESC
),
old_l AS (
    SELECT l.lsn, l.parent_sn, l.line, ol.payload AS old_payload, ol.order_status AS old_status
    FROM lines AS l
    LEFT JOIN LATERAL (
        SELECT x.payload, x.order_status
        FROM order_lines AS x
        WHERE x.shop_id = $1::text AND x.order_sn = l.lsn
        LIMIT 1
    ) AS ol ON true
),
up_l AS (
    INSERT INTO order_lines AS t (
        shop_id, order_sn, parent_order_sn, order_status, goods_id, sku_id, quantity,
        payload, synced_at, created_at
    )
    SELECT $1::text, lsn, parent_sn,
           j_int(line -> 'orderStatus'),
           j_bigint(line -> 'goodsId'),
           j_bigint(line -> 'skuId'),
           j_int(line -> 'quantity'),
           line, now(), now()
    FROM old_l
    WHERE old_payload IS DISTINCT FROM line
    ORDER BY lsn
    ON CONFLICT (shop_id, order_sn) DO UPDATE SET
        parent_order_sn = EXCLUDED.parent_order_sn,
        order_status = EXCLUDED.order_status,
        goods_id = EXCLUDED.goods_id,
        sku_id = EXCLUDED.sku_id,
        quantity = EXCLUDED.quantity,
        payload = EXCLUDED.payload,
        synced_at = EXCLUDED.synced_at
    WHERE t.payload IS DISTINCT FROM EXCLUDED.payload
    RETURNING t.order_sn AS lsn, (t.xmax = 0) AS inserted,
              t.order_status AS new_status, t.payload
),
ch_l AS (
    INSERT INTO changes (shop_id, entity, entity_key, op, changed_fields, old_status, new_status)
    SELECT $1::text, 'order_line', u.lsn,
           CASE WHEN u.inserted THEN 'insert' ELSE 'update' END,
           CASE WHEN NOT u.inserted THEN jsonb_changed_keys(o.old_payload, u.payload) END,
           CASE WHEN NOT u.inserted THEN o.old_status END,
           u.new_status
    FROM up_l AS u
    JOIN old_l AS o USING (lsn)
    ORDER BY u.lsn
),
adv AS (
    INSERT INTO sync_state AS st (shop_id, stream, kind, position, updated_at)
    SELECT $1::text, $3::text, $4::text, $5::timestamptz, now()
    WHERE $3::text IS NOT NULL
    ON CONFLICT (shop_id, stream, kind) DO UPDATE SET
        position = CASE WHEN st.kind = 'incremental'
                        THEN greatest(st.position, EXCLUDED.position)
                        ELSE EXCLUDED.position END,
        updated_at = EXCLUDED.updated_at
    RETURNING 1
)
SELECT
    (SELECT count(*) FROM src) AS orders,
    (SELECT count(*) FROM items WHERE sn IS NULL) AS orders_skipped,
    (SELECT count(*) FILTER (WHERE inserted) FROM up_o) AS orders_inserted,
    (SELECT count(*) FILTER (WHERE NOT inserted) FROM up_o) AS orders_updated,
    (SELECT count(*) FROM lines)
        + (SELECT count(*) FROM all_lines WHERE lsn IS NOT NULL AND NOT changed) AS lines,
    (SELECT count(*) FROM all_lines WHERE lsn IS NULL) AS lines_skipped,
    (SELECT count(*) FILTER (WHERE inserted) FROM up_l) AS lines_inserted,
    (SELECT count(*) FILTER (WHERE NOT inserted) FROM up_l) AS lines_updated,
    (SELECT count(*) FROM adv) AS advanced;
