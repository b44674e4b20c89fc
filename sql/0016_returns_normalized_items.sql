-- temu-sync schema, version 16: returns_normalized carries the return's items, the buyer's
-- logistic mode and the label the reconciler uploaded (seed ecartapi-returns-model.txt:
-- returnItems, and a Return Fulfillment with tracking and its label document).
--
-- Columns are only appended (CREATE OR REPLACE VIEW keeps the existing ones as they were).
-- tracking_number / carrier_name now fall back to the label the engine uploaded while Temu's
-- reverse logistics (return_logistics) do not show it yet: the return fulfillment's tracking
-- "where known".
CREATE OR REPLACE VIEW returns_normalized AS
SELECT
    r.shop_id,
    r.parent_after_sales_sn,
    r.parent_order_sn,
    coalesce(m.status, 'requested') AS status,
    r.status AS temu_status,
    m.temu_name AS temu_status_name,
    r.after_sales_type,
    CASE r.after_sales_type WHEN 1 THEN 'refund' WHEN 2 THEN 'return_and_refund' END AS type,
    coalesce(r.status = 8 AND 10 = ANY (r.available_operations), false) AS label_awaited,
    coalesce(l.tracking_number, u.tracking_number) AS tracking_number,
    CASE WHEN l.tracking_number IS NOT NULL THEN l.carrier_name ELSE u.carrier_name END
        AS carrier_name,
    r.create_at,
    r.update_at,
    -- appended in version 16
    coalesce(i.items, '[]'::jsonb) AS return_items,
    CASE r.return_delivery_type WHEN 3 THEN 'dropOff' WHEN 4 THEN 'pickUp' END AS logistic_mode,
    u.state AS label_state,
    u.outcome AS label_outcome,
    u.file_url AS label_url,
    u.last_error AS label_error
FROM returns AS r
LEFT JOIN return_status_map AS m ON m.temu_status = r.status
LEFT JOIN return_logistics AS l
    ON l.shop_id = r.shop_id AND l.parent_after_sales_sn = r.parent_after_sales_sn
LEFT JOIN LATERAL (
    -- the child lines (bg.aftersales.aftersales.list.get), in a stable order
    SELECT jsonb_agg(
        jsonb_build_object(
            'returnItemId', rl.after_sales_sn,
            'quantity', rl.quantity,
            'goodsId', rl.goods_id,
            'skuId', rl.sku_id,
            'productSkuId', rl.payload -> 'productSkuId',
            'temuStatus', rl.after_sales_status
        )
        ORDER BY rl.after_sales_sn
    ) AS items
    FROM return_lines AS rl
    WHERE rl.shop_id = r.shop_id AND rl.parent_after_sales_sn = r.parent_after_sales_sn
) AS i ON true
LEFT JOIN LATERAL (
    -- the label upload task of this return (one per return: dedupe key upload_label:shop:sn);
    -- what it uploaded is in its result once done
    -- (a done task Temu asked again for a label is pending again: its old result is history)
    SELECT
        o.state,
        d.outcome,
        o.last_error,
        CASE WHEN d.outcome = 'uploaded' THEN o.result ->> 'file_url' END AS file_url,
        CASE WHEN d.outcome = 'uploaded' THEN o.result ->> 'tracking_number' END
            AS tracking_number,
        CASE WHEN d.outcome = 'uploaded'
            THEN o.payload -> 'label' ->> 'carrier_name' END AS carrier_name
    FROM outbox AS o
    CROSS JOIN LATERAL (
        SELECT CASE WHEN o.state = 'done' THEN o.result ->> 'outcome' END AS outcome
    ) AS d
    WHERE o.dedupe_key = 'upload_label:' || r.shop_id || ':' || r.parent_after_sales_sn
) AS u ON true;
COMMENT ON VIEW returns_normalized IS
    'Temu returns on the normalized returns model; label_awaited = status 8 and operation 10 '
    'offered; return_items from return_lines; label_* = the upload task of the return';
