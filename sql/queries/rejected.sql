-- name: save_rejected
-- Records set aside (interface.md: no usable key, or a value Postgres refuses even with NULL
-- typed columns). Seeing the same record again bumps seen/last_seen_at.
-- $1 shop_id, $2 stream, $3 record_hash, $4 entity_key, $5 reason, $6 raw.
INSERT INTO rejected_records AS r (shop_id, stream, record_hash, entity_key, reason, raw)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (shop_id, stream, record_hash) DO UPDATE SET
    entity_key = EXCLUDED.entity_key,
    reason = EXCLUDED.reason,
    raw = EXCLUDED.raw,
    last_seen_at = now(),
    seen = r.seen + 1;

-- name: rejected_counts
-- Per shop and stream, for status and /metrics.
SELECT shop_id, stream, count(*)::bigint AS records, max(last_seen_at) AS last_seen_at
FROM rejected_records
GROUP BY shop_id, stream
ORDER BY shop_id, stream;
