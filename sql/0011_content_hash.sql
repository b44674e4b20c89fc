-- temu-sync schema, version 11: the orders diff writer compares content hashes (issue 16).
--
-- content_hash is the sha256 of the order as the writer stored it (canonical JSON: sorted keys),
-- computed in the engine from the record it already parsed. A page then asks "which of these
-- (key, hash) pairs are not stored?" with one primary-key probe per order and ships payloads
-- only for the answer: a quiet page is a read.
--
-- Backfill: lazy, by design. Adding a nullable column without a default is a catalog change
-- (instant on a populated table, no rewrite). A row written before this version keeps NULL
-- until its record really changes: until then the writer sends it and compares payloads, as
-- before, and writes nothing when they are equal. Filling the hash in place would give every
-- such row a new version (and WAL) only to record what is already known, and computing it in
-- SQL would need Postgres to reproduce the engine's JSON text byte for byte.
ALTER TABLE orders ADD COLUMN content_hash bytea;
COMMENT ON COLUMN orders.content_hash IS
    'sha256 of the payload as the engine serialised it (sorted keys); NULL: written before version 11';

-- changed_fields are sorted by code point (COLLATE "C"), whatever the database's collation:
-- the engine now computes most of them (orders_write.py) and sorts them the same way.
CREATE OR REPLACE FUNCTION jsonb_changed_keys(old jsonb, new jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(key ORDER BY key COLLATE "C"), '{}')
    FROM jsonb_each(CASE WHEN jsonb_typeof(old) = 'object' THEN old ELSE '{}' END) AS o
    FULL JOIN jsonb_each(CASE WHEN jsonb_typeof(new) = 'object' THEN new ELSE '{}' END) AS n
        USING (key)
    WHERE o.value IS DISTINCT FROM n.value
$$;
