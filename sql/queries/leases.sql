-- name: daemon_heartbeat
-- Registers or refreshes this process, then lists every live one (this one included).
-- $1 owner, $2 host, $3 pid, $4 local_id, $5 listen, $6 ttl seconds.
WITH me AS (
    INSERT INTO daemons (owner, host, pid, local_id, listen, expires_at)
    VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6::float8))
    ON CONFLICT (owner) DO UPDATE SET
        heartbeat_at = now(),
        expires_at = EXCLUDED.expires_at
    RETURNING owner, host, pid, local_id, listen, started_at, heartbeat_at, expires_at
)
SELECT owner, host, pid, local_id, listen, started_at, heartbeat_at, expires_at FROM me
UNION ALL
SELECT owner, host, pid, local_id, listen, started_at, heartbeat_at, expires_at
FROM daemons
WHERE expires_at > now() AND owner <> $1
ORDER BY started_at, owner;

-- name: daemon_remove
DELETE FROM daemons WHERE owner = $1;

-- name: daemon_prune
-- Rows of processes dead for a while: kept briefly so `status` can show who vanished.
DELETE FROM daemons WHERE expires_at < now() - make_interval(secs => $1::float8);

-- name: daemons_all
SELECT owner, host, pid, local_id, listen, started_at, heartbeat_at, expires_at,
       expires_at > now() AS live
FROM daemons
ORDER BY started_at, owner;

-- name: lease_acquire
-- Takes the app when its lease is free (no row), expired, already ours, or held by $6: a
-- process this caller has seen dead on its own machine. The conflict branch locks the row and
-- re-checks the WHERE against its latest version, so of two processes racing for a free app
-- exactly one gets a row back. acquired_at survives a re-take by the same owner.
-- $1 app_key, $2 owner, $3 host, $4 local_id, $5 ttl seconds, $6 dead owner to replace or NULL.
INSERT INTO app_leases (app_key, owner, owner_host, owner_local, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5::float8))
ON CONFLICT (app_key) DO UPDATE SET
    owner = EXCLUDED.owner,
    owner_host = EXCLUDED.owner_host,
    owner_local = EXCLUDED.owner_local,
    acquired_at = CASE WHEN app_leases.owner = EXCLUDED.owner THEN app_leases.acquired_at
                       ELSE now() END,
    heartbeat_at = now(),
    expires_at = EXCLUDED.expires_at
WHERE app_leases.expires_at <= now()
   OR app_leases.owner = EXCLUDED.owner
   OR app_leases.owner = $6::text
RETURNING app_key, owner, owner_host, owner_local, acquired_at, heartbeat_at, expires_at;

-- name: lease_renew
-- Extends every listed lease still held by $2; an app missing from the answer was lost.
-- $1 app_keys, $2 owner, $3 ttl seconds.
UPDATE app_leases SET
    heartbeat_at = now(),
    expires_at = now() + make_interval(secs => $3::float8)
WHERE app_key = ANY ($1::text[]) AND owner = $2
RETURNING app_key;

-- name: lease_release
-- Not a DELETE: the lease stays ours for $3 more seconds, so the next owner's first request
-- comes at least that long after our last one and no sliding second holds both processes'
-- bursts. $1 app_keys, $2 owner, $3 cooldown seconds.
UPDATE app_leases SET
    heartbeat_at = now(),
    expires_at = LEAST(expires_at, now() + make_interval(secs => $3::float8))
WHERE app_key = ANY ($1::text[]) AND owner = $2
RETURNING app_key;

-- name: lease_list
SELECT app_key, owner, owner_host, owner_local, acquired_at, heartbeat_at, expires_at,
       expires_at > now() AS live
FROM app_leases
ORDER BY app_key;
