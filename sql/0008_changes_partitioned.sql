-- temu-sync schema, version 8: bounded growth (retention).
--
-- `changes` becomes a table partitioned by RANGE (id), so retention drops whole partitions
-- instead of deleting rows one by one. The partition key is id because `changes.id` is the
-- table's primary key in the public interface and the reconciler's cursor is an id: its
-- "id > cursor ORDER BY id" reads touch only the newest partitions (runtime pruning).
--
-- Layout: `changes_legacy` (the table as it was, attached as is: FROM MINVALUE), range
-- partitions `changes_p<lower bound>` created ahead of the id sequence by the retention job,
-- and `changes_default`, a safety net for ids past the last partition (a backfill writing
-- faster than the job creates partitions must never fail), emptied by retention's deletes.
--
-- A small table (up to 1,000,000 rows, the whole table for a new install) is converted here.
-- A larger one is left as it is (retention then deletes in batches) and converted by
-- `temu-sync prune` / the daemon's retention job in three resumable steps that never hold a
-- long lock (engine/store/retention.py, README "Retention").

-- The range partitions with their bounds, for the retention job (NULL lower = MINVALUE).
CREATE VIEW changes_partitions AS
SELECT c.relname::text AS name,
       b.bound = 'DEFAULT' AS is_default,
       nullif(substring(b.bound FROM 'FROM \(''?(-?[0-9]+)''?\)'), '')::bigint AS lower,
       nullif(substring(b.bound FROM 'TO \(''?(-?[0-9]+)''?\)'), '')::bigint AS upper
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) AS b
WHERE i.inhparent = to_regclass('changes');
COMMENT ON VIEW changes_partitions IS 'partitions of changes and their id bounds (retention)';

-- The id the sequence hands out next.
CREATE FUNCTION changes_next_id() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM changes_id_seq
$$;

-- Creates range partitions of `size` ids until `ahead` of them lie wholly past the next id.
-- Returns the names created. Each CREATE briefly locks `changes` (and checks the default
-- partition, normally empty); ids already in the default partition are skipped over.
CREATE FUNCTION changes_add_partitions(size bigint, ahead integer) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    top bigint;
    floor_id bigint;
    made text[] := '{}';
    name text;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('changes')) IS DISTINCT FROM 'p' THEN
        RETURN made;
    END IF;
    SELECT max(upper) INTO top FROM changes_partitions WHERE NOT is_default;
    floor_id := greatest(changes_next_id(),
                         coalesce((SELECT max(id) + 1 FROM changes_default), 0));
    top := greatest(coalesce(top, floor_id), floor_id);
    WHILE top < changes_next_id() + size * ahead LOOP
        name := 'changes_p' || lpad(top::text, 19, '0');
        EXECUTE format('CREATE TABLE %I PARTITION OF changes FOR VALUES FROM (%s) TO (%s)',
                       name, top, top + size);
        made := made || name;
        top := top + size;
    END LOOP;
    RETURN made;
END
$$;

-- Turns the plain `changes` into the partitioned layout, the old table becoming the partition
-- [MINVALUE, bound). Runs in the caller's transaction, which should hold `changes` in ACCESS
-- EXCLUSIVE mode. ATTACH checks every row against the bound unless a valid CHECK (id < bound)
-- already proves it (the large-table procedure validates one beforehand, without blocking
-- writers), so this is quick either way. The sequence moves to `bound` so new rows go to the
-- new partitions; an empty old table is dropped.
CREATE FUNCTION changes_convert(bound bigint, size bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('changes')) = 'p' THEN
        RETURN;
    END IF;
    ALTER TABLE changes RENAME TO changes_legacy;
    ALTER INDEX changes_pkey RENAME TO changes_legacy_pkey;
    ALTER INDEX changes_changed_at_idx RENAME TO changes_legacy_changed_at_idx;
    CREATE TABLE changes (
        id             bigint      NOT NULL DEFAULT nextval('changes_id_seq'),
        shop_id        text        NOT NULL,
        entity         text        NOT NULL CONSTRAINT changes_entity_check
            CHECK (entity IN ('order', 'order_line', 'return', 'return_line')),
        entity_key     text        NOT NULL,
        op             text        NOT NULL
            CONSTRAINT changes_op_check CHECK (op IN ('insert', 'update')),
        changed_fields text[],
        old_status     integer,
        new_status     integer,
        changed_at     timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT changes_pkey PRIMARY KEY (id)
    ) PARTITION BY RANGE (id);
    -- BRIN per partition: nearly free on append-only data, and it lets retention tell that a
    -- partition holds nothing newer than the cutoff without reading it.
    CREATE INDEX changes_changed_at_idx ON changes USING brin (changed_at);
    ALTER SEQUENCE changes_id_seq OWNED BY changes.id;
    ALTER TABLE changes_legacy ALTER COLUMN id DROP DEFAULT;
    EXECUTE format('ALTER TABLE changes ATTACH PARTITION changes_legacy '
                   'FOR VALUES FROM (MINVALUE) TO (%s)', bound);
    CREATE TABLE changes_default PARTITION OF changes DEFAULT;
    IF changes_next_id() < bound THEN
        PERFORM setval('changes_id_seq', bound, false);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM changes_legacy) THEN
        DROP TABLE changes_legacy;
    END IF;
    COMMENT ON TABLE changes IS
        'append-only change log, partitioned by id range; old partitions are dropped by retention';
    COMMENT ON COLUMN changes.changed_fields IS
        'NULL on insert. Orders: keys of parentOrderMap that differ, plus other top-level keys '
        '(orderList when any line changed). Others: top-level keys of the payload that differ.';
    COMMENT ON COLUMN changes.old_status IS
        'parentOrderStatus / orderStatus / parentAfterSalesStatus / afterSalesStatus before; NULL on insert';
    PERFORM changes_add_partitions(size, 2);
END
$$;

DO $$
DECLARE
    small boolean;
    bound bigint;
BEGIN
    small := (SELECT count(*) FROM (SELECT 1 FROM changes LIMIT 1000001) AS s) <= 1000000;
    IF small THEN
        bound := greatest(changes_next_id(), coalesce((SELECT max(id) + 1 FROM changes), 1));
        PERFORM changes_convert(bound, 1000000);
    END IF;
END
$$;

-- Retention removes done tasks by age; the index keeps that cheap as they pile up.
CREATE INDEX outbox_done_idx ON outbox (updated_at) WHERE state = 'done';
