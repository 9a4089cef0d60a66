"""
Node-local execution records (executions.db). Not replicated: each node
writes what it fired here, buffered and group-committed, and prunes it to the
newest C{ExecutionHistoryPerJob} per job plus a week of failures. In a
cluster the API merges every member's records (scheduler0.cluster.history);
what crosses Raft is only how far each node got (its progress mark).

The validation, filters and reads here are shared with the history that
older releases committed into the state machine (L{scheduler0.store.state}).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from scheduler0.model import EXECUTION_COLUMNS
from scheduler0.timeutil import format_instant, utc_from_timestamp
from scheduler0.values import execution_row, instant_text
from scheduler0.versions import migrate_schema

_logger = Logger()

_COLUMNS = ", ".join(EXECUTION_COLUMNS)
FAILURE_RETENTION = timedelta(days=7)
# Between these, only the jobs written since the last prune are pruned: at
# 8,000 executions/s over 800,000 records the one-statement prune of every
# job took 27 s of CPU a minute; per job, only what was written, far less.
FULL_PRUNE_INTERVAL_S = 86400.0
# The writer is behind when its write has been going on this long, or this
# many records wait for the next one. Every slot is a row (a slot shed too),
# and rows cost 20-35 us each on the SQLite thread (five B-trees): at two or
# three times a node's capacity the records of the slots it sheds alone come
# faster than they can be written. While behind, the slots a job has shed
# are recorded as one row (its latest, saying how many before it) per write,
# so the backlog stays bounded and the slots sent are all recorded.
WRITER_BEHIND_S = 1.0
WRITER_BEHIND_RECORDS = 50_000
# When a write fails (a full disk, a read-only file), the records stay in
# memory and the write is tried again after this long, doubling per failure
# up to the longest wait, on the reactor's clock.
HOLD_RETRY_FIRST_S = 0.25
HOLD_RETRY_MAX_S = 5.0
#: Default bound of records held in memory while they cannot be written
#: (ExecutionRecordsMaxPending): at it the node fires no new slots.
MAX_PENDING_DEFAULT = 100_000
#: The error of an execution found in flight (sent, no outcome) when the
#: node starts: it crashed (or was killed) while the POST was out.
IN_DOUBT_ERROR = "node restarted while this was in flight; it may have been delivered"
#: The skip reason whose records may be folded (the scheduler's).
FOLDABLE_REASON = "overloaded"

# The executions table, the same in a node's executions.db and in the
# replicated state (its committed history).
EXECUTIONS_TABLE = """CREATE TABLE IF NOT EXISTS executions (
        execution_id TEXT PRIMARY KEY,
        job_uuid TEXT NOT NULL,
        project_uuid TEXT,
        scheduled_at TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        node_id TEXT,
        started_at TEXT,
        finished_at TEXT,
        status_code INTEGER,
        error TEXT,
        skip_reason TEXT,
        response_body TEXT)"""

_SCHEMA = (
    EXECUTIONS_TABLE,
    "CREATE INDEX IF NOT EXISTS executions_by_job ON executions (job_uuid, scheduled_at)",
    # Pages are in (scheduled_at, execution_id) order, and many records share
    # an instant (every job "0 * * * *" fires at :00): with execution_id in
    # the index a page is read in order, with no sort of all the records of
    # its instant (at 1,000,000 jobs that sort took 10-200 ms a page).
    # Releases before this indexed (.., scheduled_at) only: replaced.
    "CREATE INDEX IF NOT EXISTS executions_by_project_id"
    " ON executions (project_uuid, scheduled_at, execution_id)",
    "DROP INDEX IF EXISTS executions_by_project",
    "CREATE INDEX IF NOT EXISTS executions_by_time_id ON executions (scheduled_at, execution_id)",
    "DROP INDEX IF EXISTS executions_by_time",
    # GET /executions?state=failed (or skipped): the newest of those without
    # a scan. Partial, so the usual running -> succeeded rewrite of a row
    # never touches it; other states are found through executions_by_time_id.
    "DROP INDEX IF EXISTS executions_by_state",
    "CREATE INDEX IF NOT EXISTS executions_by_failure_id"
    " ON executions (state, scheduled_at, execution_id)"
    " WHERE state = 'failed' OR state = 'skipped'",
    "DROP INDEX IF EXISTS executions_by_failure",
    # Releases before progress marks kept an outbox order for the fan-in
    # (a seq column and this index); the column stays, unused.
    "DROP INDEX IF EXISTS executions_by_seq",
    # The records still in flight (sent, no outcome yet): few at any time,
    # and all of them left by a crash when the node starts (see
    # resolve_in_flight). Most rows are written once, already final, and
    # never enter it.
    "CREATE INDEX IF NOT EXISTS executions_in_flight ON executions (job_uuid, scheduled_at)"
    " WHERE state = 'running' OR state = 'scheduled'",
)


# A trusted record's row in column order, in one call.
_row_of_record = operator.itemgetter(*EXECUTION_COLUMNS)


# The name older callers use.
def _row(execution: Mapping) -> tuple:
    """L{execution_row} under its older name."""
    return execution_row(execution)


def execution_filters(
    job_uuid: str | None,
    project_uuid: str | None,
    state: str | None,
    since: Any,
    until: Any,
    limit: int,
    offset: int,
) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters for L{ExecutionStore.query}; checks paging."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("job_uuid", job_uuid),
        ("project_uuid", project_uuid),
        ("state", state),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("scheduled_at >= ?")
        params.append(instant_text("since", since))
    if until is not None:
        where.append("scheduled_at < ?")
        params.append(instant_text("until", until))
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    return clause, params


def execution_record(row: tuple) -> dict:
    """An execution row (in L{EXECUTION_COLUMNS} order) as the dict reads return."""
    record = dict(zip(EXECUTION_COLUMNS, row, strict=True))
    # The column is TEXT (SQLite stores the integer id as text): node ids are integers.
    node_id = record["node_id"]
    if isinstance(node_id, str) and node_id.isdigit():
        record["node_id"] = int(node_id)
    return record


def query_page(
    txn: Any, clause: str, params: list[Any], limit: int, offset: int
) -> tuple[list[dict], int]:
    """
    One page of an C{executions} table (here or the state machine's),
    newest scheduled_at first, and the total matching C{clause}.
    """
    txn.execute(
        f"SELECT {_COLUMNS} FROM executions{clause} "
        "ORDER BY scheduled_at DESC, execution_id DESC LIMIT ? OFFSET ?",
        tuple(params) + (limit, offset),
    )
    items = [execution_record(row) for row in txn.fetchall()]
    txn.execute(f"SELECT COUNT(*) FROM executions{clause}", tuple(params))
    return items, txn.fetchone()[0]


def latest_of(txn: Any, job_uuids: list[str]) -> dict[str, dict]:
    """job_uuid -> its newest record in an C{executions} table, for those that have one."""
    latest = {}
    for job_uuid in job_uuids:
        txn.execute(
            f"SELECT {_COLUMNS} FROM executions WHERE job_uuid = ? "
            "ORDER BY scheduled_at DESC, execution_id DESC LIMIT 1",
            (job_uuid,),
        )
        row = txn.fetchone()
        if row is not None:
            latest[job_uuid] = execution_record(row)
    return latest


def _create_schema(txn: Any) -> None:
    """Create what is missing; drop what older releases kept for the fan-in."""
    for statement in _SCHEMA:
        txn.execute(statement)
    add_response_body(txn)


#: The steps of executions.db's schema, in order (L{migrate_schema}): step 0
#: brings the file of any release before schema versions (version 0) to
#: this layout, and is run again on files of the latest version for what
#: is added within it.
_STEPS = (_create_schema,)
EXECUTIONS_SCHEMA_VERSION = len(_STEPS)


def _migrate(txn: Any) -> None:
    migrate_schema(txn, _STEPS, _create_schema)


def resolve_in_flight(txn: Any, finished_at: str) -> dict[str, list[str]]:
    """
    Mark every record left C{running} or C{scheduled} (a crash while its
    POST was out) C{failed} with L{IN_DOUBT_ERROR}; job_uuid -> the
    scheduled_at of each, oldest first.
    """
    txn.execute(
        "SELECT job_uuid, scheduled_at FROM executions"
        " WHERE state = 'running' OR state = 'scheduled' ORDER BY job_uuid, scheduled_at"
    )
    found: dict[str, list[str]] = {}
    for job_uuid, scheduled_at in txn.fetchall():
        found.setdefault(job_uuid, []).append(scheduled_at)
    if found:
        txn.execute(
            "UPDATE executions SET state = 'failed', error = ?, finished_at = ?"
            " WHERE state = 'running' OR state = 'scheduled'",
            (IN_DOUBT_ERROR, finished_at),
        )
    return found


_HELD_TABLE = EXECUTIONS_TABLE.replace(
    "CREATE TABLE IF NOT EXISTS executions", "CREATE TEMP TABLE held_executions"
)
_HELD_VIEW = (
    f"CREATE TEMP VIEW executions AS SELECT {_COLUMNS} FROM main.executions"
    " WHERE execution_id NOT IN (SELECT execution_id FROM temp.held_executions)"
    f" UNION ALL SELECT {_COLUMNS} FROM temp.held_executions"
)


def read_with_held(txn: Any, rows: list[tuple], read: Any, *args: Any) -> Any:
    """
    Run C{read(txn, *args)} over the file's records with C{rows} (records
    not yet written) in place of any of the same id. They go into a table
    in memory (SQLite's temp store) behind a temporary view that shadows
    C{executions}, so every read works unchanged and nothing is written to
    the file: this answers while the disk is full.
    """
    txn.execute("PRAGMA temp_store = MEMORY")
    txn.execute("DROP VIEW IF EXISTS temp.executions")
    txn.execute("DROP TABLE IF EXISTS temp.held_executions")
    txn.execute(_HELD_TABLE)
    try:
        txn.executemany(
            f"INSERT OR REPLACE INTO temp.held_executions ({_COLUMNS})"
            f" VALUES ({', '.join('?' * len(EXECUTION_COLUMNS))})",
            rows,
        )
        txn.execute(_HELD_VIEW)
        return read(txn, *args)
    finally:
        txn.execute("DROP VIEW IF EXISTS temp.executions")
        txn.execute("DROP TABLE IF EXISTS temp.held_executions")


def add_response_body(txn: Any) -> None:
    """Give an executions table of an older release its response_body column."""
    txn.execute("PRAGMA table_info(executions)")
    if "response_body" not in {row[1] for row in txn.fetchall()}:
        txn.execute("ALTER TABLE executions ADD COLUMN response_body TEXT")


_INSERT = f"INSERT INTO executions ({_COLUMNS}) VALUES ({', '.join('?' * len(EXECUTION_COLUMNS))})"
_UPSERT = f"{_INSERT} ON CONFLICT (execution_id) DO UPDATE SET " + ", ".join(
    f"{column} = excluded.{column}" for column in EXECUTION_COLUMNS[1:]
)
# The columns indexed besides the key. A row written again (its outcome after
# its "running" record) nearly always keeps them, and an update that does not
# name them leaves their indexes' pages alone: with this form the second write
# of a row costs about half the first (measured on a replay of 8,000
# executions/s: 92 -> 75 us of the SQLite thread per execution).
_INDEXED = ("job_uuid", "project_uuid", "scheduled_at")
_NARROW_UPSERT = (
    f"{_INSERT} ON CONFLICT (execution_id) DO UPDATE SET "
    + ", ".join(
        f"{column} = excluded.{column}"
        for column in EXECUTION_COLUMNS[1:]
        if column not in _INDEXED
    )
    + " WHERE "
    + " AND ".join(f"executions.{column} IS excluded.{column}" for column in _INDEXED)
)


def _write(txn: Any, rows: list[tuple]) -> None:
    """Upsert C{rows} (in column order)."""
    txn.executemany(_NARROW_UPSERT, rows)
    if txn.rowcount != len(rows):
        # Some row's indexed columns changed, and it was left as it was:
        # write every row in full (the others again, to the same values).
        txn.executemany(_UPSERT, rows)


def prune_history(
    txn: Any, keep: int, failed_since: str, job_uuids: list[str] | None = None
) -> int:
    """
    Delete all but the newest C{keep} records of each job, sparing failures
    scheduled at or after C{failed_since}; only of C{job_uuids} when given
    (the state machine prunes the jobs a commit touched). Rows deleted.
    """
    if job_uuids is not None:
        deleted = 0
        for job_uuid in job_uuids:
            # The newest record past the ones kept, then everything from it
            # back: both walk the job's entries of executions_by_job (only
            # records of one instant are sorted by execution_id).
            txn.execute(
                "SELECT scheduled_at, execution_id FROM executions WHERE job_uuid = ?"
                " ORDER BY scheduled_at DESC, execution_id DESC LIMIT 1 OFFSET ?",
                (job_uuid, keep),
            )
            cutoff = txn.fetchone()
            if cutoff is None:
                continue
            txn.execute(
                "DELETE FROM executions WHERE job_uuid = ?"
                " AND (scheduled_at, execution_id) <= (?, ?)"
                " AND NOT (state = 'failed' AND scheduled_at >= ?)",
                (job_uuid, cutoff[0], cutoff[1], failed_since),
            )
            deleted += txn.rowcount
        return deleted
    return prune_history(txn, keep, failed_since, _all_jobs(txn))


def _all_jobs(txn: Any) -> list[str]:
    """Every job with records (walking executions_by_job once)."""
    txn.execute("SELECT DISTINCT job_uuid FROM executions")
    return [row[0] for row in txn.fetchall()]


@attrs.define(eq=False)
class ExecutionStore:
    """This node's execution records, buffered and written in group commits."""

    pool: Any
    clock: IReactorTime
    history_per_job: int = 100
    flush_delay: float = 0
    _buffer: dict = attrs.field(factory=dict, init=False)
    _delayed: Any = attrs.field(default=None, init=False)
    _pruning: Any = attrs.field(default=None, init=False)
    flush_count: int = attrs.field(default=0, init=False)
    # The write going on (None: none), and who waits for the one after it.
    _writing: Deferred | None = attrs.field(default=None, init=False)
    _waiting: list[Deferred] = attrs.field(factory=list, init=False)
    # Jobs written since the last prune, and when the last full prune began.
    _written_jobs: set[str] = attrs.field(factory=set, init=False)
    _last_full_prune: float | None = attrs.field(default=None, init=False)
    # When the write going on began; while the writer is behind, job_uuid ->
    # [its latest shed record, slots shed since the last write began, the
    # first one's scheduled_at]; and how many records were folded away.
    _write_started: float = attrs.field(default=0.0, init=False)
    _folded: dict[str, list] = attrs.field(factory=dict, init=False)
    folded: int = attrs.field(default=0, init=False)
    #: Called with each write's rows (in column order) as it begins, or None.
    tap: Any = None
    #: Records kept in memory at most while writes fail: at this bound
    #: L{firing_stopped} answers True (ExecutionRecordsMaxPending).
    max_pending: int = MAX_PENDING_DEFAULT
    # While writes fail: since when (None: they do not), why, the timer of
    # the next try and the wait before the one after; how many rows the
    # write going on carries.
    _held_since: float | None = attrs.field(default=None, init=False)
    held_cause: str | None = attrs.field(default=None, init=False)
    _retry: Any = attrs.field(default=None, init=False)
    _retry_delay: float = attrs.field(default=HOLD_RETRY_FIRST_S, init=False)
    _writing_rows: int = attrs.field(default=0, init=False)
    _stopped: bool = attrs.field(default=False, init=False)
    #: Writes that failed, and the times the bound stopped firing.
    write_failures: int = attrs.field(default=0, init=False)
    firing_stops: int = attrs.field(default=0, init=False)
    #: job_uuid -> scheduled_at of each record found in flight at L{open}
    #: (a crash while its POST was out), now recorded failed with
    #: L{IN_DOUBT_ERROR}; the scheduler takes them as it loads the jobs.
    in_doubt: dict[str, list[str]] = attrs.field(factory=dict, init=False)

    def start_pruning(self, interval_s: float = 60.0) -> None:
        """Prune every C{interval_s} seconds, so disk use stays flat however long it runs."""
        from twisted.internet.task import LoopingCall

        def prune_logged() -> Deferred:
            if self.held():
                return succeed(None)  # nothing can be written now
            d = self.prune_periodically()
            d.addErrback(lambda f: _logger.failure("pruning execution records failed", f))
            return d

        self._pruning = LoopingCall(prune_logged)
        self._pruning.clock = self.clock
        self._pruning.start(interval_s, now=False)

    def stop_pruning(self) -> None:
        if self._pruning is not None and self._pruning.running:
            self._pruning.stop()
        self._pruning = None

    def open(self) -> Deferred:
        """
        Create (or migrate) the schema, and resolve what a crash left in
        flight (see L{resolve_in_flight} and L{in_doubt}).
        """
        return Deferred.fromCoroutine(self._open())

    async def _open(self) -> None:
        await self.pool.runInteraction(_migrate)
        now = format_instant(utc_from_timestamp(self.clock.seconds()))
        self.in_doubt = await self.pool.runInteraction(resolve_in_flight, now)
        if self.in_doubt:
            _logger.warn(
                "{count} executions were in flight when this node stopped: recorded as failed"
                " ({error}); those still inside their job's catch-up window are sent again"
                " with the same execution_id",
                count=sum(len(slots) for slots in self.in_doubt.values()),
                error=IN_DOUBT_ERROR,
                event="executions_in_doubt",
            )

    # -- while records cannot be written ----------------------------------------

    def held(self) -> bool:
        """Whether the last write failed: records wait in memory until one succeeds."""
        return self._held_since is not None

    def pending(self) -> int:
        """Records not yet written (buffered, folded, or in the write going on)."""
        return len(self._buffer) + len(self._folded) + self._writing_rows

    def firing_stopped(self) -> bool:
        """
        Whether the node should fire no new slot: writes fail and
        L{max_pending} records wait. What it does not fire stays owed, and
        is caught up (inside each job's window) once records are written again.
        """
        if self._held_since is None or self.pending() < self.max_pending:
            return False
        if not self._stopped:
            self._stopped = True
            self.firing_stops += 1
            _logger.error(
                "{pending} execution records are held in memory (ExecutionRecordsMaxPending"
                " {max_pending}) and cannot be written ({cause}): this node fires no new"
                " slots until they are; those it misses are caught up then",
                pending=self.pending(),
                max_pending=self.max_pending,
                cause=self.held_cause,
                event="execution_records_firing_stopped",
            )
        return True

    def run_refusal(self) -> str | None:
        """
        Why a run-now must not be sent now (None: it may): while firing is
        stopped (L{firing_stopped}) a run could not be recorded either.
        """
        if not self.firing_stopped():
            return None
        return (
            f"this run was not sent: {self.pending()} execution records are held in memory"
            f" (ExecutionRecordsMaxPending {self.max_pending}) because they cannot be written"
            f" ({self.held_cause}), so this node could not record it; retry once they are"
            " written (GET /healthcheck shows execution_records)"
        )

    def hold_state(self) -> dict:
        """What the health check says of the records: held or not, how many, since when, why."""
        since = self._held_since
        return {
            "held": since is not None,
            "pending": self.pending(),
            "max_pending": self.max_pending,
            "held_since": None if since is None else format_instant(utc_from_timestamp(since)),
            "cause": self.held_cause,
            "firing_stopped": since is not None and self.pending() >= self.max_pending,
        }

    def _hold(self, failure: Failure) -> None:
        """A write failed: keep the records, say so once, and try again later."""
        self.write_failures += 1
        cause = failure.getErrorMessage() or repr(failure.value)
        if self._held_since is None:
            self._held_since = self.clock.seconds()
            self.held_cause = cause
            self._retry_delay = HOLD_RETRY_FIRST_S
            _logger.warn(
                "execution records are being held in memory: {cause} ({pending} wait; firing"
                " goes on until {max_pending} do)",
                cause=cause,
                pending=self.pending(),
                max_pending=self.max_pending,
                event="execution_records_held",
            )
        else:
            self._retry_delay = min(HOLD_RETRY_MAX_S, self._retry_delay * 2)
        if self._retry is None or not self._retry.active():
            self._retry = self.clock.callLater(self._retry_delay, self._try_again)

    def _try_again(self) -> None:
        self._retry = None
        # A failure is already told (and held) by flush itself.
        self.flush().addErrback(lambda _: None)

    def _written(self) -> None:
        """A write succeeded: if records were held, they are written again."""
        since = self._held_since
        if since is None:
            return
        self._held_since = None
        self.held_cause = None
        self._stopped = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        _logger.info(
            "execution records written again after {seconds:.1f} s of failed writes",
            seconds=self.clock.seconds() - since,
            event="execution_records_written",
        )

    def close(self) -> Deferred:
        """Write buffered records, then release the pool."""
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        self.stop_pruning()
        try:
            await self.flush()
        except Exception as e:
            # Their slots were sent or skipped; a restart sends again those
            # it finds no record of (at least once, same execution_id).
            _logger.error(
                "{pending} execution records could not be written before stopping: {cause}",
                pending=self.pending(),
                cause=str(e),
                event="execution_records_lost_at_stop",
            )
        finally:
            if self._retry is not None and self._retry.active():
                self._retry.cancel()
            self._retry = None
            self.pool.close()

    def record(self, execution: dict, *, trusted: bool = False) -> None:
        """
        Buffer C{execution} (upsert by execution_id); every record made in one
        reactor turn is written in one transaction. Bad records raise
        C{ValueError} naming the field.

        A C{trusted} record (the scheduler's own: every column present, in
        canonical form) is kept as it is and turned into a row only when
        written, so a slot whose "running" record is replaced by its outcome
        within one flush costs one conversion, and none is validated.
        """
        if trusted:
            if execution["skip_reason"] == FOLDABLE_REASON and self.behind():
                self._fold(execution)
            else:
                self._buffer[execution["execution_id"]] = execution
        else:
            row = execution_row(execution)
            self._buffer[row[0]] = row
        if self._delayed is None and self._held_since is None:
            # While held, the retry timer writes them (see _hold).
            self._delayed = self.clock.callLater(self.flush_delay, self._scheduled_flush)

    def behind(self) -> bool:
        """
        Whether the writer is behind: its write has been going on for more
        than L{WRITER_BEHIND_S}, or more than L{WRITER_BEHIND_RECORDS} wait.
        Shed slots' records are folded while it is.
        """
        return self.backlogged() or (
            self._writing is not None
            and self.clock.seconds() - self._write_started > WRITER_BEHIND_S
        )

    def backlogged(self) -> bool:
        """
        Whether more than L{WRITER_BEHIND_RECORDS} records that cannot be
        folded (the slots sent) wait for the writer: the node makes them
        faster than they can be written, and should send less.
        """
        return self._writing is not None and len(self._buffer) > WRITER_BEHIND_RECORDS

    def _fold(self, execution: dict) -> None:
        """Keep only the latest shed record of its job until the next write."""
        held = self._folded.get(execution["job_uuid"])
        if held is None:
            self._folded[execution["job_uuid"]] = [execution, 1, execution["scheduled_at"]]
        else:
            held[0] = execution
            held[1] += 1
            self.folded += 1

    def _unfold(self) -> None:
        """Move the folded records into the buffer, each saying what it stands for."""
        folded, self._folded = self._folded, {}
        buffer = self._buffer
        for latest, count, first in folded.values():
            if count > 1:
                latest = dict(
                    latest,
                    error=f"{count - 1} earlier slots of this job since {first} were skipped"
                    " (overloaded) too; recorded in this one while the node's record writer"
                    " was behind",
                )
            buffer[latest["execution_id"]] = latest

    def _scheduled_flush(self) -> None:
        self._delayed = None
        # A failure is told once, by _hold, when the records begin to be held.
        self.flush().addErrback(lambda _: None)

    def flush(self) -> Deferred:
        """
        Write every buffered record now; fire once they are written. One
        write runs at a time: while one is going on, what is buffered waits
        and goes in the next, in one transaction (so a node that cannot
        write as fast as it fires writes larger batches, and never queues
        writes without bound ahead of the reads that wait for them).
        """
        if self._delayed is not None and self._delayed.active():
            self._delayed.cancel()
        self._delayed = None
        if self._writing is not None:
            waiter: Deferred = Deferred()
            self._waiting.append(waiter)
            return waiter
        if self._folded:
            self._unfold()
        if not self._buffer:
            return succeed(None)
        row_of = _row_of_record
        rows = [value if type(value) is tuple else row_of(value) for value in self._buffer.values()]
        self._buffer = {}
        if self.tap is not None:
            self.tap(rows)
        self.flush_count += 1
        self._write_started = self.clock.seconds()
        self._written_jobs.update([row[1] for row in rows])
        self._writing_rows = len(rows)
        written = self._writing = self.pool.runInteraction(_write, rows)

        def restore(failure: Any) -> Any:
            # Keep the records for the next flush unless newer ones replaced them.
            for row in rows:
                self._buffer.setdefault(row[0], row)
            self._writing_rows = 0
            self._hold(failure)
            return failure

        def done(result: Any) -> Any:
            self._writing_rows = 0
            self._written()
            return result

        def next_write(result: Any) -> Any:
            self._writing = None
            waiting, self._waiting = self._waiting, []
            if waiting:
                following = self.flush()

                def tell(outcome: Any) -> Any:
                    for waiter in waiting:
                        if isinstance(outcome, Failure):
                            waiter.errback(outcome)
                        else:
                            waiter.callback(None)
                    return None

                following.addBoth(tell)
            return result

        written.addCallbacks(done, restore)
        written.addBoth(next_write)
        return written

    def query(
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
        A page of records, newest scheduled_at first, and the total matching.
        C{since} is inclusive and C{until} exclusive, both on scheduled_at.
        """
        try:
            clause, params = execution_filters(
                job_uuid, project_uuid, state, since, until, limit, offset
            )
        except ValueError:
            return fail()
        return self._after_flush(query_page, clause, params, limit, offset)

    def _after_flush(self, read: Any, *args: Any) -> Deferred:
        """
        C{read} once every buffered record is written; while they cannot be
        (a full disk), at once over the file and the records held in memory.
        A read never fails because a write did.
        """
        if self._held_since is not None:
            return self._read_held(read, *args)
        d = self.flush()
        d.addCallbacks(
            lambda _: self.pool.runInteraction(read, *args),
            lambda _: self._read_held(read, *args),
        )
        return d

    def _read_held(self, read: Any, *args: Any) -> Deferred:
        """C{read} over the file with the records not yet written in place."""
        if self._folded:
            self._unfold()
        row_of = _row_of_record
        rows = [value if type(value) is tuple else row_of(value) for value in self._buffer.values()]
        return self.pool.runInteraction(read_with_held, rows, read, *args)

    def last_slots(self) -> Deferred:
        """
        job_uuid -> the latest scheduled_at of a slot that got further than
        C{scheduled} (sent, finished or skipped). A slot recorded only as
        scheduled never reached the network, so it is still owed.
        """

        def read(txn: Any) -> dict[str, str]:
            txn.execute(
                "SELECT job_uuid, MAX(scheduled_at) FROM executions"
                " WHERE state != 'scheduled' GROUP BY job_uuid"
            )
            return dict(txn.fetchall())

        return self._after_flush(read)

    def last_slots_of(self, job_uuids: list[str]) -> Deferred:
        """
        L{last_slots} for just C{job_uuids}: the scheduler asks a page of jobs
        at a time, so a million jobs never need one dict of all their slots
        nor a scan of every record at once.
        """
        wanted = list(job_uuids)

        def read(txn: Any) -> dict[str, str]:
            found = {}
            for job_uuid in wanted:
                # Walks the job's records newest first and stops at the
                # first that got further than scheduled (nearly always the
                # newest), instead of reading all its history.
                txn.execute(
                    "SELECT scheduled_at FROM executions"
                    " WHERE job_uuid = ? AND state != 'scheduled'"
                    " ORDER BY scheduled_at DESC LIMIT 1",
                    (job_uuid,),
                )
                row = txn.fetchone()
                if row is not None:
                    found[job_uuid] = row[0]
            return found

        return self._after_flush(read)

    def latest_per_job(self, job_uuids: list[str]) -> Deferred:
        """job_uuid -> its newest record, for those of C{job_uuids} that have one."""
        return self._after_flush(latest_of, list(job_uuids))

    def prune(self) -> Deferred:
        """
        Keep the newest C{history_per_job} records per job plus failures scheduled
        in the last 7 days; fire with the number of rows deleted.
        """
        self._last_full_prune = self.clock.seconds()
        return self._after_flush(prune_history, self.history_per_job, self._failed_since(), None)

    def prune_written(self) -> Deferred:
        """
        L{prune} for just the jobs written since the last prune (a job not
        written has nothing new to prune, except failures turning a week old,
        which the daily full prune takes).
        """
        d = self.flush()

        def pruned(_: Any) -> Deferred:
            jobs, self._written_jobs = self._written_jobs, set()
            d = self.pool.runInteraction(
                prune_history, self.history_per_job, self._failed_since(), sorted(jobs)
            )

            def keep_jobs(failure: Any) -> Any:
                self._written_jobs.update(jobs)
                return failure

            return d.addErrback(keep_jobs)

        return d.addCallback(pruned)

    def prune_periodically(self) -> Deferred:
        """A full prune the first time and once a day; L{prune_written} otherwise."""
        last = self._last_full_prune
        if last is None or self.clock.seconds() - last >= FULL_PRUNE_INTERVAL_S:
            return self.prune()
        return self.prune_written()

    def _failed_since(self) -> str:
        return format_instant(utc_from_timestamp(self.clock.seconds()) - FAILURE_RETENTION)
