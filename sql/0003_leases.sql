-- temu-sync schema, version 3: several daemons sharing one database.
--
-- Temu's rate limit belongs to the app_key, so exactly one process at a time may call Temu
-- for an app: the one holding its row in app_leases. Every time below comes from Postgres'
-- clock (now()), the one clock all machines share, so skew between hosts cannot make two of
-- them believe they own the same app.

CREATE TABLE daemons (
    owner        text        PRIMARY KEY,  -- host:pid:random, unique per process start
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    -- boot id and pid namespace: a process on the same machine and namespace can tell
    -- whether this pid still runs, and take over a crashed daemon's apps without waiting.
    local_id     text        NOT NULL,
    listen       text        NOT NULL DEFAULT '',
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
COMMENT ON TABLE daemons IS
    'running temu-sync daemons; a row whose expires_at passed belongs to a dead process';

CREATE TABLE app_leases (
    app_key      text        PRIMARY KEY,
    owner        text        NOT NULL,
    owner_host   text        NOT NULL,
    owner_local  text        NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
COMMENT ON TABLE app_leases IS
    'which process may call Temu for an app; free once expires_at has passed';
