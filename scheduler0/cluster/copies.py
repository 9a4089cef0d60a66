"""
Copies of each node's execution history on another member, so that what a
node fired outlives the loss of its disk.

No execution record crosses Raft (see L{scheduler0.cluster.history}). Instead
every node sends what it records to one other member, its I{keeper} (the
next member by node id), in compressed batches every L{SHIP_INTERVAL_S}: one
row per batch on the keeper, however many records it holds, and nothing on
the other members. The keeper stores the batches as they come and reads
none of them while the node lives.

The batches of one node form I{generations}: each begins with a checkpoint
(the node's whole executions table, in chunks) followed by the batches of
what it recorded since; once a newer generation's checkpoint is complete,
the keeper drops the older ones, so what it keeps stays near the size of
the node's own (pruned) history. A new generation begins when the node
starts, when its keeper changes, and when it has sent as many records since
its checkpoint as twice what that checkpoint held.

When a member is removed from the cluster (C{DELETE /cluster/members/N},
what an operator does for a node lost for good), its keeper adds the copies
to its own records (pruned as its own), where every history read finds them
with the node's id. So does a keeper that sees a node come back with a new
data directory (a new I{incarnation}) for the copies of the old one. What a
node recorded in the last L{SHIP_INTERVAL_S} or so before it was lost (and,
if its keeper was unreachable, or the node busy past its capacity, since
then) has no copy: copies wait while the node is busy.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from scheduler0.diskspace import storage_failure
from scheduler0.errors import WritesRefused
from scheduler0.store.executions import EXECUTION_COLUMNS

log = Logger()

#: How often a node sends its keeper what it recorded since the last batch.
SHIP_INTERVAL_S = 5.0
#: Records per batch at most.
BATCH_ROWS = 20_000
#: Rows JSON-encoded in one call (see L{encode}).
ENCODE_PIECE_ROWS = 500
#: A checkpoint is read and sent this many rows at a time, with a pause of
#: CHECKPOINT_PAUSE_S in between: it is background work (at most 50,000
#: rows a second, a fifth of a core), and a whole table read and encoded at
#: once made firing late.
CHECKPOINT_ROWS = 5_000
CHECKPOINT_PAUSE_S = 0.1
#: Records waiting for an unreachable keeper at most; past this they are
#: dropped and the next generation's checkpoint carries them instead.
MAX_PENDING_ROWS = 400_000
#: A generation's checkpoint is renewed once this many records (or
#: L{RENEW_FACTOR} times as many as it held, if more) were sent after it: a
#: keeper holds at most about RENEW_FACTOR + 1 times the node's table
#: (compressed, about a third of its size), and each record is encoded
#: about 1 + 1 / RENEW_FACTOR times (3.5 us each on the test machine).
MIN_RENEW_ROWS = 200_000
RENEW_FACTOR = 2
#: Retries after failed sends back off up to this.
MAX_RETRY_S = 60.0
#: Seconds a keeper waits for one batch to be stored.
SEND_TIMEOUT_S = 30.0

KINDS = frozenset(("checkpoint", "last", "batch"))

COPIES_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS history_copies (
        origin INTEGER NOT NULL,
        incarnation TEXT NOT NULL,
        generation INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        rows INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (origin, incarnation, generation, seq))""",
    "CREATE TABLE IF NOT EXISTS history_incarnation (id TEXT NOT NULL)",
)


def encode(rows: list[tuple]) -> bytes:
    """
    A batch of execution rows (in L{EXECUTION_COLUMNS} order) as bytes. Run
    in a thread: the JSON is made L{ENCODE_PIECE_ROWS} rows at a time, since
    the C encoder keeps the GIL for a whole call (35 ms for 20,000 rows,
    which made the reactor's timers late), and zlib lets go of it.
    """
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    pieces = [
        dumps(rows[start : start + ENCODE_PIECE_ROWS])[1:-1]
        for start in range(0, len(rows), ENCODE_PIECE_ROWS)
    ]
    text = "[" + ",".join(piece for piece in pieces if piece) + "]"
    return zlib.compress(text.encode("utf-8"), 1)


def decode(data: bytes) -> list[dict]:
    """The records of a batch made by L{encode} (checked when recorded)."""
    rows = json.loads(zlib.decompress(data))
    if not isinstance(rows, list):
        raise ValueError("a history batch must be a list of rows")
    width = len(EXECUTION_COLUMNS)
    records = []
    for row in rows:
        if isinstance(row, list) and len(row) == width - 1:
            # From a release before response_body (the last column).
            row.append(None)
        if not isinstance(row, list) or len(row) != width:
            raise ValueError(f"a history row must have {width} columns")
        records.append(dict(zip(EXECUTION_COLUMNS, row, strict=True)))
    return records


def keeper_of(node_id: int, members: set[int]) -> int | None:
    """The member after C{node_id} by id (wrapping round), or None alone."""
    others = sorted(m for m in members if m != node_id)
    if not others:
        return None
    later = [m for m in others if m > node_id]
    return later[0] if later else others[0]


def _create(txn: Any) -> str:
    for statement in COPIES_SCHEMA:
        txn.execute(statement)
    txn.execute("SELECT id FROM history_incarnation")
    row = txn.fetchone()
    if row is not None:
        return str(row[0])
    incarnation = str(uuid.uuid4())
    txn.execute("INSERT INTO history_incarnation (id) VALUES (?)", (incarnation,))
    return incarnation


@attrs.define(eq=False)
class HistoryCopies:
    """
    Both sides of the copies on one node: sending its own records to its
    keeper (L{tap} sees every row written, L{ship} sends them), and keeping
    the copies other nodes send it (L{receive}), added to its own records
    once their node has left (L{adopt_departed}).
    """

    clock: IReactorTime
    #: This node's L{scheduler0.store.executions.ExecutionStore}.
    executions: Any
    node_id: int
    #: The member ids now.
    members: Callable[[], set[int]]
    #: send(node_id, meta, data) -> Deferred: a batch to a keeper.
    send: Callable[[int, dict, bytes], Deferred]
    #: Runs a blocking function in a thread (encoding, decoding).
    in_thread: Callable[..., Deferred]
    incarnation: str = ""
    #: Whether the node is busy (past its capacity): copies are background
    #: work and wait while it is, so firing on time comes first.
    busy: Callable[[], bool] = lambda: False
    _pending: list[tuple] = attrs.field(factory=list)
    _keeper: int | None = None
    _generation: int | None = None
    _seq: int = 0
    _checkpoint_rows: int = 0
    _sent_since_checkpoint: int = 0
    _shipping: bool = False
    # After a failed send: not before this instant, and how many failed in a row.
    _retry_at: float = 0.0
    _failures: int = 0
    # Since when sends fail (None: they do not).
    _failing_since: float | None = None
    _loop: Any = None
    #: Keeper side: (origin, incarnation) pairs held, and those being adopted.
    _held: set[tuple[int, str]] = attrs.field(factory=set)
    _adopting: bool = False
    #: What was sent and adopted (for tests and metrics).
    sent_rows: int = 0
    dropped_rows: int = 0
    adopted_rows: int = 0

    @property
    def pool(self) -> Any:
        return self.executions.pool

    async def open(self) -> None:
        """Create the tables; read (or make) this data directory's incarnation."""
        self.incarnation = await self.pool.runInteraction(_create)

        def held(txn: Any) -> list[tuple[int, str]]:
            txn.execute("SELECT DISTINCT origin, incarnation FROM history_copies")
            return [(int(o), str(i)) for o, i in txn.fetchall()]

        self._held = set(await self.pool.runInteraction(held))

    def start(self) -> None:
        """Send and adopt every L{SHIP_INTERVAL_S}."""
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(SHIP_INTERVAL_S, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> None:
        d = Deferred.fromCoroutine(self.ship())
        d.addErrback(lambda f: log.failure("sending history copies failed", f))
        a = Deferred.fromCoroutine(self.adopt_departed())
        a.addErrback(lambda f: log.failure("adopting a departed node's history failed", f))

    # -- the node's own records ---------------------------------------------

    def tap(self, rows: list[tuple]) -> None:
        """Rows the execution store is writing (in column order): send them too."""
        pending = self._pending
        pending.extend(rows)
        if len(pending) > MAX_PENDING_ROWS:
            # The keeper has not taken them for a long while: the next
            # generation's checkpoint carries what is still kept instead.
            self.dropped_rows += len(pending)
            pending.clear()
            self._generation = None

    async def ship(self) -> None:
        """Send what was recorded since the last batch (first a checkpoint, if due)."""
        if self._shipping or self.clock.seconds() < self._retry_at or self.busy():
            return
        self._shipping = True
        try:
            await self._ship()
        except Exception as e:
            # Unreachable keeper, one whose disk is full (or one of a release
            # that keeps no copies): try again later, less often the longer
            # it lasts. Said once, when it begins, and once when it ends.
            self._failures += 1
            delay = min(MAX_RETRY_S, SHIP_INTERVAL_S * 2 ** min(self._failures, 6))
            self._retry_at = self.clock.seconds() + delay
            if self._failing_since is None:
                self._failing_since = self.clock.seconds()
                log.warn(
                    "history copies could not be sent to node {keeper} ({error});"
                    " trying again in {delay:.0f} s, then less often while it lasts",
                    keeper=self._keeper,
                    error=e,
                    delay=delay,
                    event="history_copies_failing",
                )
        else:
            since = self._failing_since
            if since is not None:
                log.info(
                    "history copies sent to node {keeper} again after {seconds:.0f} s"
                    " ({failures} tries failed)",
                    keeper=self._keeper,
                    seconds=self.clock.seconds() - since,
                    failures=self._failures,
                    event="history_copies_sent",
                )
            self._failing_since = None
            self._failures = 0
            self._retry_at = 0.0
        finally:
            self._shipping = False

    async def _ship(self) -> None:
        keeper = keeper_of(self.node_id, self.members())
        if keeper is None:
            self._pending.clear()
            self._generation = None
            return
        renew = self._sent_since_checkpoint >= max(
            MIN_RENEW_ROWS, RENEW_FACTOR * self._checkpoint_rows
        )
        if keeper != self._keeper or self._generation is None or renew:
            try:
                await self._checkpoint(keeper)
            except Exception:
                # The rows it read are no longer pending: a checkpoint that
                # did not reach the keeper is begun again, not skipped.
                self._generation = None
                raise
        while self._pending:
            rows = self._pending[:BATCH_ROWS]
            await self._send("batch", rows)
            del self._pending[: len(rows)]
            self._sent_since_checkpoint += len(rows)

    async def _checkpoint(self, keeper: int) -> None:
        """Begin a generation at C{keeper} with this node's whole table."""
        previous = (self._keeper, self._generation)
        self._keeper = keeper
        self._generation = max(int(self.clock.seconds() * 1000), (self._generation or 0) + 1)
        self._seq = 0
        # Every row tapped so far was queued for writing before this read:
        # the checkpoint has it.
        self._pending.clear()
        after = -1
        total = 0
        while True:
            while self.busy():
                await deferLater(self.clock, CHECKPOINT_PAUSE_S, lambda: None)
            rowid, rows = await self.pool.runInteraction(_chunk_after, after, CHECKPOINT_ROWS)
            last = len(rows) < CHECKPOINT_ROWS
            await self._send("last" if last else "checkpoint", rows)
            total += len(rows)
            after = rowid
            if last:
                break
            await deferLater(self.clock, CHECKPOINT_PAUSE_S, lambda: None)
        self._checkpoint_rows = total
        self._sent_since_checkpoint = 0
        old_keeper, old_generation = previous
        if old_keeper is not None and old_keeper != keeper and old_generation is not None:
            # Its copies are stale now; if it is gone, they go with it.
            meta = {"drop": 1}
            self.send(old_keeper, self._meta(meta), b"").addErrback(lambda f: None)

    def _meta(self, extra: dict) -> dict:
        return {"origin": self.node_id, "incarnation": self.incarnation, **extra}

    async def _send(self, kind: str, rows: list[tuple]) -> None:
        data = await self.in_thread(encode, rows)
        meta = self._meta(
            {"generation": self._generation, "seq": self._seq, "kind": kind, "rows": len(rows)}
        )
        keeper = self._keeper
        if keeper is None:
            raise RuntimeError("history copies: no keeper to send to")
        await self.send(keeper, meta, data)
        self._seq += 1
        self.sent_rows += len(rows)

    # -- the copies this node keeps -----------------------------------------

    async def receive(self, meta: dict, data: bytes) -> dict:
        """Store one batch another node sent (or drop its copies, if it says so)."""
        origin, incarnation = meta["origin"], meta["incarnation"]
        if meta.get("drop"):
            await self.pool.runInteraction(_drop, origin, incarnation)
            self._held.discard((origin, incarnation))
            return {"dropped": True}
        kind = meta["kind"]
        try:
            await self.pool.runInteraction(
                _store,
                origin,
                incarnation,
                meta["generation"],
                meta["seq"],
                kind,
                meta["rows"],
                data,
            )
        except Exception as e:
            cause = storage_failure(e)
            if cause is None:
                raise
            # A full or read-only disk is a state of this node (its disk
            # watcher says so once), not a fault per batch: the sender hears
            # 507 and tries again later.
            raise WritesRefused(
                f"this batch of history copies was not stored: the disk cannot take it ({e})",
                cause=cause,
            ) from None
        self._held.add((origin, incarnation))
        return {"stored": True}

    async def adopt_departed(self) -> None:
        """
        Add to this node's records the copies of nodes that left the cluster,
        and of a node's earlier incarnations (it came back with a new data
        directory); then forget them.
        """
        if self._adopting or not self._held:
            return
        members = self.members()
        newest: dict[int, set[str]] = {}
        for origin, incarnation in self._held:
            newest.setdefault(origin, set()).add(incarnation)
        departed: list[tuple[int, str]] = []
        for origin, incarnations in newest.items():
            if origin not in members:
                departed.extend((origin, i) for i in incarnations)
            elif len(incarnations) > 1:
                departed.extend(await self._older_incarnations(origin, incarnations))
        if not departed:
            return
        self._adopting = True
        try:
            for origin, incarnation in departed:
                await self._adopt(origin, incarnation)
        finally:
            self._adopting = False

    async def _older_incarnations(
        self, origin: int, incarnations: set[str]
    ) -> list[tuple[int, str]]:
        def latest(txn: Any) -> str:
            txn.execute(
                "SELECT incarnation FROM history_copies WHERE origin = ?"
                " ORDER BY generation DESC LIMIT 1",
                (origin,),
            )
            return str(txn.fetchone()[0])

        current = await self.pool.runInteraction(latest)
        return [(origin, i) for i in sorted(incarnations) if i != current]

    async def _adopt(self, origin: int, incarnation: str) -> None:
        keys = await self.pool.runInteraction(_keys, origin, incarnation)
        adopted = 0
        for generation, seq in keys:
            data = await self.pool.runInteraction(_data, origin, incarnation, generation, seq)
            if data is None:
                continue
            try:
                records = await self.in_thread(decode, data)
            except (ValueError, zlib.error) as e:
                log.warn(
                    "a history copy of node {origin} could not be read ({error}); skipped",
                    origin=origin,
                    error=e,
                )
                continue
            for record in records:
                try:
                    self.executions.record(record)
                except ValueError:
                    continue
                adopted += 1
            await self.executions.flush()
        await self.pool.runInteraction(_drop, origin, incarnation)
        self._held.discard((origin, incarnation))
        self.adopted_rows += adopted
        log.info(
            "node {origin} left the cluster (or lost its data): {count} execution records"
            " it made were kept here and are now among this node's",
            origin=origin,
            count=adopted,
        )


def _chunk_after(txn: Any, after: int, limit: int) -> tuple[int, list[tuple]]:
    columns = ", ".join(EXECUTION_COLUMNS)
    txn.execute(
        f"SELECT rowid, {columns} FROM executions WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (after, limit),
    )
    fetched = txn.fetchall()
    if not fetched:
        return after, []
    return fetched[-1][0], [tuple(row[1:]) for row in fetched]


def _store(
    txn: Any,
    origin: int,
    incarnation: str,
    generation: int,
    seq: int,
    kind: str,
    rows: int,
    data: bytes,
) -> None:
    txn.execute(
        "INSERT OR REPLACE INTO history_copies"
        " (origin, incarnation, generation, seq, kind, rows, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (origin, incarnation, generation, seq, kind, rows, data),
    )
    if kind == "last":
        # This generation's checkpoint is whole: the older ones are covered.
        txn.execute(
            "DELETE FROM history_copies WHERE origin = ? AND incarnation = ? AND generation < ?",
            (origin, incarnation, generation),
        )


def _drop(txn: Any, origin: int, incarnation: str) -> None:
    txn.execute(
        "DELETE FROM history_copies WHERE origin = ? AND incarnation = ?", (origin, incarnation)
    )


def _keys(txn: Any, origin: int, incarnation: str) -> list[tuple[int, int]]:
    txn.execute(
        "SELECT generation, seq FROM history_copies WHERE origin = ? AND incarnation = ?"
        " ORDER BY generation, seq",
        (origin, incarnation),
    )
    return [(int(g), int(s)) for g, s in txn.fetchall()]


def _data(txn: Any, origin: int, incarnation: str, generation: int, seq: int) -> bytes | None:
    txn.execute(
        "SELECT data FROM history_copies WHERE origin = ? AND incarnation = ?"
        " AND generation = ? AND seq = ?",
        (origin, incarnation, generation, seq),
    )
    row = txn.fetchone()
    return bytes(row[0]) if row is not None else None


def check_meta(meta: dict) -> dict:
    """The batch's description from a peer request, checked; ValueError names the field."""
    if not isinstance(meta, dict):
        raise ValueError("must be a JSON object")
    origin = meta.get("origin")
    if not isinstance(origin, int) or isinstance(origin, bool) or origin < 1:
        raise ValueError("origin: must be a positive integer")
    out: dict[str, Any] = {"origin": origin}
    incarnation = meta.get("incarnation")
    if not isinstance(incarnation, str) or not 0 < len(incarnation) <= 64:
        raise ValueError("incarnation: must be a string of 1 to 64 characters")
    out["incarnation"] = incarnation
    if meta.get("drop"):
        out["drop"] = 1
        return out
    for field in ("generation", "seq", "rows"):
        value = meta.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{field}: must be a non-negative integer")
        out[field] = value
    if meta.get("kind") not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(sorted(KINDS))}")
    out["kind"] = meta["kind"]
    return out
