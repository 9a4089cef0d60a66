"""
The Raft consensus core: a pure, deterministic state machine with no I/O.

Nothing here reads a clock, touches a socket or a file, or imports Twisted.
Time is counted in ticks and randomness comes from an injected
``random.Random``, so a seeded simulator (``harness.raftsim``)
replays any run exactly.

Inputs (each returns nothing; effects accumulate until the next ``ready()``):

- ``tick()`` -- one unit of logical time.  The adapter picks the tick
  length; with 50 ms ticks the defaults (election 10 ticks, heartbeat 1)
  give 0.5-1 s election timeouts and 50 ms heartbeats.
- ``step(message)`` -- a peer message from ``scheduler0.raft.messages``.
- ``propose(data, request_id="") -> token | None`` -- a client write; ``None``
  when this node is not a leader able to take writes.  The outcome arrives as
  a :class:`ProposalResult` with the same token.
- ``read_index() -> token`` -- a linearizable read barrier; a
  :class:`ReadResult` says at which applied index the read may be served.
- ``change_membership(add_learner=..., remove=...) -> token | None`` and
  ``transfer_leadership(target) -> bool``.
- ``snapshot_done(index, data)`` -- the state machine was captured at
  ``index``; the log up to ``index - trailing`` may be dropped.
- ``persisted(index, term)`` -- storage made the log durable up to ``index``
  (``advance(ready)`` calls it for you).

Output: ``ready() -> Ready``, a batch of effects the adapter performs strictly
in this order, then calls ``advance(ready)``::

    while node.has_ready():
        ready = node.ready()
        storage.save(ready)            # 1. persist: snapshot, truncation,
                                       #    entries, hard state, one fsync
        for m in ready.messages:       # 2. send
            transport.send(m.recipient, codec.encode(m))
        if ready.snapshot:             # 3. apply (restore, then entries)
            state_machine.restore(ready.snapshot[1])
        for entry in ready.committed:
            state_machine.apply(entry)
        for result in ready.results:   # 4. reply to proposals and reads
            answer(result)
        node.advance(ready)

When ``ready.want_snapshot`` (or on the adapter's own timer), the adapter
captures the state machine at ``node.applied``, calls
``meta = node.snapshot_done(node.applied, data)`` and stores ``(meta, data)``
durably (``storage.save_snapshot``) before performing the next Ready, whose
``compact_to`` then drops the covered log prefix.  Restart: load a
``BootState`` from storage, restore the state machine from its snapshot, and
``RaftNode.create(node_id, initial_config, boot=...)``; the first Ready
re-applies committed entries after the snapshot.

Persisting before sending is what makes a vote or an append ack safe across
a crash.  Safety rules enforced here: one vote per term, a leader commits by
counting replicas only for entries of its own term, the commit index never
decreases, committed entries are never truncated.
"""

from __future__ import annotations

import random
from typing import Protocol

import attrs

from scheduler0.raft.codec import decode_config, encode_config
from scheduler0.raft.messages import (
    CONFIG,
    NOOP,
    NORMAL,
    AppendEntries,
    AppendResponse,
    ClusterConfig,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"

PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"


class RaftError(Exception):
    """A caller broke the core's contract (never raised for peer input)."""


@attrs.frozen
class RaftSettings:
    """Tunables, in ticks and counts."""

    #: Base election timeout; a follower waits a random [E, 2E) ticks.
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_batch_entries: int = 512
    max_batch_bytes: int = 1 << 20
    #: Append messages in flight per follower in replicate state.
    max_inflight: int = 64
    pre_vote: bool = True
    check_quorum: bool = True
    snapshot_chunk_bytes: int = 1 << 20
    #: Applied entries beyond the last snapshot before ``Ready.want_snapshot``.
    snapshot_threshold: int = 8192
    #: Entries kept in the log behind a snapshot so slightly lagging
    #: followers catch up without a snapshot transfer.
    snapshot_trailing: int = 1024
    #: Bytes of entries applied since the last snapshot that also ask for one
    #: (a few large entries should not keep the log in memory for long).
    snapshot_threshold_bytes: int = 64 << 20
    #: The trailing entries kept behind a snapshot are at most this many bytes.
    snapshot_trailing_bytes: int = 16 << 20
    #: A first leader whose voter set came from configuration appends it to
    #: the log, so members that started with none learn it.
    log_initial_config: bool = False

    def __attrs_post_init__(self) -> None:
        for name in (
            "election_ticks",
            "heartbeat_ticks",
            "max_batch_entries",
            "max_inflight",
            "snapshot_chunk_bytes",
            "snapshot_threshold",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"RaftSettings.{name} must be at least 1")
        if self.heartbeat_ticks >= self.election_ticks:
            raise ValueError("RaftSettings.heartbeat_ticks must be below election_ticks")
        if self.snapshot_trailing < 0:
            raise ValueError("RaftSettings.snapshot_trailing must not be negative")


@attrs.frozen
class ProposalResult:
    """Outcome of ``propose``/``change_membership``: ``ok`` once the entry
    committed and is in this Ready's (or an earlier Ready's) ``committed``."""

    token: int
    index: int
    ok: bool
    reason: str = ""


@attrs.frozen
class ReadResult:
    """Outcome of ``read_index``: when ``ok``, the state machine has applied
    at least ``index`` and a read served now is linearizable."""

    token: int
    ok: bool
    index: int = 0
    reason: str = ""


class SnapshotImage(Protocol):
    """
    A snapshot image: bytes, or an image kept on disk (a
    L{scheduler0.raft.storage.SnapshotFile}) measured and sliced like bytes,
    so that the core reads only the chunks it sends; C{bytes(image)} reads it
    whole.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice, /) -> bytes: ...

    def __bytes__(self) -> bytes: ...


@attrs.frozen
class BootState:
    """What storage recovered at start-up."""

    hard_state: HardState = HardState()
    snapshot: SnapshotMeta | None = None
    snapshot_data: SnapshotImage | None = None
    entries: tuple[Entry, ...] = ()


@attrs.frozen
class Ready:
    """One batch of effects; perform in field order (see module docstring).

    Storage applies, in one transaction: ``snapshot`` (save it and drop
    entries it covers), delete entries with index >= ``truncate_from``
    (0 = none), insert ``entries``, save ``hard_state`` (None = unchanged),
    delete entries with index <= ``compact_to`` (0 = none).
    """

    hard_state: HardState | None
    snapshot: tuple[SnapshotMeta, bytes] | None
    truncate_from: int
    entries: tuple[Entry, ...]
    compact_to: int
    messages: tuple[Message, ...]
    committed: tuple[Entry, ...]
    results: tuple[ProposalResult | ReadResult, ...]
    want_snapshot: bool

    def must_sync(self) -> bool:
        """Whether this batch changes durable state."""
        return bool(
            self.hard_state
            or self.snapshot
            or self.truncate_from
            or self.entries
            or self.compact_to
        )


@attrs.define(eq=False)
class Progress:
    """The leader's view of one follower."""

    match: int = 0
    next: int = 1
    state: str = PROBE
    probe_sent: bool = False
    inflight: list[int] = attrs.Factory(list)
    recent_active: bool = True
    #: Leader tick at which ``match`` last advanced (stall detection).
    progress_at: int = 0
    snapshot_index: int = 0
    snapshot_offset: int = 0
    #: The commit index last told to this follower (in an append or heartbeat).
    commit_sent: int = 0

    def become_probe(self) -> None:
        self.state = PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = REPLICATE
        self.next = max(self.next, self.match + 1)
        self.inflight.clear()


@attrs.define(eq=False)
class _PendingRead:
    token: int
    index: int
    context: int
    acks: set[str]


@attrs.define(eq=False)
class RaftNode:
    """One Raft peer.  Build with :meth:`create`."""

    node_id: str
    settings: RaftSettings
    rng: random.Random

    term: int = 0
    vote: str = ""
    commit: int = 0
    applied: int = 0
    role: str = FOLLOWER
    leader_id: str = ""
    config: ClusterConfig = ClusterConfig(frozenset())

    _log: list[Entry] = attrs.Factory(list)
    _base_index: int = 0
    _base_term: int = 0
    _snapshot: SnapshotMeta | None = None
    _snapshot_data: SnapshotImage | None = None
    _configs: list[tuple[int, ClusterConfig]] = attrs.Factory(list)
    _stable: int = 0
    _unstable_from: int = 1
    _truncate_from: int = 0
    _compact_to: int = 0
    _install: tuple[SnapshotMeta, bytes] | None = None
    _incoming: tuple[SnapshotMeta, bytearray] | None = None
    _saved_hard_state: HardState = HardState()
    _snapshot_requested: bool = False
    _applied_bytes: int = 0

    _ticks: int = 0
    _election_elapsed: int = 0
    _heartbeat_elapsed: int = 0
    _timeout: int = 0
    _votes: dict[str, bool] = attrs.Factory(dict)
    _progress: dict[str, Progress] = attrs.Factory(dict)
    _append_dirty: bool = False
    _outbox: list[Message] = attrs.Factory(list)
    _results: list[ProposalResult | ReadResult] = attrs.Factory(list)
    _pending: dict[int, tuple[int, int]] = attrs.Factory(dict)
    _reads: list[_PendingRead] = attrs.Factory(list)
    _read_context: int = 0
    _next_token: int = 1
    _transferee: str = ""
    _transfer_elapsed: int = 0

    # ------------------------------------------------------------------ setup

    @classmethod
    def create(
        cls,
        node_id: str,
        initial_config: ClusterConfig,
        *,
        settings: RaftSettings | None = None,
        rng: random.Random | None = None,
        boot: BootState | None = None,
    ) -> RaftNode:
        """A node recovering ``boot`` from storage.

        ``initial_config`` is the voter set a brand-new cluster starts with
        (the Replicas list); a node joining later passes an empty config and
        learns membership from the leader.  A stored snapshot or config entry
        overrides it.
        """
        if not node_id:
            raise ValueError("node_id must not be empty")
        node = cls(node_id, settings or RaftSettings(), rng or random.Random())
        boot = boot or BootState()
        node._configs = [(0, initial_config)]
        if boot.snapshot is not None:
            snap = boot.snapshot
            node._snapshot = snap
            node._snapshot_data = boot.snapshot_data
            node._base_index, node._base_term = snap.index, snap.term
            node._configs = [(snap.index, snap.config)]
            node.applied = snap.index
        expected = node._base_index + 1
        for entry in boot.entries:
            if entry.index <= node._base_index:
                continue
            if entry.index != expected:
                raise RaftError(f"stored log has a gap at index {expected}")
            node._log.append(entry)
            node._note_config(entry)
            expected += 1
        node._stable = node.last_index
        node._unstable_from = node.last_index + 1
        hard = boot.hard_state
        node.term, node.vote = hard.term, hard.vote
        node.commit = max(node._base_index, min(hard.commit, node.last_index))
        node._saved_hard_state = HardState(node.term, node.vote, node.commit)
        node.config = node._configs[-1][1]
        node._reset_timeout()
        return node

    # --------------------------------------------------------------- log view

    @property
    def last_index(self) -> int:
        return self._base_index + len(self._log)

    @property
    def last_term(self) -> int:
        return self._log[-1].term if self._log else self._base_term

    @property
    def first_index(self) -> int:
        """Lowest index still held as an entry."""
        return self._base_index + 1

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted or absent."""
        if index == self._base_index:
            return self._base_term
        if index < self._base_index or index > self.last_index:
            return None
        return self._log[index - self._base_index - 1].term

    def entry(self, index: int) -> Entry:
        return self._log[index - self._base_index - 1]

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index <= hi (clamped to what is held)."""
        lo = max(lo, self.first_index)
        hi = min(hi, self.last_index)
        if lo > hi:
            return []
        return self._log[lo - self._base_index - 1 : hi - self._base_index]

    @property
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    @property
    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._snapshot

    @property
    def snapshot_image(self) -> SnapshotImage | None:
        """The image of the latest snapshot (None: there is none)."""
        return self._snapshot_data

    def _note_config(self, entry: Entry) -> None:
        if entry.kind == CONFIG:
            self._configs.append((entry.index, decode_config(entry.data)))
            self.config = self._configs[-1][1]

    def _config_at(self, index: int) -> ClusterConfig:
        found = self._configs[0][1]
        for at, config in self._configs:
            if at <= index:
                found = config
        return found

    @property
    def config_index(self) -> int:
        return self._configs[-1][0]

    # ----------------------------------------------------------------- inputs

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._ticks += 1
        self._election_elapsed += 1
        if self.role == LEADER:
            self._heartbeat_elapsed += 1
            if self._transferee:
                self._transfer_elapsed += 1
                if self._transfer_elapsed >= self.settings.election_ticks:
                    self._transferee = ""
            if self._election_elapsed >= self.settings.election_ticks:
                self._election_elapsed = 0
                if self.settings.check_quorum and not self._quorum_active():
                    self._become_follower(self.term, "")
                    return
                for pr in self._progress.values():
                    pr.recent_active = False
            if self._heartbeat_elapsed >= self.settings.heartbeat_ticks:
                self._heartbeat_elapsed = 0
                self._broadcast_heartbeat()
        elif self._election_elapsed >= self._timeout and self._promotable():
            self._campaign(pre=self.settings.pre_vote)

    def step(self, m: Message) -> None:
        """Handle one message from a peer."""
        if m.recipient != self.node_id or m.sender == self.node_id:
            return
        if m.term > self.term:
            if isinstance(m, VoteRequest):
                lease = (
                    (self.settings.check_quorum or self.settings.pre_vote)
                    and self.leader_id != ""
                    and self._election_elapsed < self.settings.election_ticks
                )
                if lease and not m.transfer:
                    return
            if isinstance(m, VoteRequest) and m.pre_vote:
                pass
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                pass
            else:
                leader = (
                    m.sender if isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)) else ""
                )
                self._become_follower(m.term, leader)
        elif m.term < self.term:
            if isinstance(m, (AppendEntries, Heartbeat)):
                # Tell a deposed leader about the newer term so it steps down.
                self._send(AppendResponse(self.term, self.node_id, m.sender, False))
            elif isinstance(m, VoteRequest) and m.pre_vote:
                self._send(VoteResponse(self.term, self.node_id, m.sender, False, pre_vote=True))
            elif isinstance(m, VoteRequest):
                self._send(VoteResponse(self.term, self.node_id, m.sender, False))
            return

        if isinstance(m, VoteRequest):
            self._on_vote_request(m)
        elif isinstance(m, VoteResponse):
            self._on_vote_response(m)
        elif isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
            if self.role == LEADER:
                return  # impossible by election safety; ignore
            if self.role != FOLLOWER:
                self._become_follower(self.term, m.sender)
            self.leader_id = m.sender
            self._election_elapsed = 0
            if isinstance(m, AppendEntries):
                self._on_append(m)
            elif isinstance(m, Heartbeat):
                self._commit_to(min(m.commit, self.last_index))
                self._send(HeartbeatResponse(self.term, self.node_id, m.sender, m.context))
            else:
                self._on_install_snapshot(m)
        elif isinstance(m, TimeoutNow):
            if self.role != LEADER and self._promotable():
                self._campaign(pre=False, transfer=True)
        elif self.role == LEADER and m.sender in self._progress:
            if isinstance(m, AppendResponse):
                self._on_append_response(m)
            elif isinstance(m, HeartbeatResponse):
                self._on_heartbeat_response(m)
            elif isinstance(m, SnapshotResponse):
                self._on_snapshot_response(m)

    def propose(self, data: bytes, request_id: str = "") -> int | None:
        """Append a client write; returns a token, or None when not able to lead it."""
        return self._propose(NORMAL, bytes(data), request_id)

    def read_index(self) -> int:
        """Start a linearizable read; the ReadResult arrives in a later Ready."""
        token = self._token()
        if self.role != LEADER:
            self._results.append(ReadResult(token, False, reason="not leader"))
        elif self.term_at(self.commit) != self.term:
            self._results.append(
                ReadResult(token, False, reason="leader has not committed in its term yet")
            )
        else:
            self._read_context += 1
            self._reads.append(_PendingRead(token, self.commit, self._read_context, {self.node_id}))
            self._broadcast_heartbeat()
            # A lone voter is its own majority: no answer will come to wait for.
            self._release_reads()
        return token

    def change_membership(self, *, add_learner: str = "", remove: str = "") -> int | None:
        """Propose one membership change: add a non-voter (promoted to voter
        once caught up) or remove a member.  None when not allowed now: not
        leader, an earlier change still uncommitted, or no entry of this
        leader's term committed yet."""
        if bool(add_learner) == bool(remove):
            raise ValueError("give exactly one of add_learner or remove")
        config = self.config
        if add_learner:
            if add_learner in config.members():
                return None
            new = ClusterConfig(config.voters, config.learners | {add_learner})
        else:
            if remove not in config.members():
                return None
            new = ClusterConfig(config.voters - {remove}, config.learners - {remove})
            if not new.voters:
                return None
        if not self._can_change_config():
            return None
        return self._propose(CONFIG, encode_config(new), "")

    def transfer_leadership(self, target: str) -> bool:
        """Hand leadership to voter ``target``; proposals are refused meanwhile."""
        if self.role != LEADER or target == self.node_id or target not in self.config.voters:
            return False
        self._transferee = target
        self._transfer_elapsed = 0
        pr = self._progress[target]
        if pr.match == self.last_index:
            self._send(TimeoutNow(self.term, self.node_id, target))
        else:
            self._send_append(target)
        return True

    def snapshot_failed(self) -> None:
        """The adapter could not capture the state machine: ask again later."""
        self._snapshot_requested = False

    def snapshot_done(self, index: int, data: SnapshotImage) -> SnapshotMeta | None:
        """The state machine was captured at applied ``index``; compact the log.

        Returns the snapshot's metadata, which the adapter must make durable
        with ``data`` before performing the next Ready (whose ``compact_to``
        drops the covered entries); None when it is not newer than the last.
        """
        self._snapshot_requested = False
        if index <= (self._snapshot.index if self._snapshot else 0):
            return None
        if index > self.applied:
            raise RaftError(f"snapshot index {index} is beyond applied index {self.applied}")
        term = self.term_at(index)
        if term is None:
            raise RaftError(f"snapshot index {index} is no longer in the log")
        self._snapshot = SnapshotMeta(index, term, self._config_at(index))
        # Bytes, or an image on disk that slices like bytes (read per chunk).
        self._snapshot_data = bytes(data) if isinstance(data, (bytearray, memoryview)) else data
        self._applied_bytes = sum(len(e.data) for e in self.entries(index + 1, self.applied))
        # Keep up to snapshot_trailing entries behind it, and no more than
        # snapshot_trailing_bytes of them.
        keep_from = max(self._base_index, index - self.settings.snapshot_trailing)
        kept = 0
        start = index
        while start > keep_from:
            size = len(self.entry(start).data)
            if kept + size > self.settings.snapshot_trailing_bytes:
                break
            kept += size
            start -= 1
        self._compact(max(0, start))
        return self._snapshot

    def persisted(self, index: int, term: int) -> None:
        """Storage made the log durable through ``index`` (entry of ``term``)."""
        if index > self._stable and self.term_at(index) == term:
            self._stable = index
            if self.role == LEADER:
                self._maybe_commit()

    # ---------------------------------------------------------------- outputs

    def _vote_changed(self) -> bool:
        saved = self._saved_hard_state
        return self.term != saved.term or self.vote != saved.vote

    def has_ready(self) -> bool:
        return bool(
            self._outbox
            or self._results
            or self._append_dirty
            or self._install
            or self._truncate_from
            or self._compact_to
            or self._unstable_from <= self.last_index
            or self.applied < self.commit
            or self._vote_changed()
            or (self._want_snapshot() and not self._snapshot_requested)
            or (self.role == LEADER and self._promotion_candidate())
            or (self.role == LEADER and self._commit_untold())
        )

    def _commit_untold(self) -> bool:
        commit = self.commit
        return any(min(pr.match, commit) > pr.commit_sent for pr in self._progress.values())

    def ready(self) -> Ready:
        """Collect every pending effect; see the module docstring for the order."""
        if self.role == LEADER:
            learner = self._promotion_candidate()
            if learner:
                self._propose(
                    CONFIG,
                    encode_config(
                        ClusterConfig(
                            self.config.voters | {learner}, self.config.learners - {learner}
                        )
                    ),
                    "",
                )
            if self._append_dirty:
                self._broadcast_append()
            self._tell_commit()
        self._append_dirty = False
        entries = tuple(self.entries(self._unstable_from, self.last_index))
        self._unstable_from = self.last_index + 1
        # Term and vote must be durable before anything that depends on them
        # is said. The commit index need not be (a restarted node learns it
        # again from the leader, and the state machine keeps its own applied
        # index), so a change of commit alone costs no fsync: it is written
        # with the next batch that syncs anyway.
        hard = self.hard_state
        syncs = entries or self._install or self._truncate_from or self._compact_to
        hard_changed = None
        if self._vote_changed() or (syncs and hard != self._saved_hard_state):
            hard_changed = hard
            self._saved_hard_state = hard
        committed = tuple(self.entries(self.applied + 1, self.commit))
        self.applied = self.commit
        self._applied_bytes += sum(len(entry.data) for entry in committed)
        for entry in committed:
            pending = self._pending.pop(entry.index, None)
            if pending is not None:
                token, term = pending
                ok = term == entry.term
                self._results.append(
                    ProposalResult(token, entry.index, ok, "" if ok else "overwritten")
                )
        self._release_reads()
        want = self._want_snapshot() and not self._snapshot_requested
        if want:
            self._snapshot_requested = True
        ready = Ready(
            hard_state=hard_changed,
            snapshot=self._install,
            truncate_from=self._truncate_from,
            entries=entries,
            compact_to=self._compact_to,
            messages=tuple(self._outbox),
            committed=committed,
            results=tuple(self._results),
            want_snapshot=want,
        )
        self._install = None
        self._truncate_from = 0
        self._compact_to = 0
        self._outbox = []
        self._results = []
        return ready

    def advance(self, ready: Ready) -> None:
        """The adapter performed ``ready``; its entries are durable now."""
        if ready.entries:
            last = ready.entries[-1]
            self.persisted(last.index, last.term)
        if self._reads and self.role == LEADER:
            # Reads confirmed before the state machine reached them.
            self._release_reads()

    def status(self) -> dict[str, object]:
        """A plain summary for ``GET /cluster`` and logs."""
        return {
            "id": self.node_id,
            "role": self.role,
            "term": self.term,
            "leader": self.leader_id,
            "commit": self.commit,
            "applied": self.applied,
            "last_index": self.last_index,
            "voters": sorted(self.config.voters),
            "learners": sorted(self.config.learners),
        }

    # -------------------------------------------------------------- elections

    def _promotable(self) -> bool:
        return self.node_id in self.config.voters

    def _reset_timeout(self) -> None:
        e = self.settings.election_ticks
        self._timeout = e + self.rng.randrange(e)

    def _quorum(self) -> int:
        return len(self.config.voters) // 2 + 1

    def _campaign(self, *, pre: bool, transfer: bool = False) -> None:
        self._election_elapsed = 0
        self._reset_timeout()
        self.leader_id = ""
        self._votes = {self.node_id: True}
        if pre:
            self.role = PRE_CANDIDATE
            term = self.term + 1
        else:
            self.role = CANDIDATE
            self.term += 1
            self.vote = self.node_id
            term = self.term
        if self._tally_votes(pre):
            return
        for peer in sorted(self.config.voters - {self.node_id}):
            self._send(
                VoteRequest(
                    term,
                    self.node_id,
                    peer,
                    self.last_index,
                    self.last_term,
                    pre_vote=pre,
                    transfer=transfer,
                )
            )

    def _tally_votes(self, pre: bool) -> bool:
        granted = sum(1 for v, ok in self._votes.items() if ok and v in self.config.voters)
        rejected = sum(1 for v, ok in self._votes.items() if not ok and v in self.config.voters)
        if granted >= self._quorum():
            if pre:
                self._campaign(pre=False)
            else:
                self._become_leader()
            return True
        if rejected >= self._quorum():
            self._become_follower(self.term, "")
            return True
        return False

    def _on_vote_request(self, m: VoteRequest) -> None:
        up_to_date = (m.last_log_term, m.last_log_index) >= (self.last_term, self.last_index)
        if m.pre_vote:
            can = m.term > self.term
        else:
            can = self.vote == m.sender or (self.vote == "" and self.leader_id == "")
        if can and up_to_date:
            if m.pre_vote:
                self._send(VoteResponse(m.term, self.node_id, m.sender, True, pre_vote=True))
            else:
                self.vote = m.sender
                self._election_elapsed = 0
                self._send(VoteResponse(self.term, self.node_id, m.sender, True))
        else:
            self._send(VoteResponse(self.term, self.node_id, m.sender, False, pre_vote=m.pre_vote))

    def _on_vote_response(self, m: VoteResponse) -> None:
        if m.pre_vote:
            if self.role != PRE_CANDIDATE or (m.granted and m.term != self.term + 1):
                return
        elif self.role != CANDIDATE or m.term != self.term:
            return
        self._votes.setdefault(m.sender, m.granted)
        self._tally_votes(m.pre_vote)

    def _become_follower(self, term: int, leader: str) -> None:
        if term > self.term:
            self.term = term
            self.vote = ""
        self.role = FOLLOWER
        self.leader_id = leader
        self._election_elapsed = 0
        self._reset_timeout()
        self._votes = {}
        self._progress = {}
        self._transferee = ""
        for read in self._reads:
            self._results.append(ReadResult(read.token, False, reason="leadership lost"))
        self._reads = []

    def _become_leader(self) -> None:
        self.role = LEADER
        self.leader_id = self.node_id
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._progress = {}
        self._sync_progress()
        self._append(Entry(self.term, self.last_index + 1, NOOP))
        if self.settings.log_initial_config and self.config_index == 0:
            # The voter set came from configuration (Bootstrap), not from the
            # log: write it down, so nodes that started without one (joining
            # later, or not bootstrapping) learn it from the log.
            self._append(Entry(self.term, self.last_index + 1, CONFIG, encode_config(self.config)))

    def _sync_progress(self) -> None:
        members = self.config.members() - {self.node_id}
        for peer in list(self._progress):
            if peer not in members:
                del self._progress[peer]
        for peer in members:
            if peer not in self._progress:
                self._progress[peer] = Progress(
                    match=0, next=self.last_index + 1, progress_at=self._ticks
                )

    def _quorum_active(self) -> bool:
        active = sum(
            1
            for v in self.config.voters
            if v == self.node_id or (v in self._progress and self._progress[v].recent_active)
        )
        return active >= self._quorum()

    # ------------------------------------------------------------ replication

    def _token(self) -> int:
        token = self._next_token
        self._next_token += 1
        return token

    def _propose(self, kind: int, data: bytes, request_id: str) -> int | None:
        if self.role != LEADER or self._transferee:
            return None
        token = self._token()
        entry = Entry(self.term, self.last_index + 1, kind, data, request_id)
        self._pending[entry.index] = (token, self.term)
        self._append(entry)
        return token

    def _append(self, entry: Entry) -> None:
        self._log.append(entry)
        self._note_config(entry)
        if entry.kind == CONFIG and self.role == LEADER:
            self._sync_progress()
        self._append_dirty = True

    def _can_change_config(self) -> bool:
        return (
            self.role == LEADER
            and not self._transferee
            and self.config_index <= self.commit
            and self.term_at(self.commit) == self.term
        )

    def _promotion_candidate(self) -> str:
        if not self.config.learners or not self._can_change_config():
            return ""
        for learner in sorted(self.config.learners):
            pr = self._progress.get(learner)
            if pr is not None and pr.match >= self.commit and pr.recent_active:
                return learner
        return ""

    def _send(self, m: Message) -> None:
        self._outbox.append(m)

    def _broadcast_append(self) -> None:
        for peer in sorted(self._progress):
            self._fill(peer)

    def _fill(self, peer: str) -> None:
        while self._send_append(peer):
            pass

    def _send_append(self, peer: str, allow_empty: bool = False) -> bool:
        """Send the next batch to ``peer``; True when more may follow at once."""
        pr = self._progress[peer]
        if pr.state == SNAPSHOT:
            return False
        if pr.state == PROBE and pr.probe_sent:
            return False
        if pr.state == REPLICATE and len(pr.inflight) >= self.settings.max_inflight:
            return False
        prev = pr.next - 1
        if prev > self.last_index:
            raise RaftError(
                f"progress of {peer} points past the log end"
                f" (next {pr.next}, last {self.last_index})"
            )
        prev_term = self.term_at(prev)
        if prev_term is None:
            self._start_snapshot(peer, pr)
            return False
        batch: list[Entry] = []
        size = 0
        for entry in self.entries(pr.next, pr.next + self.settings.max_batch_entries - 1):
            if batch and size + len(entry.data) > self.settings.max_batch_bytes:
                break
            batch.append(entry)
            size += len(entry.data)
        if not batch and pr.state == REPLICATE and not allow_empty:
            return False
        self._send(
            AppendEntries(self.term, self.node_id, peer, prev, prev_term, tuple(batch), self.commit)
        )
        pr.commit_sent = max(pr.commit_sent, min(self.commit, prev + len(batch)))
        if pr.state == PROBE:
            pr.probe_sent = True
            return False
        if batch:
            pr.next = batch[-1].index + 1
            pr.inflight.append(batch[-1].index)
            return pr.next <= self.last_index
        return False

    def _on_append(self, m: AppendEntries) -> None:
        if m.prev_log_index < self.commit:
            # Everything up to commit is known to match; skip what we hold.
            entries = [e for e in m.entries if e.index > self.commit]
            if not entries:
                self._send(
                    AppendResponse(self.term, self.node_id, m.sender, True, match_index=self.commit)
                )
                return
            prev = entries[0].index - 1
            # The entries follow prev_log_index without a gap, so prev is our
            # commit index: an entry we hold.
            prev_term = self.term_at(prev)
            assert prev_term is not None
            m = attrs.evolve(
                m, prev_log_index=prev, prev_log_term=prev_term, entries=tuple(entries)
            )
        if self.term_at(m.prev_log_index) != m.prev_log_term:
            if m.prev_log_index > self.last_index:
                conflict_term, conflict_index = 0, self.last_index + 1
            else:
                conflict_term = self.term_at(m.prev_log_index) or 0
                conflict_index = m.prev_log_index
                while (
                    conflict_index - 1 > self.commit
                    and self.term_at(conflict_index - 1) == conflict_term
                ):
                    conflict_index -= 1
            self._send(
                AppendResponse(
                    self.term,
                    self.node_id,
                    m.sender,
                    False,
                    reject_index=m.prev_log_index,
                    conflict_term=conflict_term,
                    conflict_index=conflict_index,
                )
            )
            return
        for i, entry in enumerate(m.entries):
            if entry.index > self.last_index:
                for e in m.entries[i:]:
                    self._log.append(e)
                    self._note_config(e)
                break
            if self.term_at(entry.index) != entry.term:
                self._truncate(entry.index)
                for e in m.entries[i:]:
                    self._log.append(e)
                    self._note_config(e)
                break
        last_new = m.prev_log_index + len(m.entries)
        self._commit_to(min(m.leader_commit, last_new))
        self._send(AppendResponse(self.term, self.node_id, m.sender, True, match_index=last_new))

    def _truncate(self, index: int) -> None:
        """Drop entries at ``index`` and after (a conflicting suffix)."""
        if index <= self.commit:
            raise RaftError(f"refusing to truncate committed index {index} (commit {self.commit})")
        del self._log[index - self._base_index - 1 :]
        self._mark_truncate(index)
        self._stable = min(self._stable, index - 1)
        self._unstable_from = min(self._unstable_from, index)
        while len(self._configs) > 1 and self._configs[-1][0] >= index:
            self._configs.pop()
        self.config = self._configs[-1][1]
        for at in [i for i in self._pending if i >= index]:
            token, _ = self._pending.pop(at)
            self._results.append(ProposalResult(token, at, False, "overwritten"))

    def _mark_truncate(self, index: int) -> None:
        self._truncate_from = index if not self._truncate_from else min(self._truncate_from, index)

    def _commit_to(self, index: int) -> None:
        if index > self.commit:
            self.commit = index

    def _on_append_response(self, m: AppendResponse) -> None:
        pr = self._progress[m.sender]
        pr.recent_active = True
        if not m.success:
            if self._backtrack(pr, m):
                self._send_append(m.sender)
            return
        if m.match_index > pr.match:
            pr.match = m.match_index
            pr.progress_at = self._ticks
            pr.next = max(pr.next, pr.match + 1)
            pr.inflight[:] = [i for i in pr.inflight if i > pr.match]
            if pr.state == PROBE:
                pr.become_replicate()
            self._maybe_commit()
            if self.role != LEADER:
                return  # the commit removed this leader from the cluster
            if m.sender == self._transferee and pr.match == self.last_index:
                self._send(TimeoutNow(self.term, self.node_id, m.sender))
        elif pr.state == PROBE and m.match_index == pr.match:
            pr.become_replicate()  # the probe confirmed the match point
        self._fill(m.sender)

    def _backtrack(self, pr: Progress, m: AppendResponse) -> bool:
        if m.reject_index <= pr.match:
            return False
        if pr.state == PROBE and m.reject_index != pr.next - 1:
            return False
        if m.reject_index == 0:
            return False
        nxt = m.conflict_index
        if m.conflict_term:
            i = min(m.reject_index, self.last_index)
            while i > self._base_index and (self.term_at(i) or 0) > m.conflict_term:
                i -= 1
            if self.term_at(i) == m.conflict_term:
                nxt = i + 1
        pr.become_probe()
        pr.next = max(pr.match + 1, min(nxt, m.reject_index))
        return True

    def _maybe_commit(self) -> None:
        matches = []
        for voter in self.config.voters:
            if voter == self.node_id:
                matches.append(self._stable)
            elif voter in self._progress:
                matches.append(self._progress[voter].match)
            else:
                matches.append(0)
        matches.sort(reverse=True)
        candidate = matches[self._quorum() - 1]
        if candidate > self.commit and self.term_at(candidate) == self.term:
            self.commit = candidate
            if self.node_id not in self.config.voters and self.config_index <= self.commit:
                self._become_follower(self.term, "")

    def _broadcast_heartbeat(self) -> None:
        for peer in sorted(self._progress):
            pr = self._progress[peer]
            commit = min(pr.match, self.commit)
            self._send(Heartbeat(self.term, self.node_id, peer, commit, self._read_context))
            pr.commit_sent = max(pr.commit_sent, commit)

    def _tell_commit(self) -> None:
        """
        Tell each follower a commit index it has not heard yet, at once: a
        write forwarded by a follower is answered once that follower has
        applied it, which should not wait for the next heartbeat.
        """
        for peer in sorted(self._progress):
            pr = self._progress[peer]
            commit = min(pr.match, self.commit)
            if commit > pr.commit_sent:
                self._send(Heartbeat(self.term, self.node_id, peer, commit, 0))
                pr.commit_sent = commit

    def _on_heartbeat_response(self, m: HeartbeatResponse) -> None:
        pr = self._progress[m.sender]
        pr.recent_active = True
        if pr.state == SNAPSHOT:
            self._send_snapshot_chunk(m.sender, pr)
        elif pr.match < self.last_index:
            stalled = self._ticks - pr.progress_at >= max(2, self.settings.election_ticks // 2)
            if pr.state == REPLICATE and stalled:
                pr.become_probe()  # no ack for a while: appends in flight were lost
                pr.progress_at = self._ticks
            pr.probe_sent = False
            self._fill(m.sender)
        if m.context:
            for read in self._reads:
                if read.context <= m.context and m.sender in self.config.voters:
                    read.acks.add(m.sender)
        if self._reads:
            self._release_reads()

    def _release_reads(self) -> None:
        while self._reads:
            read = self._reads[0]
            if len(read.acks & self.config.voters) < self._quorum() or read.index > self.applied:
                break
            self._reads.pop(0)
            self._results.append(ReadResult(read.token, True, read.index))

    # -------------------------------------------------------------- snapshots

    def _want_snapshot(self) -> bool:
        done = self._snapshot.index if self._snapshot else 0
        if self.applied <= done:
            return False
        return (
            self.applied - done >= self.settings.snapshot_threshold
            or self._applied_bytes >= self.settings.snapshot_threshold_bytes
        )

    def _compact(self, index: int) -> None:
        if index <= self._base_index:
            return
        term = self.term_at(index)
        assert term is not None
        del self._log[: index - self._base_index]
        self._base_index, self._base_term = index, term
        while len(self._configs) > 1 and self._configs[1][0] <= index:
            self._configs.pop(0)
        self._compact_to = max(self._compact_to, index)

    def _start_snapshot(self, peer: str, pr: Progress) -> None:
        if self._snapshot is None or self._snapshot_data is None:
            raise RaftError("log compacted without a snapshot")
        pr.state = SNAPSHOT
        pr.snapshot_index = self._snapshot.index
        pr.snapshot_offset = 0
        pr.inflight.clear()
        self._send_snapshot_chunk(peer, pr)

    def _send_snapshot_chunk(self, peer: str, pr: Progress) -> None:
        snap, data = self._snapshot, self._snapshot_data
        assert snap is not None and data is not None
        if pr.snapshot_index != snap.index:
            pr.snapshot_index, pr.snapshot_offset = snap.index, 0
        end = pr.snapshot_offset + self.settings.snapshot_chunk_bytes
        self._send(
            InstallSnapshot(
                self.term,
                self.node_id,
                peer,
                snap.index,
                snap.term,
                snap.config.voters,
                snap.config.learners,
                pr.snapshot_offset,
                data[pr.snapshot_offset : end],
                end >= len(data),
            )
        )

    def _on_snapshot_response(self, m: SnapshotResponse) -> None:
        pr = self._progress[m.sender]
        pr.recent_active = True
        if pr.state != SNAPSHOT:
            return
        if m.done:
            pr.match = max(pr.match, m.last_index)
            pr.become_probe()
            self._maybe_commit()
            if self.role == LEADER:
                self._send_append(m.sender)
            return
        if (
            m.last_index != pr.snapshot_index
            or self._snapshot is None
            or m.last_index != self._snapshot.index
        ):
            pr.snapshot_offset = 0
        elif m.next_offset < 0:
            pr.snapshot_offset = 0
        else:
            pr.snapshot_offset = m.next_offset
        self._send_snapshot_chunk(m.sender, pr)

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        def reply(next_offset: int, done: bool = False) -> None:
            self._send(
                SnapshotResponse(self.term, self.node_id, m.sender, m.last_index, next_offset, done)
            )

        if m.last_index <= self.commit:
            self._incoming = None
            reply(0, done=True)
            return
        meta = SnapshotMeta(m.last_index, m.last_term, ClusterConfig(m.voters, m.learners))
        if m.offset == 0:
            self._incoming = (meta, bytearray())
        if (
            self._incoming is None
            or self._incoming[0] != meta
            or len(self._incoming[1]) != m.offset
        ):
            have = len(self._incoming[1]) if self._incoming and self._incoming[0] == meta else -1
            reply(have)
            return
        self._incoming[1].extend(m.data)
        if not m.done:
            reply(len(self._incoming[1]))
            return
        data = bytes(self._incoming[1])
        self._incoming = None
        self._restore(meta, data)
        reply(0, done=True)

    def _restore(self, meta: SnapshotMeta, data: bytes) -> None:
        self._applied_bytes = 0
        if self.term_at(meta.index) == meta.term:
            del self._log[: meta.index - self._base_index]
            self._stable = max(self._stable, meta.index)
            self._unstable_from = max(self._unstable_from, meta.index + 1)
        else:
            self._mark_truncate(meta.index + 1)
            self._log = []
            self._stable = meta.index
            self._unstable_from = meta.index + 1
            for at in [i for i in self._pending if i > meta.index]:
                token, _ = self._pending.pop(at)
                self._results.append(ProposalResult(token, at, False, "overwritten"))
        self._base_index, self._base_term = meta.index, meta.term
        self._snapshot = meta
        self._snapshot_data = data
        self._install = (meta, data)
        self._configs = [(meta.index, meta.config)]
        for entry in self._log:
            if entry.kind == CONFIG:
                self._configs.append((entry.index, decode_config(entry.data)))
        self.config = self._configs[-1][1]
        self.commit = max(self.commit, meta.index)
        for at in [i for i in self._pending if i <= meta.index]:
            token, _ = self._pending.pop(at)
            self._results.append(
                ProposalResult(token, at, False, "outcome unknown: state replaced by snapshot")
            )
        self.applied = meta.index
