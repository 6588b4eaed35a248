//! The schema (numbered migrations, applied under an advisory lock) and every statement the
//! store prepares.

use super::pool::why;
use tokio_postgres::Client;

/// Key of the transaction-scoped advisory lock taken while migrating ("mcp_stor").
pub const MIGRATION_LOCK: i64 = 0x6d63_705f_7374_6f72;

/// Schema migrations, in order; `schema_version` holds how many were applied. Never edit one
/// that shipped: append.
pub(super) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE tasks (
        id          text COLLATE \"C\" PRIMARY KEY,
        owner       text COLLATE \"C\" NOT NULL,
        title       text COLLATE \"C\" NOT NULL,
        description text COLLATE \"C\",
        due         text COLLATE \"C\",
        completed   boolean NOT NULL DEFAULT false,
        created_at  text COLLATE \"C\" NOT NULL,
        updated_at  text COLLATE \"C\" NOT NULL,
        version     bigint NOT NULL DEFAULT 1
    );
    CREATE INDEX tasks_owner_order ON tasks (owner, created_at, id);",
    "CREATE TABLE memories (
        owner       text COLLATE \"C\" NOT NULL,
        key         text COLLATE \"C\" NOT NULL,
        value       text COLLATE \"C\" NOT NULL,
        tags        text[] COLLATE \"C\" NOT NULL DEFAULT '{}',
        created_at  text COLLATE \"C\" NOT NULL,
        updated_at  text COLLATE \"C\" NOT NULL,
        expires_at  text COLLATE \"C\",
        version     bigint NOT NULL DEFAULT 1,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX memories_owner_newest ON memories (owner, updated_at DESC, key);
    CREATE INDEX memories_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL;",
];

// Statements (prepared once per connection). Columns in the order `task` and `memory` read.
pub(super) const LIST: &str = "SELECT id, owner, title, description, due, completed, created_at, \
    updated_at, version FROM tasks
    WHERE owner = $1 AND ($2::boolean IS NULL OR completed = $2::boolean)
      AND ($3::text IS NULL OR (created_at, id) > ($3::text, $4::text))
    ORDER BY created_at, id LIMIT $5";
pub(super) const CREATE: &str =
    "INSERT INTO tasks (id, owner, title, description, due, completed, \
    created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, false, $6, $7, 1)";
// One statement: each field either kept or set, the version bumped once; the version
// predicate is the compare-and-set.
pub(super) const UPDATE: &str = "UPDATE tasks SET
        title = CASE WHEN $3::boolean THEN $4::text ELSE title END,
        description = CASE WHEN $5::boolean THEN $6::text ELSE description END,
        due = CASE WHEN $7::boolean THEN $8::text ELSE due END,
        completed = CASE WHEN $9::boolean THEN $10::boolean ELSE completed END,
        updated_at = $11::text,
        version = version + 1
    WHERE id = $1 AND owner = $2 AND ($12::bigint IS NULL OR version = $12::bigint)
    RETURNING id, owner, title, description, due, completed, created_at, updated_at, version";
pub(super) const VERSION: &str = "SELECT version FROM tasks WHERE id = $1 AND owner = $2";
pub(super) const COMPLETE: &str = "UPDATE tasks SET completed = true, updated_at = $3, \
    version = version + 1 WHERE id = $1 AND owner = $2 AND NOT completed
    RETURNING id, owner, title, description, due, completed, created_at, updated_at, version";
pub(super) const GET: &str = "SELECT id, owner, title, description, due, completed, created_at, \
    updated_at, version FROM tasks WHERE id = $1 AND owner = $2";
pub(super) const DELETE: &str = "DELETE FROM tasks WHERE id = $1 AND owner = $2";
pub(super) const CHECK: &str = "SELECT COUNT(*) FROM schema_version";
// Expired memories of anyone go here (the partial index finds them), so they never pile up;
// rows another call holds are left to it (no waits, no deadlocks between purges).
pub(super) const PURGE: &str = "DELETE FROM memories WHERE (owner, key) IN (
    SELECT owner, key FROM memories WHERE expires_at IS NOT NULL AND expires_at <= $1
    LIMIT 1000 FOR UPDATE SKIP LOCKED)";
// One upsert: a live memory keeps created_at and bumps version; an expired one is replaced
// as if new.
pub(super) const REMEMBER: &str = "INSERT INTO memories (owner, key, value, tags, created_at, \
    updated_at, expires_at, version) VALUES ($1, $2, $3, $4::text[], $5, $5, $6::text, 1)
    ON CONFLICT (owner, key) DO UPDATE SET
        value = excluded.value,
        tags = excluded.tags,
        expires_at = excluded.expires_at,
        created_at = CASE WHEN memories.expires_at IS NOT NULL
            AND memories.expires_at <= excluded.updated_at
            THEN excluded.created_at ELSE memories.created_at END,
        version = CASE WHEN memories.expires_at IS NOT NULL
            AND memories.expires_at <= excluded.updated_at
            THEN 1 ELSE memories.version + 1 END,
        updated_at = excluded.updated_at
    RETURNING owner, key, value, tags, created_at, updated_at, expires_at, version";
pub(super) const RECALL: &str =
    "SELECT owner, key, value, tags, created_at, updated_at, expires_at, \
    version FROM memories
    WHERE owner = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)";
pub(super) const SEARCH: &str =
    "SELECT owner, key, value, tags, created_at, updated_at, expires_at, \
    version FROM memories
    WHERE owner = $1 AND (expires_at IS NULL OR expires_at > $2)
      AND ($3::text IS NULL OR strpos(lower(key), $3::text) > 0
           OR strpos(lower(value), $3::text) > 0)
      AND tags @> $4::text[]
    ORDER BY updated_at DESC, key LIMIT $5";
// An expired memory is absent: removed here too, but still NotFound.
pub(super) const FORGET: &str = "DELETE FROM memories WHERE owner = $1 AND key = $2
    RETURNING (expires_at IS NULL OR expires_at > $3)";

/// Applies the missing migrations in one transaction; refuses a schema newer than known.
pub(super) async fn migrate(client: &mut Client) -> Result<(), String> {
    let e = |e: tokio_postgres::Error| format!("migrating: {}", why(&e));
    let tx = client.transaction().await.map_err(e)?;
    tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await
        .map_err(e)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        .await
        .map_err(e)?;
    let applied: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::bigint FROM schema_version",
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(e)?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(format!(
            "schema version {applied} is newer than this backend knows ({known}): upgrade the backend"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(|err| format!("migration {}: {}", i + 1, why(&err)))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await
        .map_err(e)?;
    }
    tx.commit().await.map_err(e)
}
