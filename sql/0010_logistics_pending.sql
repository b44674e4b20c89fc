-- temu-sync schema, version 10: reverse logistics that could not be read are read again
-- (issue 12). bg.aftersales.parentreturnorder.get may answer 130010004 (no reverse order yet)
-- or fail for one return; its return row is still stored, so without this table nothing
-- would ask again until the return itself changed. Each pass reads the due rows again; a
-- successful read (here or on the normal path) deletes the row.

CREATE TABLE logistics_pending (
    shop_id               text        NOT NULL,
    parent_after_sales_sn text        NOT NULL,
    attempts              int         NOT NULL DEFAULT 0,  -- reads tried again so far
    last_error            text,
    first_seen_at         timestamptz NOT NULL DEFAULT now(),
    next_attempt_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, parent_after_sales_sn)
);
CREATE INDEX logistics_pending_due ON logistics_pending (shop_id, next_attempt_at);
COMMENT ON TABLE logistics_pending IS
    'returns whose reverse logistics could not be read; read again each pass until done';
