-- Retention (engine/store/retention.py). Every statement removes at most one batch and
-- commits on its own, so no prune holds locks for long or builds one huge transaction.
-- {name} placeholders are identifiers filled in (quoted) by the caller.

-- name: retention_try_lock
-- One prune at a time per schema (several daemons share a database): a session lock, so a
-- run that dies with its connection frees it.
SELECT pg_try_advisory_lock(hashtext('temu-sync-retention:' || current_schema())) AS got;

-- name: retention_unlock
SELECT pg_advisory_unlock(hashtext('temu-sync-retention:' || current_schema()));

-- name: retention_changes_layout
-- 'p' partitioned, 'r' plain; the validated/unvalidated bound of the large-table procedure.
SELECT c.relkind::text AS kind,
       k.convalidated AS bound_valid,
       substring(pg_get_constraintdef(k.oid) FROM '< \(?''?(-?[0-9]+)')::bigint AS bound
FROM pg_class AS c
LEFT JOIN pg_constraint AS k ON k.conrelid = c.oid AND k.conname = 'changes_legacy_bound'
WHERE c.oid = to_regclass('changes');

-- name: retention_changes_next_id
SELECT changes_next_id() AS next_id;

-- name: retention_changes_add_partitions
-- $1 ids per partition, $2 partitions to keep ready past the next id.
SELECT changes_add_partitions($1::bigint, $2::integer) AS made;

-- name: retention_summarize_closed
-- Partitions the id sequence has left are final: summarizing their BRIN up to the last page
-- (VACUUM leaves the last, partial block range unsummarized, and an unsummarized range is
-- read on every time-range query) keeps the planner's "changed in the last minutes" look-up
-- from reading one block range per partition: flat in the number of partitions.
SELECT coalesce(sum(brin_summarize_new_values(i.indexrelid)), 0)::bigint AS ranges
FROM changes_partitions AS p
JOIN pg_index AS i ON i.indrelid = to_regclass(quote_ident(p.name))
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_am AS am ON am.oid = ic.relam
WHERE am.amname = 'brin' AND NOT p.is_default AND p.upper <= changes_next_id();

-- name: retention_changes_add_bound
-- Step 1 of converting a large plain `changes`: a CHECK every id written until the swap will
-- satisfy ({bound}, far past the next id). NOT VALID: no scan, a lock of a few milliseconds.
ALTER TABLE changes ADD CONSTRAINT changes_legacy_bound CHECK (id < {bound}) NOT VALID;

-- name: retention_changes_validate_bound
-- Step 2: proves the CHECK for the existing rows. Holds SHARE UPDATE EXCLUSIVE only, so the
-- sync and the reconciler go on reading and writing meanwhile.
ALTER TABLE changes VALIDATE CONSTRAINT changes_legacy_bound;

-- name: retention_changes_lock
LOCK TABLE changes IN ACCESS EXCLUSIVE MODE;

-- name: retention_changes_convert
-- Step 3 (and the whole conversion of a small table): the swap, under the lock above.
SELECT changes_convert($1::bigint, $2::bigint);

-- name: retention_changes_jump
-- Step 4, after the swap committed (setval is not transactional, so never inside it): new ids
-- start past the legacy partition. Idempotent; also run whenever the layout is checked, so a
-- conversion interrupted between swap and jump is finished.
SELECT changes_jump_past_legacy() AS bound;

-- name: retention_planner_hold
-- The lowest reconciler cursor: change rows above it are not planned yet and stay.
SELECT min(position) AS hold, count(*) AS cursors FROM reconciler_cursor;

-- name: retention_changes_partitions
-- Range partitions wholly below $1 (the next id and the planner's hold), oldest first.
SELECT name, lower, upper
FROM changes_partitions
WHERE NOT is_default AND upper <= $1::bigint
ORDER BY upper;

-- name: retention_partition_expired
-- Whether partition {part} holds nothing changed at or after $1, and how many rows it has.
-- The BRIN index answers the first without reading an old partition.
SELECT NOT EXISTS (SELECT 1 FROM {part} WHERE changed_at >= $1::timestamptz) AS expired,
       (SELECT count(*) FROM {part}) AS n;

-- name: retention_drop_partition
DROP TABLE {part};

-- name: retention_changes_head
-- The oldest change rows after $1 up to the hold $2: deletes take the longest prefix of
-- them that is older than the cutoff.
SELECT id, changed_at
FROM changes
WHERE id > $1::bigint AND id <= $2::bigint
ORDER BY id
LIMIT $3;

-- name: retention_changes_delete_range
-- $1 first id, $2 last id, $3 cutoff (checked again: a row committed since the head was read
-- may be new).
WITH gone AS (
    DELETE FROM changes
    WHERE id BETWEEN $1::bigint AND $2::bigint AND changed_at < $3::timestamptz
    RETURNING 1
)
SELECT count(*) AS n FROM gone;

-- name: retention_outbox_done_count
-- Done tasks finished before $1 that the planner no longer needs as its memory of "already
-- queued": their return has not changed since the cutoff (the planner re-plans a return only
-- from its recent changes) and, for a label upload, Temu no longer shows it waiting for one.
-- $2 caps the count.
SELECT count(*) AS n FROM (
    SELECT 1
    FROM outbox AS o
    LEFT JOIN returns AS r
        ON r.shop_id = o.shop_id AND r.parent_after_sales_sn = o.payload ->> 'sn'
    WHERE o.state = 'done' AND o.updated_at < $1::timestamptz
      AND (r.shop_id IS NULL
           OR (r.synced_at < $1::timestamptz
               AND NOT (o.kind = 'upload_label' AND r.status = 8
                        AND 10 = ANY (r.available_operations))))
    LIMIT $2
) AS s;

-- name: retention_outbox_done_delete
-- One batch of what retention_outbox_done_count counts. $1 cutoff, $2 batch size.
WITH gone AS (
    DELETE FROM outbox WHERE id IN (
        SELECT o.id
        FROM outbox AS o
        LEFT JOIN returns AS r
            ON r.shop_id = o.shop_id AND r.parent_after_sales_sn = o.payload ->> 'sn'
        WHERE o.state = 'done' AND o.updated_at < $1::timestamptz
          AND (r.shop_id IS NULL
               OR (r.synced_at < $1::timestamptz
                   AND NOT (o.kind = 'upload_label' AND r.status = 8
                            AND 10 = ANY (r.available_operations))))
        ORDER BY o.updated_at
        LIMIT $2
        FOR UPDATE OF o SKIP LOCKED
    ) AND state = 'done'
    RETURNING 1
)
SELECT count(*) AS n FROM gone;

-- name: retention_outbox_dead_count
SELECT count(*) AS n FROM (
    SELECT 1 FROM outbox WHERE state = 'dead' AND updated_at < $1::timestamptz LIMIT $2
) AS s;

-- name: retention_outbox_dead_delete
WITH gone AS (
    DELETE FROM outbox WHERE id IN (
        SELECT id FROM outbox WHERE state = 'dead' AND updated_at < $1::timestamptz
        ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED
    ) AND state = 'dead'
    RETURNING 1
)
SELECT count(*) AS n FROM gone;

-- name: retention_table_exists
-- Tables other features add are pruned only where they exist. $1 table, $2 column that must
-- exist too (NULL: none).
SELECT to_regclass($1::text) IS NOT NULL
       AND ($2::text IS NULL OR EXISTS (
           SELECT 1 FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = $1::text
             AND column_name = $2::text)) AS present;

-- name: retention_rejected_count
SELECT count(*) AS n FROM (
    SELECT 1 FROM rejected_records WHERE last_seen_at < $1::timestamptz LIMIT $2
) AS s;

-- name: retention_rejected_delete
WITH gone AS (
    DELETE FROM rejected_records WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM rejected_records WHERE last_seen_at < $1::timestamptz LIMIT $2))
    RETURNING 1
)
SELECT count(*) AS n FROM gone;

-- name: retention_events_count
-- Stored webhook events, by age (a table without processed_at). Where the table has that
-- column, retention_events_processed_* are used instead: an event not yet turned into a
-- re-read (processed_at NULL) is kept whatever its age.
SELECT count(*) AS n FROM (
    SELECT 1 FROM webhook_events WHERE received_at < $1::timestamptz LIMIT $2
) AS s;

-- name: retention_events_delete
WITH gone AS (
    DELETE FROM webhook_events WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM webhook_events WHERE received_at < $1::timestamptz LIMIT $2))
    RETURNING 1
)
SELECT count(*) AS n FROM gone;

-- name: retention_events_processed_count
SELECT count(*) AS n FROM (
    SELECT 1 FROM webhook_events
    WHERE received_at < $1::timestamptz AND processed_at IS NOT NULL LIMIT $2
) AS s;

-- name: retention_events_processed_delete
WITH gone AS (
    DELETE FROM webhook_events WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM webhook_events
        WHERE received_at < $1::timestamptz AND processed_at IS NOT NULL LIMIT $2))
    RETURNING 1
)
SELECT count(*) AS n FROM gone;

-- name: retention_logistics_pending_count
-- Returns whose reverse logistics were first found missing before $1 (retention's
-- logistics_pending_days): no longer read again after every pass.
SELECT count(*) AS n FROM (
    SELECT 1 FROM logistics_pending WHERE first_seen_at < $1::timestamptz LIMIT $2
) AS s;

-- name: retention_logistics_pending_delete
WITH gone AS (
    DELETE FROM logistics_pending WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM logistics_pending WHERE first_seen_at < $1::timestamptz LIMIT $2))
    RETURNING 1
)
SELECT count(*) AS n FROM gone;
