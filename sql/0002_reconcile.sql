-- temu-sync schema, version 2: reconciler bookkeeping.
--
-- The reconciler drives its Orange Connex checks from the change log instead of scanning every
-- return each pass; this table remembers how far into `changes` it has planned. One row per
-- named cursor so a later planner (another kind of change) gets its own position.

CREATE TABLE reconciler_cursor (
    name       text        PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN reconciler_cursor.position IS
    'highest changes.id already planned; rows committed late below it are caught by a time overlap';

-- Upload tasks are looked up by return when a merchant label arrives; dedupe_key is already
-- unique, so this only serves the kind filter of the status and planner queries.
CREATE INDEX outbox_kind_state_idx ON outbox (kind, state);
