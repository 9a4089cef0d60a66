"""
The replicated state machine: projects, jobs and credentials in SQLite, and
for the cluster the members, which node owns each job, and the committed
execution history with each job's progress.

L{StateStore.apply} is deterministic: the same command applied to the same rows
gives the same rows and the same result on every node. It never reads the clock
or random numbers; every id and time comes in the command. The applied log index
is written in the same transaction as the change, so a crash can never apply a
command twice or lose one that the index claims.

The tables are in L{scheduler0.store.schema}, the handlers of the commands
in L{scheduler0.store.handlers} and L{scheduler0.store.cluster_handlers}
(applied by L{scheduler0.store.apply}), their argument checks in
L{scheduler0.store.checks}, the rows as values in L{scheduler0.store.rows},
and snapshot images in L{scheduler0.store.snapshots}.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed

from scheduler0.labels import Selector
from scheduler0.model import CONCURRENCY_POLICIES, JOB_COLUMNS
from scheduler0.secret_hash import key_id_of
from scheduler0.store.apply import CLIENT_KEY_PREFIX, HANDLERS, REQUEST_MEMORY, _apply
from scheduler0.store.audit import audit_page
from scheduler0.store.cluster_handlers import covers_job, handled_through
from scheduler0.store.commands import Command
from scheduler0.store.executions import execution_filters, latest_of, query_page
from scheduler0.store.rows import (
    _CREDENTIAL_SCOPE,
    _CREDENTIALS,
    _JOBS,
    _PLACED_JOB,
    _PROJECT_READ,
    _PUBLIC_CREDENTIALS,
    CREDENTIAL_COLUMNS,
    PUBLIC_CREDENTIAL_COLUMNS,
    _all,
    _all_members,
    _chunks,
    _job,
    _one,
    _one_known,
    _page,
    _placed_job,
    _progress_reports,
    _read_project,
    _scoped_credential,
)
from scheduler0.store.schema import _DUMPED_TABLES, STATE_CACHE_KIB, _open
from scheduler0.store.selection import index_total, job_source, where_clause
from scheduler0.store.snapshots import (
    _image_of_reader,
    _open_reader,
    _restore_image,
    _snapshot_image,
)
from scheduler0.versions import ENTRY_VERSION

__all__ = [
    "CLIENT_KEY_PREFIX",
    "CONCURRENCY_POLICIES",
    "CREDENTIAL_COLUMNS",
    "HANDLERS",
    "JOB_COLUMNS",
    "PUBLIC_CREDENTIAL_COLUMNS",
    "REQUEST_MEMORY",
    "STATE_CACHE_KIB",
    "StateStore",
    "covers_job",
    "handled_through",
]


def _public_scoped(row: tuple | None) -> dict | None:
    return _scoped_credential(row, PUBLIC_CREDENTIAL_COLUMNS)


@attrs.define(eq=False)
class StateStore:
    """Projects, jobs and credentials in one SQLite file, changed only by L{apply}."""

    pool: Any
    #: Runs a blocking call on some thread other than the pool's; with it a
    #: snapshot is copied beside the pool instead of inside it (see snapshot).
    run_blocking: Callable[..., Deferred] | None = None
    #: The entry version a new file starts at: this release's, but the
    #: first for a node joining a cluster (it learns the cluster's from the
    #: log or a snapshot; L{scheduler0.versions}).
    new_entry_version: int = ENTRY_VERSION

    def open(self) -> Deferred:
        """
        Create the schema if it is missing, or migrate it; size the page
        cache for many jobs. A file a newer release wrote fails with
        L{scheduler0.versions.UnsupportedVersion}.
        """
        return self.pool.runInteraction(_open, self.new_entry_version)

    def close(self) -> Deferred:
        """Release the connection pool."""
        self.pool.close()
        return succeed(None)

    def apply(self, index: int, command: Command) -> Deferred:
        """
        Apply C{command} as log entry C{index} in one transaction with the new
        applied index. An index at or below the applied one is skipped.
        """
        return self.pool.runInteraction(_apply, index, command)

    def make_durable(self) -> Deferred:
        """
        Sync every commit so far to disk (a WAL checkpoint syncs the WAL and
        the database), for files opened without a sync per commit.
        """

        def checkpoint(txn: Any) -> None:
            txn.execute("PRAGMA wal_checkpoint(FULL)")
            txn.fetchall()

        return self.pool.runInteraction(checkpoint)

    def applied_index(self) -> Deferred:
        """The index of the last applied command (0 for a fresh store)."""
        return self._scalar("SELECT value FROM meta WHERE key = 'applied_index'")

    # -- reads ------------------------------------------------------------------

    def entry_version(self) -> Deferred:
        """
        The entry version the cluster writes (L{scheduler0.versions}): this
        release's for a new data directory, 1 for one an older release wrote
        until every member reads the newer one.
        """
        return self._scalar("SELECT value FROM meta WHERE key = 'entry_version'")

    def entry_version_index(self) -> Deferred:
        """
        The log index of the C{set_entry_version} that set the entry version
        (0: none did; it came with a new file or from an older release).
        """
        return self.pool.runInteraction(
            lambda txn: (
                _one(txn, "SELECT value FROM meta WHERE key = 'entry_version_index'") or (0,)
            )[0]
        )

    def _scalar(self, sql: str, params: tuple = ()) -> Deferred:
        return self.pool.runInteraction(lambda txn: _one_known(txn, sql, params)[0])

    def _row(self, decode: Callable, sql: str, params: tuple) -> Deferred:
        return self.pool.runInteraction(lambda txn: decode(_one(txn, sql, params)))

    def _listing(
        self, decode: Callable, select: str, count: str, params: tuple, limit: int, offset: int
    ) -> Deferred:
        try:
            limit, offset = _page(limit, offset)
        except ValueError:
            return fail()

        def read(txn: Any) -> tuple[list, int]:
            rows = _all(txn, select + " LIMIT ? OFFSET ?", params + (limit, offset))
            total = _one_known(txn, count, params)[0]
            return [decode(row) for row in rows], total

        return self.pool.runInteraction(read)

    def get_project(self, uuid: str) -> Deferred:
        """The project with C{uuid} (with C{paused: true} when paused), or None."""
        return self._row(
            _read_project, f"SELECT {_PROJECT_READ} FROM projects WHERE uuid = ?", (uuid,)
        )

    def get_project_by_name(self, name: str) -> Deferred:
        """The project named C{name}, or None."""
        return self._row(
            _read_project, f"SELECT {_PROJECT_READ} FROM projects WHERE name = ?", (name,)
        )

    def list_projects(
        self, limit: int = 50, offset: int = 0, uuids: Collection[str] | None = None
    ) -> Deferred:
        """
        A page of projects ordered by creation, and the total count; with
        C{uuids}, only those projects (a scoped credential's).
        """
        clause, params = "", tuple[str, ...]()
        if uuids is not None:
            wanted = tuple(sorted(uuids))
            clause = f" WHERE uuid IN ({', '.join('?' * len(wanted))})" if wanted else " WHERE 0"
            params = wanted
        return self._listing(
            _read_project,
            f"SELECT {_PROJECT_READ} FROM projects{clause} ORDER BY created_at, uuid",
            f"SELECT COUNT(*) FROM projects{clause}",
            params,
            limit,
            offset,
        )

    def paused_projects(self) -> Deferred:
        """The uuids of the paused projects, as a set (the scheduler fires none of their jobs)."""
        return self.pool.runInteraction(
            lambda txn: {row[0] for row in _all(txn, "SELECT uuid FROM projects WHERE paused = 1")}
        )

    def project_jobs_page(
        self,
        project_uuid: str,
        node_id: int | None,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
    ) -> Deferred:
        """
        Up to C{limit} of the active (not paused) jobs of C{project_uuid} in
        creation order, after the position C{after}, shaped as
        L{owned_jobs_page}'s: those C{node_id} owns, or (None) all of them.
        """
        try:
            limit, _ = _page(limit, 0)
        except ValueError:
            return fail()
        where = "project_uuid = ? AND paused = 0"
        params: tuple = (project_uuid,)
        if node_id is not None:
            where += " AND owner = ?"
            params = (*params, node_id)
        if after is not None:
            where += " AND (created_at, uuid) > (?, ?)"
            params = (*params, after[0], after[1])
        sql = f"{_PLACED_JOB} WHERE {where} ORDER BY created_at, uuid LIMIT ?"
        return self.pool.runInteraction(
            lambda txn: [_placed_job(row) for row in _all(txn, sql, (*params, limit))]
        )

    def audit_page(
        self,
        filters: Mapping[str, Any],
        limit: int = 50,
        before_seq: int | None = None,
        offset: int = 0,
    ) -> Deferred:
        """
        Audit records newest first (L{scheduler0.store.audit.audit_page}):
        (records, how many match, whether more follow).
        """
        return self.pool.runInteraction(audit_page, dict(filters), limit, before_seq, offset)

    def get_job(self, uuid: str) -> Deferred:
        """The job with C{uuid}, or None."""
        return self._row(_job, f"SELECT {_JOBS} FROM jobs WHERE uuid = ?", (uuid,))

    def get_jobs(self, uuids: list) -> Deferred:
        """The jobs among C{uuids} that exist, in the order asked for."""
        wanted = list(uuids)

        def read(txn: Any) -> list[dict]:
            found: dict[str, dict] = {}
            for chunk, marks in _chunks(wanted):
                for row in _all(txn, f"SELECT {_JOBS} FROM jobs WHERE uuid IN ({marks})", chunk):
                    found[row[0]] = _job(row)
            return [found[uuid] for uuid in wanted if uuid in found]

        return self.pool.runInteraction(read)

    def list_jobs(
        self,
        project_uuid: str | None = None,
        paused: bool | None = None,
        limit: int = 50,
        offset: int = 0,
        after: tuple[str, str] | None = None,
        selector: Selector | None = None,
        name_prefix: str | None = None,
        project_uuids: Collection[str] | None = None,
    ) -> Deferred:
        """
        A page of jobs ordered by creation, optionally filtered (by project,
        paused, a label C{selector}, answered through the label index:
        L{scheduler0.store.selection}; a C{name_prefix}, exactly and case
        included: a range of the C{jobs_by_name} index; C{project_uuids}, the
        projects of a scoped credential), and the total count. With C{after}
        = (created_at, uuid) the page starts after that position (found
        through the index) and C{offset} is not skipped.
        """
        try:
            limit, offset = _page(limit, 0 if after is not None else offset)
        except ValueError:
            return fail()

        def read(txn: Any) -> tuple[list, int]:
            source, where, params = job_source(
                txn,
                project_uuid=project_uuid,
                paused=paused,
                selector=selector,
                name_prefix=name_prefix,
                project_uuids=project_uuids,
            )
            select = f"SELECT {_JOBS} FROM {source}"
            if after is None:
                paged = (*params, limit, offset)
                sql = f"{select}{where_clause(where)} ORDER BY created_at, uuid LIMIT ? OFFSET ?"
            else:
                paged = (*params, after[0], after[1], limit)
                positioned = [*where, "(created_at, uuid) > (?, ?)"]
                sql = f"{select}{where_clause(positioned)} ORDER BY created_at, uuid LIMIT ?"
            rows = _all(txn, sql, paged)
            total = None
            if name_prefix is None and project_uuids is None:
                total = index_total(
                    txn, project_uuid=project_uuid, paused=paused, selector=selector
                )
            if total is None:
                count = f"SELECT COUNT(*) FROM {source}{where_clause(where)}"
                total = _one_known(txn, count, tuple(params))[0]
            return [_job(row) for row in rows], total

        return self.pool.runInteraction(read)

    def count_jobs(self, project_uuid: str) -> Deferred:
        """How many jobs belong to C{project_uuid}."""
        return self._scalar("SELECT COUNT(*) FROM jobs WHERE project_uuid = ?", (project_uuid,))

    def all_jobs(self) -> Deferred:
        """Every job, ordered by creation (scheduler start-up)."""
        return self.pool.runInteraction(
            lambda txn: [
                _job(row)
                for row in _all(txn, f"SELECT {_JOBS} FROM jobs ORDER BY created_at, uuid")
            ]
        )

    def jobs_page(self, after: tuple[str, str] | None = None, limit: int = 1000) -> Deferred:
        """
        Up to C{limit} jobs in creation order, starting after the position
        C{after} = (created_at, uuid) of the last job of the previous page
        (None: from the first). The scheduler reads every job this way at
        start-up, so no more than a page of rows is in memory at once.
        """
        try:
            limit, _ = _page(limit, 0)
        except ValueError:
            return fail()
        if after is None:
            sql = f"SELECT {_JOBS} FROM jobs ORDER BY created_at, uuid LIMIT ?"
            params: tuple = (limit,)
        else:
            created_at, uuid = after
            sql = (
                f"SELECT {_JOBS} FROM jobs WHERE (created_at, uuid) > (?, ?)"
                " ORDER BY created_at, uuid LIMIT ?"
            )
            params = (created_at, uuid, limit)
        return self.pool.runInteraction(lambda txn: [_job(row) for row in _all(txn, sql, params)])

    # -- cluster reads ------------------------------------------------------------

    def members(self) -> Deferred:
        """Every member as {node_id, address, raft_address, eligible}, by node id."""
        return self.pool.runInteraction(_all_members)

    def owner_counts(self) -> Deferred:
        """{node_id or None: how many jobs it owns}; None counts the unowned jobs."""

        def read(txn: Any) -> dict[int | None, int]:
            counts: dict[int | None, int] = dict(
                _all(txn, "SELECT node_id, jobs FROM owner_loads ORDER BY node_id")
            )
            unowned = _one_known(txn, "SELECT COUNT(*) FROM jobs WHERE owner IS NULL")[0]
            if unowned:
                counts[None] = unowned
            return counts

        return self.pool.runInteraction(read)

    def jobs_owned_by(
        self, node_id: int | None, after_uuid: str | None = None, limit: int = 1000
    ) -> Deferred:
        """
        Up to C{limit} uuids of the jobs C{node_id} owns (None: the unowned
        ones) in creation order, after the job C{after_uuid} (the last of the
        previous page). Fails with C{KeyError} if that job no longer exists.
        """
        try:
            limit, _ = _page(limit, 0)
        except ValueError:
            return fail()
        owned = "owner IS NULL" if node_id is None else "owner = ?"
        owner: tuple = () if node_id is None else (node_id,)

        def read(txn: Any) -> list[str]:
            if after_uuid is None:
                sql = f"SELECT uuid FROM jobs WHERE {owned} ORDER BY created_at, uuid LIMIT ?"
                return [row[0] for row in _all(txn, sql, (*owner, limit))]
            position = _one(txn, "SELECT created_at FROM jobs WHERE uuid = ?", (after_uuid,))
            if position is None:
                raise KeyError(f"after_uuid: no job with uuid {after_uuid}")
            sql = (
                f"SELECT uuid FROM jobs WHERE {owned} AND (created_at, uuid) > (?, ?)"
                " ORDER BY created_at, uuid LIMIT ?"
            )
            return [row[0] for row in _all(txn, sql, (*owner, position[0], after_uuid, limit))]

        return self.pool.runInteraction(read)

    def ownership_of(self, uuids: list) -> Deferred:
        """{uuid: (owner, handover_at)} for those of C{uuids} that exist."""
        wanted = list(uuids)

        def read(txn: Any) -> dict[str, tuple]:
            found: dict[str, tuple] = {}
            for chunk, marks in _chunks(wanted):
                for uuid, owner, handover_at in _all(
                    txn,
                    f"SELECT uuid, owner, handover_at FROM jobs WHERE uuid IN ({marks})",
                    chunk,
                ):
                    found[uuid] = (owner, handover_at)
            return found

        return self.pool.runInteraction(read)

    def owned_jobs_of(self, node_id: int | None, uuids: list) -> Deferred:
        """
        The jobs among C{uuids} that C{node_id} owns (None: whoever owns
        them), shaped as L{owned_jobs_page}'s.
        """
        wanted = list(uuids)
        # "+owner": the uuids pick the rows. Left to itself the planner walks
        # every job the node owns through jobs_by_owner for each chunk, which
        # made each create_jobs cost in proportion to the jobs already there.
        owned = "" if node_id is None else " AND +owner = ?"
        extra: tuple = () if node_id is None else (node_id,)

        def read(txn: Any) -> list[dict]:
            return [
                _placed_job(row)
                for chunk, marks in _chunks(wanted)
                for row in _all(
                    txn, f"{_PLACED_JOB} WHERE uuid IN ({marks}){owned}", (*chunk, *extra)
                )
            ]

        return self.pool.runInteraction(read)

    def owned_jobs_page(
        self, node_id: int | None, after: tuple[str, str] | None = None, limit: int = 1000
    ) -> Deferred:
        """
        L{jobs_page} for just the jobs C{node_id} owns (None: the unowned
        ones), each job with three more keys: C{owner}, C{handover_at}, and
        C{active_since} (when it was last resumed or rescheduled, or None).
        """
        try:
            limit, _ = _page(limit, 0)
        except ValueError:
            return fail()
        owned = "owner IS NULL" if node_id is None else "owner = ?"
        params: tuple = () if node_id is None else (node_id,)
        select = f"{_PLACED_JOB} WHERE {owned}"
        if after is None:
            sql = f"{select} ORDER BY created_at, uuid LIMIT ?"
            params = (*params, limit)
        else:
            sql = f"{select} AND (created_at, uuid) > (?, ?) ORDER BY created_at, uuid LIMIT ?"
            params = (*params, after[0], after[1], limit)

        def read(txn: Any) -> list[dict]:
            return [_placed_job(row) for row in _all(txn, sql, params)]

        return self.pool.runInteraction(read)

    def fanin_seq(self, node_id: int) -> Deferred:
        """The seq of C{node_id}'s executions.db up to which records are committed (0: none)."""

        def read(txn: Any) -> int:
            row = _one(txn, "SELECT seq FROM fanin WHERE node_id = ?", (node_id,))
            return 0 if row is None else row[0]

        return self.pool.runInteraction(read)

    def progress_reports(self) -> Deferred:
        """node_id -> its last committed progress report (done_before, loaded_at, as_of)."""
        return self.pool.runInteraction(_progress_reports)

    def job_progress(self, uuids: list) -> Deferred:
        """{uuid: last committed slot that got further than scheduled}, for those that have one."""
        wanted = list(uuids)

        def read(txn: Any) -> dict[str, str]:
            found: dict[str, str] = {}
            for chunk, marks in _chunks(wanted):
                found.update(
                    _all(
                        txn,
                        f"SELECT job_uuid, last_slot FROM job_progress WHERE job_uuid IN ({marks})",
                        chunk,
                    )
                )
            return found

        return self.pool.runInteraction(read)

    def query_executions(
        self,
        job_uuid: str | None = None,
        project_uuid: str | None = None,
        state: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Deferred:
        """
        A page of committed records, newest scheduled_at first, and the total
        matching: the same filters and shape as L{ExecutionStore.query}.
        """
        try:
            clause, params = execution_filters(
                job_uuid, project_uuid, state, since, until, limit, offset
            )
        except ValueError:
            return fail()
        return self.pool.runInteraction(query_page, clause, params, limit, offset)

    def latest_executions(self, uuids: list) -> Deferred:
        """job_uuid -> its newest committed record, for those of C{uuids} that have one."""
        return self.pool.runInteraction(latest_of, list(uuids))

    def get_credential_by_key(self, api_key: str) -> Deferred:
        """The credential for C{api_key} including its secret hash and archive time, or None."""
        return self._row(
            lambda row: _scoped_credential(row, CREDENTIAL_COLUMNS),
            f"SELECT {_CREDENTIALS}, {_CREDENTIAL_SCOPE} FROM credentials WHERE api_key = ?",
            (api_key,),
        )

    def get_credential(self, uuid: str) -> Deferred:
        """
        The credential with C{uuid} without its secret hash, or None; a
        scoped one carries C{projects} and C{role}.
        """
        return self._row(
            _public_scoped,
            f"SELECT {_PUBLIC_CREDENTIALS}, {_CREDENTIAL_SCOPE} FROM credentials WHERE uuid = ?",
            (uuid,),
        )

    def list_credentials(self, limit: int = 50, offset: int = 0) -> Deferred:
        """A page of credentials (without hashes) ordered by creation, and the total."""
        return self._listing(
            _public_scoped,
            f"SELECT {_PUBLIC_CREDENTIALS}, {_CREDENTIAL_SCOPE} FROM credentials"
            " ORDER BY created_at, uuid",
            "SELECT COUNT(*) FROM credentials",
            (),
            limit,
            offset,
        )

    def signing_secrets(self) -> Deferred:
        """Every project's signing secrets: {project_uuid: [(secret, expires_at or None)]}."""

        def read(txn: Any) -> dict[str, list[tuple[str, str | None]]]:
            found: dict[str, list[tuple[str, str | None]]] = {}
            rows = _all(
                txn,
                "SELECT project_uuid, secret, expires_at FROM signing_secrets"
                " ORDER BY project_uuid, created_at DESC, secret",
            )
            for project_uuid, secret, expires_at in rows:
                found.setdefault(project_uuid, []).append((secret, expires_at))
            return found

        return self.pool.runInteraction(read)

    def credential_hash_key_ids(self) -> Deferred:
        """
        How many live (not archived) credentials have their secret hashed
        under each key: {key id: count}, with None for pbkdf2 hashes.
        """

        def read(txn: Any) -> dict[str | None, int]:
            rows = _all(
                txn,
                "SELECT api_secret_hash FROM credentials WHERE archived_at IS NULL",
            )
            found: dict[str | None, int] = {}
            for (stored,) in rows:
                key_id = key_id_of(stored or "")
                found[key_id] = found.get(key_id, 0) + 1
            return found

        return self.pool.runInteraction(read)

    def count_credentials(self) -> Deferred:
        """How many credentials exist, archived ones included."""
        return self._scalar("SELECT COUNT(*) FROM credentials")

    def snapshot(self, path: str | None = None) -> Deferred:
        """
        The whole state machine as a SQLite database image made with the
        backup API, as it is when this is called: written to the file
        C{path} (fires with None), or as bytes.

        With C{run_blocking} the copy is made from a second connection that
        opens a read transaction in turn with the pool's commands, so it sees
        exactly the commands applied before the call; the copy then runs on
        another thread while the pool goes on applying (WAL lets that reader
        and the writer run side by side). Without it the copy is made inside
        the pool and every command after the call waits for it.
        """
        if self.run_blocking is None:
            return self.pool.runInteraction(_snapshot_image, path)
        return Deferred.fromCoroutine(self._snapshot_beside(self.run_blocking, path))

    async def _snapshot_beside(
        self, run_blocking: Callable[..., Deferred], path: str | None
    ) -> bytes | None:
        reader = await self.pool.runInteraction(_open_reader)
        return await run_blocking(_image_of_reader, reader, path)

    def restore(self, image: Any) -> Deferred:
        """
        Replace the whole state machine with C{image} (from L{snapshot}):
        bytes, or an image on disk with a C{path}.
        """
        if getattr(image, "path", None) is None:
            image = bytes(image)
        return self.pool.runInteraction(_restore_image, image)

    def dump(self) -> Deferred:
        """Every row of every table as sorted lists: equal dumps mean equal state."""

        def read(txn: Any) -> dict:
            return {
                table: sorted(list(row) for row in _all(txn, f"SELECT * FROM {table}"))
                for table in _DUMPED_TABLES
            }

        return self.pool.runInteraction(read)
