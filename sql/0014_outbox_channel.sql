-- temu-sync schema, version 14: the outbox's NOTIFY channel belongs to the schema.
--
-- LISTEN/NOTIFY channels are database-wide. With one fixed channel, the reconciler of every
-- schema in a database woke at every other schema's new task (an extra pass each time, no
-- wrong work). The channel now carries a digest of the schema's name: channel names are
-- identifiers (at most 63 bytes) and a schema's name may be as long as that by itself.
-- Every NOTIFY and the daemon's LISTEN ask this function, so both always agree; it reads the
-- schema from the caller's search_path, which every engine connection sets to its schema.
CREATE OR REPLACE FUNCTION outbox_channel() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT 'temu-sync.outbox.' || left(md5(current_schema()), 16)
$$;
