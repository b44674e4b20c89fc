-- name: orders_changed
-- The read half of an orders page: which of the page's orders are new or differ from the
-- stored row, by content hash alone (one primary-key probe per order, no payload sent), and
-- what the engine needs to diff and update the changed ones in place.
-- $1 shop_id; $2 the page as one JSON document (orders_write.py): per order
-- [parentOrderSn, content hash (hex), [its lines' orderSn]]; $3 stream, $4 kind, $5 position
-- (NULL $3: no cursor). One document rather than parallel arrays: the driver checks every
-- array element in Python, which cost more than the statement.
--
-- When nothing differs the page is done here (no row returned): the cursor moves in this
-- statement (its own transaction) and no row is locked or written. When something differs the
-- cursor is left alone: the write moves it in the transaction that stores the changes.
--
-- "orders": per changed order [parentOrderSn, stored payload (null: new), row version (xmin),
-- ctid, status]. "lines": per stored line of those orders [its order's parentOrderSn,
-- orderSn, payload (null when "same"), row version, ctid, status, same], where "same" says
-- the order row's own transaction wrote it from that order: then it is the copy in the
-- order's stored payload, which the engine diffs against.
WITH page AS (
    SELECT e.v ->> 0 AS sn, decode(e.v ->> 1, 'hex') AS h, e.v -> 2 AS lines
    FROM jsonb_array_elements($2::jsonb) AS e (v)
),
changed AS (
    SELECT p.sn, p.lines, o.payload, o.xmin_, o.tid, o.status
    FROM page AS p
    LEFT JOIN LATERAL (
        -- LATERAL ... LIMIT 1 pins the plan to one primary-key probe per key (see write_orders).
        SELECT x.content_hash, x.payload, x.xmin AS xmin_, x.ctid AS tid,
               x.parent_order_status AS status
        FROM orders AS x
        WHERE x.shop_id = $1::text AND x.parent_order_sn = p.sn
        LIMIT 1
    ) AS o ON true
    WHERE o.content_hash IS DISTINCT FROM p.h
),
adv AS (
    -- A quiet page's cursor is this statement's only write, and losing it in a crash costs a
    -- re-read of the page, never data: its commit does not wait for the WAL flush
    -- (synchronous_commit off for this transaction alone; writes with rows keep waiting).
    SELECT advance_cursor($1::text, $3::text, $4::text, $5::timestamptz)
    WHERE $3::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM changed)
          AND set_config('synchronous_commit', 'off', true) = 'off'
)
-- One row, two JSON arrays (NULL: none), decoded by the engine in one go rather than row by
-- row (which cost more than the statement).
SELECT
    (SELECT json_agg(json_build_array(c.sn, c.payload, c.xmin_::text, c.tid::text, c.status))
     FROM changed AS c) AS orders,
    -- Each line by its own key (it may be stored under another order), no join between sets:
    -- the plan stays nested probes whatever row counts a cached plan assumed.
    (SELECT json_agg(json_build_array(c.sn, k.lsn, CASE WHEN l.same THEN NULL ELSE l.payload END,
                                      l.xmin_::text, l.tid::text, l.order_status, l.same))
     FROM changed AS c
     CROSS JOIN LATERAL jsonb_array_elements_text(c.lines) AS k (lsn)
     JOIN LATERAL (
         SELECT x.payload, x.xmin AS xmin_, x.ctid AS tid, x.order_status,
                coalesce(x.xmin = c.xmin_ AND x.parent_order_sn = c.sn, false) AS same
         FROM order_lines AS x
         WHERE x.shop_id = $1::text AND x.order_sn = k.lsn
         LIMIT 1
     ) AS l ON true) AS lines,
    -- Read here so it runs: a CTE that is a plain SELECT runs only when something reads it.
    (SELECT count(*) FROM adv) AS advanced;

-- name: update_orders
-- The write half when the engine diffed every changed order and line itself (orders_write.py):
-- stored rows are updated in place by ctid, as the version read (xmin), new ones inserted,
-- their changes rows and the cursor written, in ONE statement (one transaction). No row is
-- compared or looked up by key again. rows_as_read() (migration 13) ends the statement,
-- writing nothing, when a row moved since it was read or a key appeared: the engine then
-- sends the page through write_orders, which compares everything itself.
-- $1 shop_id; $2 one JSON document (see orders_changed for why):
--   "o": per order [parentOrderSn, content hash (hex), ctid (null: new), row version,
--        old status, changed_fields from, to (in "f", from 1), payload];
--   "l": per line [orderSn, its order (index into "o", from 0), its index in that order's
--        orderList, ctid (null: new), row version, old status, changed_fields from, to];
--   "f": every changed field name, flat; "n": expected counts (orders updated, orders
--   inserted, lines updated, lines inserted);
-- $3 stream, $4 kind, $5 position (NULL $3: no cursor).
WITH o_in AS (
    -- Typed columns' values taken out once (see insert_orders).
    SELECT $1::text AS shop, e.v ->> 0 AS sn, decode(e.v ->> 1, 'hex') AS h,
           (e.v ->> 2)::tid AS tid, (e.v ->> 3)::xid AS seen, (e.v ->> 4)::int AS old_status,
           (e.v ->> 5)::int AS cf_lo, (e.v ->> 6)::int AS cf_hi, e.v -> 7 AS item,
           e.v #> '{7,parentOrderMap,parentOrderStatus}' AS status_v,
           e.v #> '{7,parentOrderMap,parentOrderTime}' AS time_v,
           e.v #> '{7,parentOrderMap,updateTime}' AS update_v
    FROM jsonb_array_elements($2::jsonb -> 'o') AS e (v)
),
fields AS (
    SELECT ARRAY(SELECT jsonb_array_elements_text($2::jsonb -> 'f')) AS f
),
up_o AS (
    UPDATE orders AS t SET
        parent_order_status = j_int(s.status_v),
        parent_order_time = j_ts(s.time_v),
        update_time = j_ts(s.update_v),
        payload = s.item,
        content_hash = s.h,
        synced_at = now()
    FROM o_in AS s
    -- The table is reached by the ctids read (a TID scan), whatever plan is cached: a join on
    -- ctid alone can be planned as a hash join over a seq scan, and "shop_id = $1" as a
    -- restriction offers a scan of the whole shop (chosen by generic plans), so the shop is
    -- compared as a join clause. The key and xmin make sure it is still the row read.
    WHERE t.ctid = ANY (ARRAY(SELECT tid FROM o_in WHERE tid IS NOT NULL))
          AND t.ctid = s.tid AND t.shop_id = s.shop AND t.parent_order_sn = s.sn
          AND t.xmin = s.seen
    RETURNING s.sn, s.old_status, t.parent_order_status AS new_status, s.cf_lo, s.cf_hi
),
ins_o AS (
    INSERT INTO orders (
        shop_id, parent_order_sn, parent_order_status, parent_order_time, update_time,
        payload, content_hash, synced_at, created_at
    )
    SELECT $1::text, sn, j_int(status_v), j_ts(time_v), j_ts(update_v), item, h, now(), now()
    FROM o_in
    WHERE tid IS NULL
    ON CONFLICT DO NOTHING
    RETURNING parent_order_sn AS sn, parent_order_status AS new_status
),
l_in AS (
    -- #> walks to the line in place: a chain of -> would copy every level on the way.
    SELECT x.*, x.line -> 'orderStatus' AS status_v, x.line -> 'goodsId' AS goods_v,
           x.line -> 'skuId' AS sku_v, x.line -> 'quantity' AS quantity_v
    FROM (
        SELECT $1::text AS shop, e.v ->> 0 AS lsn,
               $2::jsonb #>> ARRAY['o', e.v ->> 1, '0'] AS parent_sn,
               $2::jsonb #> ARRAY['o', e.v ->> 1, '7', 'orderList', e.v ->> 2] AS line,
               (e.v ->> 3)::tid AS tid, (e.v ->> 4)::xid AS seen, (e.v ->> 5)::int AS old_status,
               (e.v ->> 6)::int AS cf_lo, (e.v ->> 7)::int AS cf_hi
        FROM jsonb_array_elements($2::jsonb -> 'l') AS e (v)
        OFFSET 0  -- the line is found once, not at every mention (see insert_orders)
    ) AS x
),
up_l AS (
    UPDATE order_lines AS t SET
        parent_order_sn = l.parent_sn,
        order_status = j_int(l.status_v),
        goods_id = j_bigint(l.goods_v),
        sku_id = j_bigint(l.sku_v),
        quantity = j_int(l.quantity_v),
        payload = l.line,
        synced_at = now()
    FROM l_in AS l
    WHERE t.ctid = ANY (ARRAY(SELECT tid FROM l_in WHERE tid IS NOT NULL))
          AND t.ctid = l.tid AND t.shop_id = l.shop AND t.order_sn = l.lsn
          AND t.xmin = l.seen
    RETURNING l.lsn, l.old_status, t.order_status AS new_status, l.cf_lo, l.cf_hi
),
ins_l AS (
    INSERT INTO order_lines (
        shop_id, order_sn, parent_order_sn, order_status, goods_id, sku_id, quantity,
        payload, synced_at, created_at
    )
    SELECT $1::text, lsn, parent_sn, j_int(status_v), j_bigint(goods_v), j_bigint(sku_v),
           j_int(quantity_v), line, now(), now()
    FROM l_in
    WHERE tid IS NULL
    ON CONFLICT DO NOTHING
    RETURNING order_sn AS lsn, order_status AS new_status
),
ch AS (
    INSERT INTO changes (shop_id, entity, entity_key, op, changed_fields, old_status, new_status)
    SELECT $1::text, 'order', u.sn, 'update', f.f[u.cf_lo:u.cf_hi], u.old_status, u.new_status
    FROM up_o AS u, fields AS f
    UNION ALL
    SELECT $1::text, 'order', sn, 'insert', NULL, NULL, new_status FROM ins_o
    UNION ALL
    SELECT $1::text, 'order_line', u.lsn, 'update', f.f[u.cf_lo:u.cf_hi], u.old_status,
           u.new_status
    FROM up_l AS u, fields AS f
    UNION ALL
    SELECT $1::text, 'order_line', lsn, 'insert', NULL, NULL, new_status FROM ins_l
),
adv AS (
    SELECT advance_cursor($1::text, $3::text, $4::text, $5::timestamptz)
    WHERE $3::text IS NOT NULL
)
SELECT
    rows_as_read(($2::jsonb #>> '{n,0}')::bigint, (SELECT count(*) FROM up_o), 'orders')
        AS orders_updated,
    rows_as_read(($2::jsonb #>> '{n,1}')::bigint, (SELECT count(*) FROM ins_o), 'new orders')
        AS orders_inserted,
    rows_as_read(($2::jsonb #>> '{n,2}')::bigint, (SELECT count(*) FROM up_l), 'order lines')
        AS lines_updated,
    rows_as_read(($2::jsonb #>> '{n,3}')::bigint, (SELECT count(*) FROM ins_l),
                 'new order lines')
        AS lines_inserted,
    (SELECT count(*) FROM adv) AS advanced;

-- name: write_orders
-- The write half: orders (de-duplicated and sorted by key by the caller), their lines, the
-- changes rows and optionally the cursor, in ONE statement (one implicit transaction).
-- $1 shop_id; per order: $2 parentOrderSn, $3 content hash, $4 payload (jsonb: the bytes the
-- hash was computed from), $5 position in the page, $6 row version (xmin) the engine computed
-- changed_fields against (NULL: none), $7/$8 bounds of those changed_fields in $14;
-- per line the engine diffed: $9 orderSn, $10 the order it diffed it in (against that
-- order's stored payload), $11 its index in that payload's orderList, $12/$13 bounds in $14;
-- $14 every changed field name, flat; $15 stream, $16 kind, $17 position (NULL $15: no
-- cursor); $18 orderSn values of lines to leave out (NULL: none; only when isolating a line).
--
-- An order whose stored hash equals the sent one is unchanged. One whose hash differs (or is
-- NULL: a row written before schema version 11) is compared by payload, and only a payload
-- that really differs is written: an unchanged row is never locked or rewritten, and its hash
-- is left as it is (filled the next time the record really changes). ON CONFLICT ... WHERE
-- repeats the check for a row another session inserted or changed after this snapshot.
-- changed_fields come from the engine when the row is still the version it diffed against
-- (a line: when the stored line equals the line of the order version the engine diffed), else
-- (a row changed in between, a line moved between orders, an unusual value) they are
-- computed here.
WITH src AS (
    SELECT *
    FROM unnest($2::text[], $3::bytea[], $4::jsonb[], $5::int[], $6::text[], $7::int[],
                $8::int[]) AS s (sn, h, item, pos, seen, cf_lo, cf_hi)
),
old_o AS (
    SELECT s.sn, s.h, s.item, s.pos, s.seen, s.cf_lo, s.cf_hi,
           o.payload AS old_payload, o.parent_order_status AS old_status,
           o.row_version,
           CASE WHEN o.content_hash = s.h THEN false
                ELSE o.payload IS DISTINCT FROM s.item END AS changed
    FROM src AS s
    LEFT JOIN LATERAL (
        -- LATERAL ... LIMIT 1 pins the plan to one primary-key probe per incoming row. As a
        -- plain join, a plan cached while the table was small or unanalyzed (a new install)
        -- becomes a hash join over the whole table on every later page.
        SELECT x.payload, x.parent_order_status, x.content_hash, x.xmin::text AS row_version
        FROM orders AS x
        WHERE x.shop_id = $1::text AND x.parent_order_sn = s.sn
        LIMIT 1
    ) AS o ON true
),
up_o AS (
    -- No ORDER BY: the rows come sorted by key (a stable lock order keeps concurrent writers
    -- of one shop from deadlocking) and sorting the wide payloads again costs a copy of each.
    INSERT INTO orders AS t (
        shop_id, parent_order_sn, parent_order_status, parent_order_time, update_time,
        payload, content_hash, synced_at, created_at
    )
    SELECT $1::text, sn,
           j_int(item -> 'parentOrderMap' -> 'parentOrderStatus'),
           j_ts(item -> 'parentOrderMap' -> 'parentOrderTime'),
           j_ts(item -> 'parentOrderMap' -> 'updateTime'),
           item, h, now(), now()
    FROM old_o
    WHERE changed
    ON CONFLICT (shop_id, parent_order_sn) DO UPDATE SET
        parent_order_status = EXCLUDED.parent_order_status,
        parent_order_time = EXCLUDED.parent_order_time,
        update_time = EXCLUDED.update_time,
        payload = EXCLUDED.payload,
        content_hash = EXCLUDED.content_hash,
        synced_at = EXCLUDED.synced_at
    WHERE t.payload IS DISTINCT FROM EXCLUDED.payload
    RETURNING t.parent_order_sn AS sn, (t.xmax = 0) AS inserted,
              t.parent_order_status AS new_status, t.payload
),
ch_o AS (
    INSERT INTO changes (shop_id, entity, entity_key, op, changed_fields, old_status, new_status)
    SELECT $1::text, 'order', u.sn,
           CASE WHEN u.inserted THEN 'insert' ELSE 'update' END,
           CASE WHEN u.inserted THEN NULL
                WHEN o.seen = o.row_version THEN ($14::text[])[o.cf_lo:o.cf_hi]
                ELSE jsonb_changed_keys(o.old_payload -> 'parentOrderMap',
                                        u.payload -> 'parentOrderMap')
                     || array_remove(jsonb_changed_keys(o.old_payload, u.payload),
                                     'parentOrderMap')
           END,
           CASE WHEN NOT u.inserted THEN o.old_status END,
           u.new_status
    FROM up_o AS u
    JOIN old_o AS o USING (sn)
),
-- Lines are part of their order's payload, so an unchanged order has unchanged lines: only
-- lines of new or changed orders are diffed. A key repeated in the page: the last one wins.
lines AS (
    SELECT DISTINCT ON (lsn) lsn, parent_sn, line
    FROM (
        SELECT s.sn AS parent_sn, s.pos, l.lord, l.line,
               nullif(l.line ->> 'orderSn', '') AS lsn
        FROM old_o AS s
        CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(s.item -> 'orderList') = 'array'
                 THEN s.item -> 'orderList' ELSE '[]'::jsonb END
        ) WITH ORDINALITY AS l (line, lord)
        WHERE s.changed
    ) AS all_lines
    WHERE lsn IS NOT NULL AND NOT (lsn = ANY (coalesce($18::text[], '{}')))
    ORDER BY lsn, pos DESC, lord DESC
),
old_l AS (
    SELECT l.lsn, l.parent_sn, l.line, ol.payload AS old_payload, ol.order_status AS old_status,
           ol.row_version
    FROM lines AS l
    LEFT JOIN LATERAL (
        SELECT x.payload, x.order_status, x.xmin::text AS row_version
        FROM order_lines AS x
        WHERE x.shop_id = $1::text AND x.order_sn = l.lsn
        LIMIT 1
    ) AS ol ON true
),
up_l AS (
    -- Sorted by key already (DISTINCT ON): see up_o.
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
seen_l AS (
    SELECT *
    FROM unnest($9::text[], $10::text[], $11::int[], $12::int[], $13::int[])
        AS li (lsn, parent_sn, idx, cf_lo, cf_hi)
),
ch_l AS (
    INSERT INTO changes (shop_id, entity, entity_key, op, changed_fields, old_status, new_status)
    SELECT $1::text, 'order_line', u.lsn,
           CASE WHEN u.inserted THEN 'insert' ELSE 'update' END,
           CASE WHEN u.inserted THEN NULL
                WHEN po.seen = po.row_version
                     AND o.old_payload = po.old_payload -> 'orderList' -> li.idx
                THEN ($14::text[])[li.cf_lo:li.cf_hi]
                ELSE jsonb_changed_keys(o.old_payload, u.payload)
           END,
           CASE WHEN NOT u.inserted THEN o.old_status END,
           u.new_status
    FROM up_l AS u
    JOIN old_l AS o USING (lsn)
    LEFT JOIN seen_l AS li USING (lsn)
    LEFT JOIN old_o AS po ON po.sn = li.parent_sn
),
adv AS (
    SELECT advance_cursor($1::text, $15::text, $16::text, $17::timestamptz)
    WHERE $15::text IS NOT NULL
)
SELECT
    (SELECT count(*) FILTER (WHERE inserted) FROM up_o) AS orders_inserted,
    (SELECT count(*) FILTER (WHERE NOT inserted) FROM up_o) AS orders_updated,
    (SELECT count(*) FILTER (WHERE inserted) FROM up_l) AS lines_inserted,
    (SELECT count(*) FILTER (WHERE NOT inserted) FROM up_l) AS lines_updated,
    (SELECT count(*) FROM adv) AS advanced;

-- name: insert_orders
-- A page expected to be all new (the page before it was: a backfill), as plain INSERTs: no
-- lookups, no ON CONFLICT, no de-duplication. One stored key (or a key repeated in the page)
-- makes it fail with unique_violation and write nothing; the caller then takes the compare
-- path. $1 shop_id, $2 the page as one JSON document (see orders_changed for why): per order
-- [parentOrderSn, content hash (hex), payload]; $3 stream, $4 kind, $5 position (NULL $3: no
-- cursor).
WITH src AS (
    -- The typed columns' values are taken out here, once: the j_* readers are inlined and
    -- name their argument several times, and an argument like item -> 'parentOrderMap' -> ..
    -- would be evaluated (copying parentOrderMap) at every mention (~6 us an order).
    SELECT e.v ->> 0 AS sn, decode(e.v ->> 1, 'hex') AS h, e.v -> 2 AS item,
           e.v #> '{2,parentOrderMap,parentOrderStatus}' AS status_v,
           e.v #> '{2,parentOrderMap,parentOrderTime}' AS time_v,
           e.v #> '{2,parentOrderMap,updateTime}' AS update_v
    FROM jsonb_array_elements($2::jsonb) AS e (v)
),
ins_o AS (
    INSERT INTO orders (
        shop_id, parent_order_sn, parent_order_status, parent_order_time, update_time,
        payload, content_hash, synced_at, created_at
    )
    SELECT $1::text, sn, j_int(status_v), j_ts(time_v), j_ts(update_v), item, h, now(), now()
    FROM src
    RETURNING parent_order_sn AS sn, parent_order_status AS status
),
ins_l AS (
    INSERT INTO order_lines (
        shop_id, order_sn, parent_order_sn, order_status, goods_id, sku_id, quantity,
        payload, synced_at, created_at
    )
    SELECT $1::text, l.lsn, s.sn, j_int(l.status_v), j_bigint(l.goods_v), j_bigint(l.sku_v),
           j_int(l.quantity_v), l.line, now(), now()
    FROM src AS s
    CROSS JOIN LATERAL (
        -- Values taken out once (see src); OFFSET 0 keeps the planner from pulling them back
        -- into every mention.
        SELECT e.line, nullif(e.line ->> 'orderSn', '') AS lsn,
               e.line -> 'orderStatus' AS status_v, e.line -> 'goodsId' AS goods_v,
               e.line -> 'skuId' AS sku_v, e.line -> 'quantity' AS quantity_v
        FROM jsonb_array_elements(
            CASE WHEN jsonb_typeof(s.item -> 'orderList') = 'array'
                 THEN s.item -> 'orderList' ELSE '[]'::jsonb END
        ) AS e (line)
        OFFSET 0
    ) AS l
    WHERE l.lsn IS NOT NULL
    RETURNING order_sn AS lsn, order_status AS status
),
ch AS (
    -- One INSERT for both kinds: the changes partition is routed once per statement.
    INSERT INTO changes (shop_id, entity, entity_key, op, new_status)
    SELECT $1::text, 'order', sn, 'insert', status FROM ins_o
    UNION ALL
    SELECT $1::text, 'order_line', lsn, 'insert', status FROM ins_l
),
adv AS (
    SELECT advance_cursor($1::text, $3::text, $4::text, $5::timestamptz)
    WHERE $3::text IS NOT NULL
)
SELECT
    (SELECT count(*) FROM ins_o) AS orders_inserted,
    0 AS orders_updated,
    (SELECT count(*) FROM ins_l) AS lines_inserted,
    0 AS lines_updated,
    (SELECT count(*) FROM adv) AS advanced;
