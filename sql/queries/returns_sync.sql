-- name: returns_changed
-- Which of these parent returns are new or differ from what is stored: only those need their
-- lines and reverse logistics fetched. Read-only; the write happens later in one transaction.
-- $1 shop_id, $2 items (jsonb array of result.data elements).
WITH items AS (
    SELECT DISTINCT ON (sn) sn, item
    FROM (
        SELECT e.item, e.ord, nullif(e.item ->> 'parentAfterSalesSn', '') AS sn
        FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS e (item, ord)
    ) AS i
    WHERE sn IS NOT NULL
    ORDER BY sn, ord DESC
)
SELECT i.sn
FROM items AS i
LEFT JOIN LATERAL (
    SELECT x.payload
    FROM returns AS x
    WHERE x.shop_id = $1::text AND x.parent_after_sales_sn = i.sn
    LIMIT 1
) AS r ON true
WHERE r.payload IS DISTINCT FROM i.item
ORDER BY i.sn;
