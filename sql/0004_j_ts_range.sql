-- temu-sync schema, version 4: j_ts never raises.
--
-- j_ts read any string of up to 18 digits; one above 1e15 ("999999999999999999", a year in the
-- millions even as milliseconds) made to_timestamp raise "timestamp out of range", which
-- failed the whole page's statement on every retry: one bad record stopped its stream. Strings
-- now get the numbers' bound (at most 1e15, i.e. year 33658 as milliseconds); anything beyond
-- is "not a time" (NULL), while the payload keeps the value as sent.
CREATE OR REPLACE FUNCTION j_ts(v jsonb) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_timestamp(nullif(greatest(
        CASE jsonb_typeof(v)
            WHEN 'number' THEN
                CASE WHEN v::numeric BETWEEN 1 AND 1e15 THEN
                    v::float8 / CASE WHEN v::float8 > 100000000000 THEN 1000 ELSE 1 END
                END
            WHEN 'string' THEN
                CASE WHEN (v #>> '{}') ~ '^\s*[0-9]{1,15}\s*$' THEN
                    (v #>> '{}')::float8
                    / CASE WHEN (v #>> '{}')::float8 > 100000000000 THEN 1000 ELSE 1 END
                END
        END, 0), 0))
$$;
