-- temu-sync schema, version 9: hostile data never stalls a stream (issue 12).
--
-- 1. The j_* readers are total: NULL for anything they cannot convert, never an error. Their
--    regexes used \s, which in Postgres also matches U+3000 or U+2003 while the integer and
--    float casts only skip ASCII blanks: "2\u3000" passed the check, failed the cast and with
--    it the whole page's statement, on every try. Only ASCII blanks are accepted now, and only
--    ASCII digits ([0-9] is a code point range).
-- 2. rejected_records: what cannot be stored even with NULL typed columns (no usable key, a
--    key Postgres refuses) is set aside here, counted, never blocking its page (interface.md).
-- 3. sync_state remembers the failure class and how many passes in a row failed, so a stream
--    failing for the same reason backs off and status can say so.

CREATE OR REPLACE FUNCTION j_int(v jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN
            CASE WHEN v::numeric BETWEEN -2147483648 AND 2147483647
                      AND v::numeric = trunc(v::numeric)
                 THEN v::numeric::integer END
        WHEN 'string' THEN
            CASE WHEN (v #>> '{}') ~ '^[ \t\n\r]*-?[0-9]{1,9}[ \t\n\r]*$'
                 THEN (v #>> '{}')::integer END
    END
$$;

CREATE OR REPLACE FUNCTION j_bigint(v jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN
            CASE WHEN v::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
                      AND v::numeric = trunc(v::numeric)
                 THEN v::numeric::bigint END
        WHEN 'string' THEN
            CASE WHEN (v #>> '{}') ~ '^[ \t\n\r]*-?[0-9]{1,18}[ \t\n\r]*$'
                 THEN (v #>> '{}')::bigint END
    END
$$;

-- Same shape as version 4 (one inlinable expression), ASCII blanks only.
CREATE OR REPLACE FUNCTION j_ts(v jsonb) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_timestamp(nullif(greatest(
        CASE jsonb_typeof(v)
            WHEN 'number' THEN
                CASE WHEN v::numeric BETWEEN 1 AND 1e15 THEN
                    v::float8 / CASE WHEN v::float8 > 100000000000 THEN 1000 ELSE 1 END
                END
            WHEN 'string' THEN
                CASE WHEN (v #>> '{}') ~ '^[ \t\n\r]*[0-9]{1,15}[ \t\n\r]*$' THEN
                    (v #>> '{}')::float8
                    / CASE WHEN (v #>> '{}')::float8 > 100000000000 THEN 1000 ELSE 1 END
                END
        END, 0), 0))
$$;

CREATE TABLE rejected_records (
    shop_id       text        NOT NULL,
    stream        text        NOT NULL,
    -- sha256 of (entity_key or raw): a key too long for a btree index is still one record
    record_hash   text        NOT NULL,
    entity_key    text,
    reason        text        NOT NULL,
    raw           text        NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    seen          int         NOT NULL DEFAULT 1,
    PRIMARY KEY (shop_id, stream, record_hash)
);
COMMENT ON TABLE rejected_records IS
    'records that could not be stored even with NULL typed columns; their page went on';

ALTER TABLE sync_state
    ADD COLUMN last_error_class  text,
    ADD COLUMN failures_in_row   int NOT NULL DEFAULT 0,
    ADD COLUMN retry_after       timestamptz,
    ADD COLUMN inconsistent_windows bigint NOT NULL DEFAULT 0;
