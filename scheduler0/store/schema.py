"""
The state machine's SQLite schema: its tables, the columns added to the
tables of older files, and opening a file (page cache, schema).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from scheduler0.store.audit import AUDIT_TABLE
from scheduler0.store.executions import EXECUTIONS_TABLE
from scheduler0.store.rows import _all, _one
from scheduler0.versions import (
    ENTRY_VERSION,
    FIRST_ENTRY_VERSION,
    check_entry_version,
    check_schema_version,
    file_name,
    migrate_schema,
    schema_version,
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS requests (
        request_id TEXT PRIMARY KEY,
        log_index INTEGER NOT NULL,
        result TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS requests_by_index ON requests (log_index)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('applied_index', 0)",
    """CREATE TABLE IF NOT EXISTS projects (
        uuid TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS projects_by_created ON projects (created_at, uuid)",
    """CREATE TABLE IF NOT EXISTS jobs (
        uuid TEXT PRIMARY KEY,
        project_uuid TEXT NOT NULL REFERENCES projects (uuid),
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        callback_url TEXT NOT NULL,
        data TEXT NOT NULL,
        timezone TEXT NOT NULL,
        execution_type TEXT NOT NULL,
        paused INTEGER NOT NULL,
        catch_up_window_s REAL NOT NULL,
        timeout_s REAL NOT NULL,
        retry_max INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        anchor_at TEXT NOT NULL,
        owner INTEGER,
        handover_at TEXT,
        active_since TEXT)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at, uuid)",
    "CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs (project_uuid, created_at, uuid)",
    "CREATE INDEX IF NOT EXISTS jobs_by_paused ON jobs (paused, created_at, uuid)",
    """CREATE TABLE IF NOT EXISTS credentials (
        uuid TEXT PRIMARY KEY,
        api_key TEXT NOT NULL UNIQUE,
        api_secret_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        archived_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS credentials_by_created ON credentials (created_at, uuid)",
    # Callback signing secrets: a project's current one has expires_at NULL;
    # a rotated-out one keeps signing until its expires_at.
    """CREATE TABLE IF NOT EXISTS signing_secrets (
        project_uuid TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        PRIMARY KEY (project_uuid, secret))""",
    # Cluster members; an eligible one may own jobs.
    """CREATE TABLE IF NOT EXISTS members (
        node_id INTEGER PRIMARY KEY,
        address TEXT NOT NULL,
        raft_address TEXT NOT NULL,
        eligible INTEGER NOT NULL)""",
    # The committed execution history: the columns of a node's executions.db.
    EXECUTIONS_TABLE,
    # With execution_id, pruning a job's history walks this index alone.
    """CREATE INDEX IF NOT EXISTS executions_by_job
        ON executions (job_uuid, scheduled_at, execution_id)""",
    "CREATE INDEX IF NOT EXISTS executions_by_project ON executions (project_uuid, scheduled_at)",
    "CREATE INDEX IF NOT EXISTS executions_by_time ON executions (scheduled_at)",
    # The latest committed slot of each job that got further than scheduled.
    """CREATE TABLE IF NOT EXISTS job_progress (
        job_uuid TEXT PRIMARY KEY,
        last_slot TEXT NOT NULL)""",
    # Per node: the seq of its executions.db up to which records were
    # committed, by the releases that replicated every record (read no more).
    """CREATE TABLE IF NOT EXISTS fanin (
        node_id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL)""",
    # Per node, how far it got (record_progress): every slot before
    # done_before of every job it held is sent or recorded, as its scheduler
    # knew the state at log index as_of, in the run of the node that began
    # at log index loaded_at.
    """CREATE TABLE IF NOT EXISTS node_progress (
        node_id INTEGER PRIMARY KEY,
        done_before TEXT NOT NULL,
        loaded_at INTEGER NOT NULL,
        as_of INTEGER NOT NULL)""",
    # Issue 19: the audit log, one record per user write (see store.audit).
    AUDIT_TABLE,
    "CREATE INDEX IF NOT EXISTS audit_by_actor ON audit (actor, seq)",
    # Issue 19: the label index. One row per label of a job, so a selector
    # term key=value (or a bare key) finds its jobs through the primary key;
    # a job's own labels column says which rows to drop when it changes.
    """CREATE TABLE IF NOT EXISTS job_labels (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        job_uuid TEXT NOT NULL,
        PRIMARY KEY (key, value, job_uuid)) WITHOUT ROWID""",
)
# How many jobs each node owns, kept by every command that changes jobs or
# owners: creating jobs picks the least loaded member without counting a
# million index entries per command.
_OWNER_LOADS = """CREATE TABLE IF NOT EXISTS owner_loads (
    node_id INTEGER PRIMARY KEY,
    jobs INTEGER NOT NULL)"""
# Columns added to tables of older files, and what needs them (after L{_SCHEMA}).
_ADDED_COLUMNS = (
    ("jobs", "owner", "INTEGER"),
    ("jobs", "handover_at", "TEXT"),
    # When the job last began to fire as it is now (resumed, or its schedule
    # changed; NULL: since it was created). Slots before it are never owed.
    ("jobs", "active_since", "TEXT"),
    # The log index from which the owner has held the job, and the owner
    # before it with the index from which that one held it (NULL: unknown,
    # from a file older than progress marks).
    ("jobs", "owner_since", "INTEGER"),
    ("jobs", "prev_owner", "INTEGER"),
    ("jobs", "prev_owner_since", "INTEGER"),
    # The committed history of older releases shares the executions columns.
    ("executions", "response_body", "TEXT"),
    # Issue 14: per-job retry pacing, overlap and catch-up policies. Rows
    # written before them read as the defaults (L{ADDED_JOB_DEFAULTS}).
    ("jobs", "retry_delay_s", "REAL NOT NULL DEFAULT 1.0"),
    ("jobs", "retry_max_delay_s", "REAL NOT NULL DEFAULT 60.0"),
    ("jobs", "concurrency_policy", "TEXT NOT NULL DEFAULT 'allow'"),
    ("jobs", "coalesce", "INTEGER NOT NULL DEFAULT 0"),
    # Where a project's failure notices go (NULL: nowhere).
    ("projects", "notify_url", "TEXT"),
    # Issue 19: a paused project fires none of its jobs (each keeps its own
    # paused flag); a credential's scope, the projects it may touch (JSON
    # list; NULL: all) and its role (NULL: write). Older rows: not paused,
    # full access.
    ("projects", "paused", "INTEGER NOT NULL DEFAULT 0"),
    ("credentials", "projects", "TEXT"),
    ("credentials", "role", "TEXT"),
    # Issue 19: a job's labels as canonical JSON ('{}': none, as older rows read).
    ("jobs", "labels", "TEXT NOT NULL DEFAULT '{}'"),
)
_LATE_SCHEMA = (
    # A node's jobs in creation order; also counts each owner's jobs.
    "CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_at, uuid)",
    # Jobs whose name starts with a given text (GET /jobs?name_prefix=): a
    # range of this index, whose matches are then sorted in the list's order
    # (within a project too: store.selection keeps SQLite on this index).
    # Only the name, so it costs every job write and the disk little: at a
    # million jobs 23 MiB, where (name, created_at, uuid) plus a (project,
    # name) index took 151 MiB and 15-35 % more CPU per job created, for
    # searches that take at most about 100 ms without them (bench.lists).
    "CREATE INDEX IF NOT EXISTS jobs_by_name ON jobs (name)",
)
_DUMPED_TABLES = (
    "meta",
    "projects",
    "jobs",
    "credentials",
    "signing_secrets",
    "members",
    "executions",
    "job_progress",
    "fanin",
    "owner_loads",
    "node_progress",
    "audit",
    "job_labels",
)


def _create_schema(txn: Any, new_entry_version: int = ENTRY_VERSION) -> None:
    """
    Create what is missing, adding new columns to the tables of older files.
    A new file starts at entry version C{new_entry_version}.
    """
    # A file an older release wrote (it has a meta table without the row)
    # starts at the first entry version.
    fresh = not _one(txn, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
    for statement in _SCHEMA:
        txn.execute(statement)
    for table, column, kind in _ADDED_COLUMNS:
        if column not in {row[1] for row in _all(txn, f"PRAGMA table_info({table})")}:
            txn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for statement in _LATE_SCHEMA:
        txn.execute(statement)
    txn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('entry_version', ?)",
        (new_entry_version if fresh else FIRST_ENTRY_VERSION,),
    )
    if not _one(txn, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'owner_loads'"):
        txn.execute(_OWNER_LOADS)
        txn.execute(
            "INSERT INTO owner_loads (node_id, jobs)"
            " SELECT owner, COUNT(*) FROM jobs WHERE owner IS NOT NULL GROUP BY owner"
        )


#: The steps of state.db's schema, in order (L{migrate_schema}; its
#: C{PRAGMA user_version} is how many it had). Step 0 brings the file of any
#: release before schema versions (version 0) to this layout. It is also run
#: on every open of a file at the latest version: tables and columns added
#: to L{_SCHEMA} and L{_ADDED_COLUMNS} reach files of the same version. A
#: change that is not additive is a new step.
_STEPS = (_create_schema,)
STATE_SCHEMA_VERSION = len(_STEPS)


def migrate_state(
    txn: Any, name: str | None = None, new_entry_version: int = ENTRY_VERSION
) -> None:
    """
    Bring a state file (or a snapshot image restored into one) to this
    release's schema; L{UnsupportedVersion} when a newer release wrote it.
    A new file starts at entry version C{new_entry_version}.
    """
    name = name or file_name(txn)
    create = partial(_create_schema, new_entry_version=new_entry_version)
    migrate_schema(txn, (create, *_STEPS[1:]), create, name)
    check_entry_version(stored_entry_version(txn), name)


def stored_entry_version(txn: Any) -> int:
    """
    The entry version a state file (a cursor, or a connection to an image)
    says its cluster writes (1: none said, as the releases before versions).
    """
    if not txn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone():
        return FIRST_ENTRY_VERSION
    row = txn.execute("SELECT value FROM meta WHERE key = 'entry_version'").fetchone()
    return int(row[0]) if row else FIRST_ENTRY_VERSION


def check_image(source: Any, name: str) -> None:
    """
    Refuse (L{UnsupportedVersion}) a state image (a connection to it) that a
    newer release wrote: its schema version or entry version is past this
    release's. Checked before it replaces anything.
    """
    check_schema_version(schema_version(source), STATE_SCHEMA_VERSION, name)
    check_entry_version(stored_entry_version(source), name)


# Pages of state.db SQLite may keep in memory (KiB when negative). Inserting
# jobs under random uuids changes pages all over the primary key's index; at
# a million jobs that index is about 50 MiB, and with the default 2 MiB cache
# each command read most of it back from the file (inserting 400,000 jobs in
# commands of 10,000 took 8.8 s of SQLite time with 2 MiB, 5.7 s with 64 MiB).
STATE_CACHE_KIB = 65536


def _open(txn: Any, new_entry_version: int = ENTRY_VERSION) -> None:
    txn.execute(f"PRAGMA cache_size = -{STATE_CACHE_KIB}")
    migrate_state(txn, new_entry_version=new_entry_version)
