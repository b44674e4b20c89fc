-- temu-sync schema, version 13: the page statements' shared pieces (issue 16).
--
-- The writer reads a changed order's row (its ctid and xmin) before it diffs it, and then
-- updates that very row version by ctid: no second key lookup, no ON CONFLICT locking, no
-- payload comparison in Postgres. When a row moved in between (another writer changed it,
-- a conflicting key appeared), the statement must write nothing at all: this function ends
-- it with serialization_failure when a count differs from what the writer expected, and the
-- writer sends the page again through the statement that compares everything itself.
CREATE OR REPLACE FUNCTION rows_as_read(expected bigint, got bigint, what text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF got IS DISTINCT FROM expected THEN
        RAISE EXCEPTION '% changed since the page read them: % of % rows as read',
            what, got, expected
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN got;
END
$$;

-- The cursor rule, in one place (every page statement advances its cursor through it, in the
-- page's own transaction): an incremental cursor never moves back (pages of a window may be
-- written out of order, the overlap is read again); any other kind (a backfill's) moves to
-- where its walk is.
CREATE OR REPLACE FUNCTION advance_cursor(text, text, text, timestamptz) RETURNS timestamptz
LANGUAGE sql AS $$
    INSERT INTO sync_state AS st (shop_id, stream, kind, position, updated_at)
    VALUES ($1, $2, $3, $4, now())
    ON CONFLICT (shop_id, stream, kind) DO UPDATE SET
        position = CASE WHEN st.kind = 'incremental'
                        THEN greatest(st.position, EXCLUDED.position)
                        ELSE EXCLUDED.position END,
        updated_at = EXCLUDED.updated_at
    RETURNING position
$$;
