-- temu-sync schema, version 12: the large-table conversion of `changes` never leaves writes
-- refused.
--
-- The swap used to move the id sequence to the legacy bound inside its transaction, but
-- setval is not transactional: a swap rolled back after it (cancelled, killed, a lock or
-- statement deadline in a later statement) left the plain table behind its CHECK (id < bound)
-- with a sequence already at the bound, and every insert into `changes` (every sync write)
-- failed the CHECK until a later retention run finished the conversion. The swap now leaves
-- the sequence alone; changes_jump_past_legacy(), run after the swap commits (and at every
-- conversion check, so an interrupted one is finished), moves it. Until then new rows take
-- ids below the bound and land in the legacy partition, which is allowed.
CREATE OR REPLACE FUNCTION changes_convert(bound bigint, size bigint) RETURNS void
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

-- Moves the sequence past the legacy partition's upper bound, once that partition exists;
-- returns the bound (NULL when there is no legacy partition). Idempotent.
CREATE FUNCTION changes_jump_past_legacy() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    b bigint;
BEGIN
    SELECT upper INTO b FROM changes_partitions WHERE name = 'changes_legacy';
    IF b IS NOT NULL AND changes_next_id() < b THEN
        PERFORM setval('changes_id_seq', b, false);
    END IF;
    RETURN b;
END
$$;
