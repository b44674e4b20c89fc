-- temu-sync schema, version 1.
--
-- The runner (engine/store/migrate.py) creates the schema, points search_path at it and runs
-- this file in one transaction, so nothing here names the schema.
--
-- Column names listed in the public interface (shared/spec/interface.md) are fixed: add
-- columns in later migrations, never rename.

-- ---------------------------------------------------------------------------------------------
-- Lenient JSON scalar readers. Temu documents numbers but mirrors and older API versions send
-- some of them as strings; a value that is neither a sane number nor a numeric string becomes
-- NULL rather than failing the whole page. Plain SQL functions without SET clauses so the
-- planner inlines them.

CREATE FUNCTION j_int(v jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN
            CASE WHEN v::numeric BETWEEN -2147483648 AND 2147483647
                      AND v::numeric = trunc(v::numeric)
                 THEN v::numeric::integer END
        WHEN 'string' THEN
            CASE WHEN (v #>> '{}') ~ '^\s*-?[0-9]{1,9}\s*$' THEN (v #>> '{}')::integer END
    END
$$;

CREATE FUNCTION j_bigint(v jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN
            CASE WHEN v::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
                      AND v::numeric = trunc(v::numeric)
                 THEN v::numeric::bigint END
        WHEN 'string' THEN
            CASE WHEN (v #>> '{}') ~ '^\s*-?[0-9]{1,18}\s*$' THEN (v #>> '{}')::bigint END
    END
$$;

-- Temu list APIs give Unix seconds; webhooks give milliseconds. Anything above 1e11 cannot be
-- seconds (year 5138), so it is read as milliseconds. Zero and negatives are "not set".
-- Written as one expression (no FROM, no nested calls on repeated arguments) so that it is
-- inlined: as a called function it cost more than the rest of an order insert.
CREATE FUNCTION j_ts(v jsonb) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_timestamp(nullif(greatest(
        CASE jsonb_typeof(v)
            WHEN 'number' THEN
                CASE WHEN v::numeric BETWEEN 1 AND 1e15 THEN
                    v::float8 / CASE WHEN v::float8 > 100000000000 THEN 1000 ELSE 1 END
                END
            WHEN 'string' THEN
                CASE WHEN (v #>> '{}') ~ '^\s*[0-9]{1,18}\s*$' THEN
                    (v #>> '{}')::float8
                    / CASE WHEN (v #>> '{}')::float8 > 100000000000 THEN 1000 ELSE 1 END
                END
        END, 0), 0))
$$;

CREATE FUNCTION j_int_array(v jsonb) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'array' THEN
        ARRAY(SELECT j_int(e) FROM jsonb_array_elements(v) AS e WHERE j_int(e) IS NOT NULL)
    END
$$;

-- Names of the top-level keys whose values differ between two objects (added, removed or
-- changed), sorted. Feeds changes.changed_fields.
CREATE FUNCTION jsonb_changed_keys(old jsonb, new jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(key ORDER BY key), '{}')
    FROM jsonb_each(CASE WHEN jsonb_typeof(old) = 'object' THEN old ELSE '{}' END) AS o
    FULL JOIN jsonb_each(CASE WHEN jsonb_typeof(new) = 'object' THEN new ELSE '{}' END) AS n
        USING (key)
    WHERE o.value IS DISTINCT FROM n.value
$$;

-- ---------------------------------------------------------------------------------------------
-- Synced records. payload is the record exactly as the API returned it; the typed columns are
-- derived from it on every write. synced_at/updated_at move only when the payload changed: an
-- unchanged record is never rewritten. fillfactor leaves room for HOT updates, since payload
-- rewrites are the common update and touch no indexed column.

CREATE TABLE orders (
    shop_id             text        NOT NULL,
    parent_order_sn     text        NOT NULL,
    parent_order_status integer,
    parent_order_time   timestamptz,
    update_time         timestamptz,
    payload             jsonb       NOT NULL,
    synced_at           timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, parent_order_sn)
) WITH (fillfactor = 85);
COMMENT ON COLUMN orders.payload IS 'one element of result.pageItems: {parentOrderMap, orderList}';
COMMENT ON COLUMN orders.synced_at IS 'when this payload version was written';
COMMENT ON COLUMN orders.created_at IS 'when the order was first seen';

CREATE TABLE order_lines (
    shop_id         text        NOT NULL,
    order_sn        text        NOT NULL,
    parent_order_sn text        NOT NULL,
    order_status    integer,
    goods_id        bigint,
    sku_id          bigint,
    quantity        integer,
    payload         jsonb       NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, order_sn)
) WITH (fillfactor = 85);
CREATE INDEX order_lines_parent_idx ON order_lines (shop_id, parent_order_sn);
COMMENT ON COLUMN order_lines.payload IS 'one element of orderList';

CREATE TABLE returns (
    shop_id               text        NOT NULL,
    parent_after_sales_sn text        NOT NULL,
    parent_order_sn       text,
    status                integer,
    status_group          integer,
    after_sales_type      integer,
    available_operations  integer[],
    return_delivery_type  integer,
    create_at             timestamptz,
    update_at             timestamptz,
    payload               jsonb       NOT NULL,
    synced_at             timestamptz NOT NULL DEFAULT now(),
    created_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, parent_after_sales_sn)
) WITH (fillfactor = 85);
CREATE INDEX returns_parent_order_idx ON returns (shop_id, parent_order_sn);
-- The reconciler's question "which returns wait for a label" stays cheap as returns pile up.
CREATE INDEX returns_label_pending_idx ON returns (shop_id) WHERE status = 8;
COMMENT ON COLUMN returns.payload IS 'one element of result.data of the parent returns list';
COMMENT ON COLUMN returns.status IS 'parentAfterSalesStatus';
COMMENT ON COLUMN returns.status_group IS 'afterSalesStatusGroup';
COMMENT ON COLUMN returns.available_operations IS 'availableOperateList';

CREATE TABLE return_lines (
    shop_id               text        NOT NULL,
    after_sales_sn        text        NOT NULL,
    parent_after_sales_sn text,
    after_sales_status    integer,
    goods_id              bigint,
    sku_id                bigint,
    quantity              integer,
    payload               jsonb       NOT NULL,
    synced_at             timestamptz NOT NULL DEFAULT now(),
    created_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, after_sales_sn)
) WITH (fillfactor = 85);
CREATE INDEX return_lines_parent_idx ON return_lines (shop_id, parent_after_sales_sn);
COMMENT ON COLUMN return_lines.quantity IS 'applyAfterSalesGoodsNumber';

CREATE TABLE return_logistics (
    shop_id                       text        NOT NULL,
    parent_after_sales_sn         text        NOT NULL,
    carrier_name                  text,
    tracking_number               text,
    return_warehouse_type         integer,
    return_warehouse_region1_name text,
    payload                       jsonb       NOT NULL,
    fetched_at                    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, parent_after_sales_sn)
);
COMMENT ON TABLE return_logistics IS
    'bg.aftersales.parentreturnorder.get per return; typed columns from the first entry with a tracking number';
COMMENT ON COLUMN return_logistics.payload IS 'logisticsInfoList as Temu returned it';
COMMENT ON COLUMN return_logistics.fetched_at IS 'when this payload version was stored';

-- Append-only change log: one row per insert and per real update, written by the same
-- statement as the row itself.
CREATE TABLE changes (
    id             bigserial   PRIMARY KEY,
    shop_id        text        NOT NULL,
    entity         text        NOT NULL
        CHECK (entity IN ('order', 'order_line', 'return', 'return_line')),
    entity_key     text        NOT NULL,
    op             text        NOT NULL CHECK (op IN ('insert', 'update')),
    changed_fields text[],
    old_status     integer,
    new_status     integer,
    changed_at     timestamptz NOT NULL DEFAULT now()
);
-- BRIN: nearly free to maintain on an append-only table, still serves time-range reads.
CREATE INDEX changes_changed_at_idx ON changes USING brin (changed_at);
COMMENT ON COLUMN changes.changed_fields IS
    'NULL on insert. Orders: keys of parentOrderMap that differ, plus other top-level keys '
    '(orderList when any line changed). Others: top-level keys of the payload that differ.';
COMMENT ON COLUMN changes.old_status IS
    'parentOrderStatus / orderStatus / parentAfterSalesStatus / afterSalesStatus before; NULL on insert';

-- ---------------------------------------------------------------------------------------------
-- Work for the reconciler. dedupe_key makes enqueueing idempotent; a running task whose lease
-- expired is claimable again, so a crashed worker never strands a task.

CREATE TABLE outbox (
    id               bigserial   PRIMARY KEY,
    kind             text        NOT NULL,
    dedupe_key       text        NOT NULL UNIQUE,
    shop_id          text,
    state            text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'done', 'dead')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    owner            text,
    last_error       text,
    payload          jsonb       NOT NULL DEFAULT '{}',
    result           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_running_idx ON outbox (lease_expires_at) WHERE state = 'running';
CREATE INDEX outbox_dead_idx ON outbox (updated_at) WHERE state = 'dead';

-- ---------------------------------------------------------------------------------------------
-- Sync cursors. kind is 'incremental' (one per shop and stream) or 'backfill:<since>:<until>'.

CREATE TABLE sync_state (
    shop_id         text        NOT NULL,
    stream          text        NOT NULL,
    kind            text        NOT NULL,
    position        timestamptz,
    last_success_at timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, stream, kind)
);
COMMENT ON COLUMN sync_state.position IS
    'cursor: everything updated before it is stored; never moves backwards for kind incremental';

-- Orange Connex rotates its refresh token on every refresh; the config value only seeds it.
CREATE TABLE oc_tokens (
    client_id     text        PRIMARY KEY,
    refresh_token text        NOT NULL,
    access_token  text,
    expires_at    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- parentAfterSalesStatus -> the normalized returns model (seed ecartapi-returns-model.txt:
-- requested | approved | rejected | cancelled | closed). "approved" covers every state in which
-- the merchant has accepted the return and goods or money are moving; "closed" is refunded.
-- A code missing here maps to 'requested' in the view (the contract has no 'unknown'), and the
-- raw code stays visible as temu_status.

CREATE TABLE return_status_map (
    temu_status integer PRIMARY KEY,
    temu_name   text    NOT NULL,
    status      text    NOT NULL
        CHECK (status IN ('requested', 'approved', 'rejected', 'cancelled', 'closed'))
);
INSERT INTO return_status_map (temu_status, temu_name, status) VALUES
    (1,  'refund requested',              'requested'),
    (10, 'return requested',              'requested'),
    (11, 'platform review',               'requested'),
    (8,  'label pending',                 'approved'),
    (2,  'return package shipped',        'approved'),
    (3,  'received, pending merchant',    'approved'),
    (4,  'refund initiated',              'approved'),
    (9,  'refund initiated',              'approved'),
    (5,  'refunded',                      'closed'),
    (6,  'buyer cancelled',               'cancelled'),
    (7,  'refund denied',                 'rejected');

CREATE VIEW returns_normalized AS
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
    l.tracking_number,
    l.carrier_name,
    r.create_at,
    r.update_at
FROM returns AS r
LEFT JOIN return_status_map AS m ON m.temu_status = r.status
LEFT JOIN return_logistics AS l
    ON l.shop_id = r.shop_id AND l.parent_after_sales_sn = r.parent_after_sales_sn;
COMMENT ON VIEW returns_normalized IS
    'Temu returns on the normalized returns model; label_awaited = status 8 and operation 10 offered';
