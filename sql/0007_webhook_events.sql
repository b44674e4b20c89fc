-- temu-sync schema, version 7: Temu webhook events, stored before they are acknowledged.
--
-- The receiver's only work on Temu's clock is one INSERT into this table; the consumer turns
-- rows into targeted re-reads afterwards. event_key is the sha256 of app_key, event code and
-- the decrypted payload: Temu's re-sends (same message) and duplicate deliveries collapse into
-- one row, so a duplicate never costs a second re-read.

CREATE TABLE webhook_events (
    id                    bigserial   PRIMARY KEY,
    event_key             text        NOT NULL UNIQUE,
    app_key               text        NOT NULL,
    shop_id               text        NOT NULL,
    mall_id               bigint,
    code                  text        NOT NULL,
    parent_order_sn       text,
    order_sn              text,
    parent_after_sales_sn text,
    update_time           timestamptz,          -- the event's updateTime, when it has one
    sent_at               timestamptz,          -- x-tm-timestamp
    payload               jsonb       NOT NULL, -- the decrypted eventData as sent
    received_at           timestamptz NOT NULL DEFAULT now(),
    attempts              integer     NOT NULL DEFAULT 0,
    next_attempt_at       timestamptz NOT NULL DEFAULT now(),
    claimed_until         timestamptz,          -- a consumer is working on it until then
    last_error            text,
    processed_at          timestamptz,
    outcome               text CHECK (outcome IN ('read', 'not_found', 'gave_up'))
);
COMMENT ON TABLE webhook_events IS
    'Temu webhook events: stored on receipt, processed_at set once the re-read they asked for is done';

-- The consumer's queue: only unprocessed rows, in arrival order.
CREATE INDEX webhook_events_pending ON webhook_events (next_attempt_at, id)
    WHERE processed_at IS NULL;
-- Pruning by age of processed rows.
CREATE INDEX webhook_events_processed ON webhook_events (processed_at)
    WHERE processed_at IS NOT NULL;
