-- name: enqueue
-- Idempotent by dedupe_key. The NOTIFY is sent only for a new task and only at commit, so a
-- listening reconciler never wakes for a task it cannot see yet.
WITH ins AS (
    INSERT INTO outbox (kind, dedupe_key, payload, shop_id)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id, kind
)
SELECT id, pg_notify(outbox_channel(), kind) FROM ins;

-- name: claim
-- Due pending tasks, and running tasks whose lease expired (their worker died). SKIP LOCKED
-- lets concurrent claimers split the work without waiting on each other.
-- $1 kinds, $2 limit, $3 lease seconds, $4 owner, $5 shop ids or NULL for any: a daemon
-- sharing the database with others takes only tasks of the apps it holds the lease of, so a
-- task's Temu calls go through that app's one pacer (tasks without a shop never call Temu).
WITH picked AS (
    SELECT id
    FROM outbox
    WHERE kind = ANY ($1::text[])
      AND ($5::text[] IS NULL OR shop_id IS NULL OR shop_id = ANY ($5::text[]))
      AND ((state = 'pending' AND next_attempt_at <= now())
           OR (state = 'running' AND lease_expires_at <= now()))
    ORDER BY next_attempt_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox AS o SET
    state = 'running',
    attempts = o.attempts + 1,
    lease_expires_at = now() + make_interval(secs => $3::float8),
    owner = $4,
    updated_at = now()
FROM picked
WHERE o.id = picked.id
RETURNING o.id, o.kind, o.dedupe_key, o.shop_id, o.payload, o.attempts, o.lease_expires_at,
          o.owner, o.last_error, o.created_at;

-- name: complete
-- $3 owner: when given, only the current lease holder may complete (a worker whose lease
-- expired and whose task was re-claimed must not overwrite the new run).
UPDATE outbox SET
    state = 'done',
    result = $2,
    -- A done task has no error: a wait it went through ("label not ready yet") is history,
    -- not its state.
    last_error = NULL,
    lease_expires_at = NULL,
    updated_at = now()
WHERE id = $1 AND state = 'running' AND ($3::text IS NULL OR owner = $3::text)
RETURNING id;

-- name: fail
-- $1 id, $2 error, $3 max_attempts, $4 backoff seconds, $5 owner (optional guard).
UPDATE outbox SET
    state = CASE WHEN attempts >= $3 THEN 'dead' ELSE 'pending' END,
    next_attempt_at = CASE WHEN attempts >= $3 THEN next_attempt_at
                           ELSE now() + make_interval(secs => $4::float8) END,
    last_error = $2,
    lease_expires_at = NULL,
    updated_at = now()
WHERE id = $1 AND state = 'running' AND ($5::text IS NULL OR owner = $5::text)
RETURNING state;

-- name: outbox_tasks
SELECT id, kind, dedupe_key, shop_id, state, attempts, next_attempt_at, lease_expires_at, owner,
       last_error, payload, result, created_at, updated_at
FROM outbox
WHERE $1::text IS NULL OR state = $1::text
ORDER BY id;

-- name: outbox_counts
SELECT state, count(*) AS n FROM outbox GROUP BY state;

-- name: oldest_dead
SELECT id, kind, dedupe_key, shop_id, attempts, last_error, updated_at
FROM outbox
WHERE state = 'dead'
ORDER BY updated_at, id
LIMIT 1;
