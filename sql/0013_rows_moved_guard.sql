-- temu-sync schema, version 13: the orders writer's update-in-place statement (issue 16).
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
