"""
What a node does with what a newer release wrote (scheduler0.versions): a
Raft entry of a newer entry version or with an op it does not know, a
snapshot image of a newer schema or entry version, a command log entry, a
SQLite file of a newer schema version. It never applies any of them: it
stops, with one line saying what it met and which version it needs. And how
the entry version the cluster writes goes up: the leader raises it once
every member reads the newer one (alone, a node raises it at start).
"""

from __future__ import annotations

import json
import os
import sqlite3
from types import SimpleNamespace
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from harness.cluster import Cluster as ProcessCluster
from harness.process import prepare_single_node
from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.cluster.leader import LeaderDuties
from scheduler0.cluster.peer import PeerAPI, PeerClient, PeerUnavailable
from scheduler0.cluster.proposer import RaftProposer
from scheduler0.raft.storage import RAFT_SCHEMA_VERSION, SqliteRaftStorage
from scheduler0.store.commands import Command, Op
from scheduler0.store.executions import EXECUTIONS_SCHEMA_VERSION, ExecutionStore
from scheduler0.store.local import LocalProposer
from scheduler0.store.log import LOG_SCHEMA_VERSION, CommandLog, encode_entry
from scheduler0.store.schema import STATE_SCHEMA_VERSION
from scheduler0.store.state import StateStore
from scheduler0.versions import (
    ENTRY_VERSION,
    FIRST_ENTRY_VERSION,
    EntryVersionTooLow,
    UnsupportedVersion,
)
from tests.support.api import Admin, basic
from tests.support.raft import IDS, SETTINGS, Cluster

AT = "2026-03-01T12:00:00.000Z"


def project(uuid: str, name: str) -> dict:
    return {"uuid": uuid, "name": name, "description": "", "created_at": AT, "updated_at": AT}


def newer_command(op: str = Op.DELETE_JOB) -> bytes:
    """A command as a release that writes entry version ENTRY_VERSION + 1 would."""
    return Command(op, {"uuid": "j"}, None, version=ENTRY_VERSION + 1).to_bytes()


def user_version(path: str) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def set_user_version(path: str, version: int) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(f"PRAGMA user_version = {version}")
        db.commit()
    finally:
        db.close()


class RaftEntryStopTests(SynchronousTestCase):
    """Three nodes (task.Clock, an in-memory network) over real SQLite state machines."""

    def setUp(self) -> None:
        self.stores: dict[str, StateStore] = {}
        self.proposers: dict[str, RaftProposer] = {}
        self.halted: dict[str, list[str]] = {node_id: [] for node_id in IDS}
        for node_id in IDS:
            store = StateStore(SynchronousConnectionPool(":memory:"))
            store.new_entry_version = FIRST_ENTRY_VERSION
            self.successResultOf(store.open())
            self.stores[node_id] = store
            self.proposers[node_id] = RaftProposer(
                store, halt=lambda e, node_id=node_id: self.halted[node_id].append(str(e))
            )

        def extra_for(node_id: str) -> dict:
            proposer = self.proposers[node_id]
            return {"snapshot": proposer.snapshot_hook, "restore": proposer.restore_hook}

        self.cluster = Cluster(
            apply_for=lambda node_id: self.proposers[node_id].apply_hook,
            settings=SETTINGS,
            extra_for=extra_for,
        )
        for node_id, driver in self.cluster.drivers.items():
            self.proposers[node_id].driver = driver
        self.leader_driver = self.cluster.leader()
        self.leader = self.proposers[self.leader_driver.core.node_id]

    def applied(self) -> dict[str, int]:
        return {n: self.successResultOf(s.applied_index()) for n, s in self.stores.items()}

    def assert_every_node_halted_at(self, index: int, *said: str) -> None:
        for node_id in IDS:
            self.assertEqual(len(self.halted[node_id]), 1, self.halted)
            line = self.halted[node_id][0]
            self.assertIn(f"Raft entry {index}:", line)
            for text in said:
                self.assertIn(text, line)
            self.assertTrue(self.cluster.drivers[node_id].halted)
            self.assertLess(self.cluster.drivers[node_id].applied_index, index)
        applied = set(self.applied().values())
        self.assertEqual(len(applied), 1, applied)
        self.assertLess(applied.pop(), index)

    def test_an_entry_of_a_newer_version_stops_every_node_unapplied(self) -> None:
        """
        A committed entry of entry version 3 is applied nowhere: each node
        halts once, naming the entry and the version it needs, and applies
        nothing after it either.
        """
        first = self.leader.propose(Command(Op.CREATE_PROJECT, {"project": project("p1", "a")}))
        self.cluster.run(0.5)
        self.assertTrue(self.successResultOf(first).ok)
        # Proposed below the proposer (as a newer leader's driver would).
        self.leader_driver.propose(newer_command())
        index = self.leader_driver.core.last_index
        after = self.leader.propose(Command(Op.CREATE_PROJECT, {"project": project("p2", "b")}))
        self.cluster.run(1)
        self.assert_every_node_halted_at(
            index, f"entry version {ENTRY_VERSION + 1}", f"up to {ENTRY_VERSION}"
        )
        # Never applied: it times out (or is refused when the node stops).
        after.addErrback(lambda failure: None)
        for store in self.stores.values():
            self.assertIsNone(self.successResultOf(store.get_project("p2")))

    def test_an_op_this_release_does_not_know_stops_every_node_unapplied(self) -> None:
        """
        A command with an op there is no handler for (of an entry version
        this release reads) is not answered "invalid" and skipped, which
        would leave this node's state apart: every node halts on it.
        """
        self.leader_driver.propose(Command("label_jobs", {"uuid": "j"}).to_bytes())
        index = self.leader_driver.core.last_index
        self.cluster.run(1)
        self.assert_every_node_halted_at(index, "'label_jobs'", "newer release")

    def test_the_proposer_refuses_what_the_cluster_does_not_write_yet(self) -> None:
        """
        While the cluster writes entry version 1, a command of version 2 is
        refused before it reaches the log (EntryVersionTooLow, the API's
        409); set_entry_version itself goes through and raises it on every
        node, after which the same command is accepted.
        """
        command = Command(
            Op.UPDATE_PROJECT,
            {"uuid": "p1", "changes": {"description": "v2"}, "updated_at": AT},
            version=2,
        )
        self.leader.propose(Command(Op.CREATE_PROJECT, {"project": project("p1", "a")}))
        self.cluster.run(0.5)
        refused = self.failureResultOf(self.leader.propose(command), EntryVersionTooLow)
        self.assertEqual((refused.value.needed, refused.value.current), (2, 1))
        raised = self.leader.propose(Command(Op.SET_ENTRY_VERSION, {"version": 2}, version=2))
        self.cluster.run(0.5)
        self.assertEqual(self.successResultOf(raised).value, {"entry_version": 2})
        for node_id in IDS:
            self.assertEqual(self.proposers[node_id].entry_version, 2)
            self.assertEqual(self.successResultOf(self.stores[node_id].entry_version()), 2)
        accepted = self.leader.propose(command)
        self.cluster.run(0.5)
        self.assertTrue(self.successResultOf(accepted).ok)

    def test_a_snapshot_of_a_newer_release_is_not_installed(self) -> None:
        """
        A snapshot image whose schema version is newer than this release
        reads halts the node; its state is left as it was.
        """
        proposer = self.leader
        before = self.successResultOf(proposer.state.dump())
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "image.db")
        self.successResultOf(proposer.state.snapshot(path))
        set_user_version(path, STATE_SCHEMA_VERSION + 1)
        with open(path, "rb") as f:
            image = f.read()
        self.failureResultOf(proposer.restore_hook(image), UnsupportedVersion)
        node_id = self.leader_driver.core.node_id
        self.assertEqual(len(self.halted[node_id]), 1)
        self.assertIn("a snapshot from the leader", self.halted[node_id][0])
        self.assertIn(f"schema version {STATE_SCHEMA_VERSION + 1}", self.halted[node_id][0])
        self.assertEqual(self.successResultOf(proposer.state.dump()), before)

    def test_a_snapshot_of_a_newer_entry_version_is_not_installed(self) -> None:
        """An image whose state says a newer entry version halts the node too."""
        proposer = self.leader
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "image.db")
        self.successResultOf(proposer.state.snapshot(path))
        db = sqlite3.connect(path)
        db.execute("UPDATE meta SET value = ? WHERE key = 'entry_version'", (ENTRY_VERSION + 1,))
        db.commit()
        db.close()
        with open(path, "rb") as f:
            self.failureResultOf(proposer.restore_hook(f.read()), UnsupportedVersion)
        line = self.halted[self.leader_driver.core.node_id][0]
        self.assertIn(f"entry version {ENTRY_VERSION + 1}", line)


class LocalProposerVersionTests(TestCase):
    """One node: its command log and state in real SQLite files."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.clock = Clock()

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    async def open(self) -> tuple[CommandLog, StateStore]:
        log = CommandLog(SynchronousConnectionPool(self.path("log.db")))
        await log.open()
        state = StateStore(SynchronousConnectionPool(self.path("state.db")))
        await state.open()
        self.addCleanup(log.close)
        self.addCleanup(state.close)
        return log, state

    async def test_a_log_entry_of_a_newer_version_fails_the_start(self) -> None:
        """Replaying the command log stops at an entry of a newer version, naming it."""
        log, state = await self.open()
        proposer = LocalProposer(log, state, self.clock)
        await proposer.start()
        await proposer.propose(Command(Op.CREATE_PROJECT, {"project": project("p1", "a")}))
        # A newer release appended this one (no state has applied it yet).
        db = sqlite3.connect(self.path("log.db"))
        db.execute("INSERT INTO log (idx, command) VALUES (2, ?)", (encode_entry(newer_command()),))
        db.execute("UPDATE log_meta SET value = 2 WHERE key = 'last_index'")
        db.commit()
        db.close()
        again = LocalProposer(log, state, self.clock)
        try:
            await again.start()
        except UnsupportedVersion as e:
            self.assertIn("command log entry 2:", str(e))
            self.assertIn(f"entry version {ENTRY_VERSION + 1}", str(e))
        else:
            self.fail("an entry of a newer version was replayed")
        self.assertEqual(await state.applied_index(), 1)

    async def test_alone_a_node_raises_the_entry_version_at_start(self) -> None:
        """
        A state file of an older release (entry version 1) is raised to this
        release's by one set_entry_version at start; a new one needs none.
        """
        log, state = await self.open()
        db = sqlite3.connect(self.path("state.db"))
        db.execute("UPDATE meta SET value = 1 WHERE key = 'entry_version'")
        db.commit()
        db.close()
        proposer = LocalProposer(log, state, self.clock)
        await proposer.start()
        self.assertEqual(await state.entry_version(), ENTRY_VERSION)
        self.assertEqual(proposer.entry_version, ENTRY_VERSION)
        self.assertEqual([c.op for _, c in await log.entries_after(0)], [Op.SET_ENTRY_VERSION])
        again = LocalProposer(log, state, self.clock)
        await again.start()
        self.assertEqual(await log.last_index(), 1)

    async def test_an_unknown_op_appended_stops_the_node(self) -> None:
        """
        A command this release has no handler for is not applied; the
        proposer calls halt once and refuses what comes after.
        """
        log, state = await self.open()
        halted: list[str] = []
        proposer = LocalProposer(log, state, self.clock, halt=lambda e: halted.append(str(e)))
        await proposer.start()
        try:
            await proposer.propose(Command("label_jobs", {}))
        except Exception as e:
            self.assertIn("label_jobs", str(e))
        else:
            self.fail("an unknown op was answered")
        self.assertEqual(len(halted), 1)
        self.assertIn("command log entry 1:", halted[0])
        self.assertEqual(await state.applied_index(), 0)


class SchemaVersionTests(TestCase):
    """Every SQLite file of a node records its schema version and refuses a newer one."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    async def open_state(self) -> StateStore:
        state = StateStore(SynchronousConnectionPool(self.path("state.db")))
        await state.open()
        self.addCleanup(state.close)
        return state

    async def open_log(self) -> CommandLog:
        log = CommandLog(SynchronousConnectionPool(self.path("log.db")))
        await log.open()
        self.addCleanup(log.close)
        return log

    async def open_executions(self) -> ExecutionStore:
        store = ExecutionStore(SynchronousConnectionPool(self.path("executions.db")), Clock())
        await store.open()
        self.addCleanup(store.close)
        return store

    def open_raft(self) -> SqliteRaftStorage:
        storage = SqliteRaftStorage(self.path("raft.db"))
        self.addCleanup(storage.close)
        return storage

    async def test_each_file_records_its_schema_version(self) -> None:
        """state.db, log.db, executions.db and raft.db carry their version in user_version."""
        await self.open_state()
        await self.open_log()
        await self.open_executions()
        self.open_raft()
        self.assertEqual(
            {
                name: user_version(self.path(name))
                for name in os.listdir(self.folder)
                if name.endswith(".db")
            },
            {
                "state.db": STATE_SCHEMA_VERSION,
                "log.db": LOG_SCHEMA_VERSION,
                "executions.db": EXECUTIONS_SCHEMA_VERSION,
                "raft.db": RAFT_SCHEMA_VERSION,
            },
        )

    async def test_a_file_of_the_releases_before_versions_is_migrated(self) -> None:
        """
        A state file at version 0 with a table of an older layout gets the
        missing columns and tables, version 1, and entry version 1.
        """
        db = sqlite3.connect(self.path("state.db"))
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('applied_index', 3)")
        db.execute(
            "CREATE TABLE projects (uuid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
            " description TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
        )
        db.execute("INSERT INTO projects VALUES ('p1', 'a', '', ?, ?)", (AT, AT))
        db.commit()
        db.close()
        state = await self.open_state()
        self.assertEqual(user_version(self.path("state.db")), STATE_SCHEMA_VERSION)
        self.assertEqual(await state.entry_version(), FIRST_ENTRY_VERSION)
        self.assertEqual(await state.applied_index(), 3)
        self.assertIsNone((await state.get_project("p1"))["notify_url"])

    async def test_a_newer_state_file_is_refused_naming_it(self) -> None:
        await self.open_state()
        set_user_version(self.path("state.db"), STATE_SCHEMA_VERSION + 1)
        state = StateStore(SynchronousConnectionPool(self.path("state.db")))
        self.addCleanup(state.close)
        try:
            await state.open()
        except UnsupportedVersion as e:
            self.assertIn(self.path("state.db"), str(e))
            self.assertIn(f"schema version {STATE_SCHEMA_VERSION + 1}", str(e))
            self.assertIn(f"up to {STATE_SCHEMA_VERSION}", str(e))
        else:
            self.fail("a newer state file was opened")
        self.assertEqual(user_version(self.path("state.db")), STATE_SCHEMA_VERSION + 1)

    async def test_a_state_file_of_a_newer_entry_version_is_refused(self) -> None:
        await self.open_state()
        db = sqlite3.connect(self.path("state.db"))
        db.execute("UPDATE meta SET value = ? WHERE key = 'entry_version'", (ENTRY_VERSION + 1,))
        db.commit()
        db.close()
        state = StateStore(SynchronousConnectionPool(self.path("state.db")))
        self.addCleanup(state.close)
        try:
            await state.open()
        except UnsupportedVersion as e:
            self.assertIn(f"writes entry version {ENTRY_VERSION + 1}", str(e))
        else:
            self.fail("a state of a newer entry version was opened")

    async def test_newer_log_and_executions_files_are_refused(self) -> None:
        await self.open_log()
        await self.open_executions()
        for name in ("log.db", "executions.db"):
            set_user_version(self.path(name), 7)
        for opening in (self.open_log, self.open_executions):
            try:
                await opening()
            except UnsupportedVersion as e:
                self.assertIn("schema version 7", str(e))
            else:
                self.fail(f"{opening.__name__}: a newer file was opened")

    def test_a_newer_raft_file_is_refused(self) -> None:
        self.open_raft().close()
        set_user_version(self.path("raft.db"), RAFT_SCHEMA_VERSION + 1)
        with self.assertRaises(UnsupportedVersion) as caught:
            SqliteRaftStorage(self.path("raft.db"))
        self.assertIn(self.path("raft.db"), str(caught.exception))

    async def test_set_entry_version_never_lowers_and_keeps_its_index(self) -> None:
        state = await self.open_state()
        result = await state.apply(1, Command(Op.SET_ENTRY_VERSION, {"version": 1}))
        self.assertEqual(result.value, {"entry_version": ENTRY_VERSION})
        self.assertEqual(await state.entry_version(), ENTRY_VERSION)
        self.assertEqual(await state.entry_version_index(), 1)


@attrs.define(eq=False)
class StatusPeers:
    """Peers answering C{/peer/status} with C{answers[node_id]} (None: unreachable)."""

    answers: dict[int, dict | None]

    def status(self, node_id: int, timeout: float | None = None) -> Deferred:
        answer = self.answers[node_id]
        if answer is None:
            return fail(PeerUnavailable(f"node {node_id} did not answer"))
        return succeed(answer)


@attrs.define(eq=False)
class VotingNode:
    """The part of ClusterNode the duties' entry version round uses."""

    state: StateStore
    peers: StatusPeers
    config: Any
    is_leader: bool = True
    index: int = 100
    proposed: list[Command] = attrs.field(factory=list)
    member_reads: dict[int, int] = attrs.field(factory=dict)

    def member_ids(self) -> set[int]:
        return {1, *self.peers.answers}

    def propose(self, command: Command) -> Deferred:
        self.proposed.append(command)
        self.index += 1
        return self.state.apply(self.index, command)


@attrs.frozen
class NodeConfig:
    node_id: int = 1
    execution_log_fetch_interval_seconds: float = 2


class LeaderRaisesEntryVersionTests(TestCase):
    async def duties(self, answers: dict[int, dict | None], fresh: int) -> VotingNode:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        state = StateStore(SynchronousConnectionPool(os.path.join(folder, "state.db")))
        state.new_entry_version = fresh
        await state.open()
        self.addCleanup(state.close)
        node = VotingNode(state, StatusPeers(answers), NodeConfig())
        self.leader = LeaderDuties(node, state, NodeConfig(), Clock())  # type: ignore[arg-type]
        return node

    async def test_an_old_member_holds_the_cluster_at_version_1(self) -> None:
        """A member whose status says nothing of versions (the previous release) reads 1."""
        node = await self.duties({2: {"reads_entry_version": 2}, 3: {"role": "follower"}}, 1)
        await self.leader.raise_entry_version()
        self.assertEqual(node.proposed, [])
        self.assertEqual(node.member_reads, {1: 2, 2: 2, 3: 1})

    async def test_a_member_that_does_not_answer_holds_it_too(self) -> None:
        node = await self.duties({2: {"reads_entry_version": 2}, 3: None}, 1)
        await self.leader.raise_entry_version()
        self.assertEqual(node.proposed, [])

    async def test_once_every_member_reads_it_the_leader_raises_it(self) -> None:
        """The command is itself of the new version; the state says it from then on."""
        node = await self.duties({2: {"reads_entry_version": 2}, 3: {"reads_entry_version": 2}}, 1)
        await self.leader.raise_entry_version()
        self.assertEqual(
            node.proposed, [Command(Op.SET_ENTRY_VERSION, {"version": 2}, None, version=2)]
        )
        self.assertEqual(await node.state.entry_version(), 2)
        await self.leader.raise_entry_version()
        self.assertEqual(len(node.proposed), 1)

    async def test_a_new_cluster_logs_its_version_once(self) -> None:
        """
        Files of a new cluster start at this release's version, which no
        entry says: the leader logs it once, for members that join later.
        """
        node = await self.duties({2: None, 3: None}, ENTRY_VERSION)
        await self.leader.raise_entry_version()
        await self.leader.raise_entry_version()
        self.assertEqual(
            node.proposed,
            [Command(Op.SET_ENTRY_VERSION, {"version": ENTRY_VERSION}, None, version=2)],
        )


def log_lines(workdir: str, text: str) -> list[str]:
    """The lines of every log file in C{workdir} that contain C{text}."""
    found = []
    for name in sorted(os.listdir(workdir)):
        if name.startswith("node-") and name.endswith(".log"):
            with open(os.path.join(workdir, name), errors="replace") as f:
                found.extend(line for line in f if text in line)
    return found


class NodeRefusesNewerDataTests(TestCase):
    """A real node (twistd) on data a newer release wrote: one line, exit code 1."""

    timeout = 60

    async def refused(self, change: Any) -> str:
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(node.kill)
        await node.start()
        await node.stop()
        change(os.path.join(node.workdir, "data"))
        node.spawn()
        ended = await node.exited()
        self.assertNotEqual(getattr(ended, "exitCode", 0), 0, node.output)
        lines = log_lines(node.workdir, "does not start")
        self.assertEqual(len(lines), 1, node.output)
        self.assertEqual(log_lines(node.workdir, "Traceback"), [])
        return lines[0]

    async def test_a_state_file_of_a_newer_schema_version(self) -> None:
        line = await self.refused(lambda data: set_user_version(os.path.join(data, "state.db"), 99))
        self.assertIn("state.db has schema version 99", line)
        self.assertIn(f"reads schema versions up to {STATE_SCHEMA_VERSION}", line)

    async def test_a_command_log_entry_of_a_newer_entry_version(self) -> None:
        def append(data: str) -> None:
            db = sqlite3.connect(os.path.join(data, "log.db"))
            last = db.execute("SELECT value FROM log_meta WHERE key = 'last_index'").fetchone()[0]
            db.execute(
                "INSERT INTO log (idx, command) VALUES (?, ?)",
                (last + 1, encode_entry(newer_command())),
            )
            db.execute("UPDATE log_meta SET value = ? WHERE key = 'last_index'", (last + 1,))
            db.commit()
            db.close()

        line = await self.refused(append)
        self.assertIn("command log entry", line)
        self.assertIn(f"entry version {ENTRY_VERSION + 1}", line)


class ForwardedProposalTests(SynchronousTestCase):
    """
    The leader's C{/peer/propose} (in memory through StubTreq): a command a
    member of a newer release forwards is answered with an error, never
    proposed (a forwarded write is no reason to stop the leader).
    """

    def setUp(self) -> None:
        self.proposed: list[Command] = []

        def propose_as_leader(command: Command) -> Deferred:
            self.proposed.append(command)
            return succeed({"result": {"ok": True, "value": None}, "index": 1})

        api = PeerAPI(SimpleNamespace(propose_as_leader=propose_as_leader), Admin())  # type: ignore[arg-type]
        self.treq = StubTreq(api.resource())

    def post(self, body: bytes) -> tuple[int, dict]:
        d = self.treq.post("http://leader.test/peer/propose", data=body, headers=basic())
        self.treq.flush()
        response = self.successResultOf(d)
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_a_command_of_a_newer_entry_version_is_refused(self) -> None:
        code, body = self.post(newer_command())
        self.assertEqual((code, body["error"]["code"]), (409, "unsupported_version"))
        self.assertIn(f"entry version {ENTRY_VERSION + 1}", body["error"]["message"])
        self.assertEqual(self.proposed, [])

    def test_a_command_with_an_op_this_release_does_not_know_is_refused(self) -> None:
        code, body = self.post(Command("label_jobs", {}).to_bytes())
        self.assertEqual((code, body["error"]["code"]), (409, "unsupported_version"))
        self.assertEqual(self.proposed, [])

    def test_a_command_it_reads_is_proposed(self) -> None:
        code, _ = self.post(Command(Op.SET_ENTRY_VERSION, {"version": 2}, version=2).to_bytes())
        self.assertEqual(code, 200)
        self.assertEqual([c.op for c in self.proposed], [Op.SET_ENTRY_VERSION])


class ClusterNodeHaltsTests(TestCase):
    """
    A real cluster node (a cluster of one, so its own log is all there is)
    whose Raft log holds a committed entry of a newer entry version: it
    stops at that entry with one critical line and exit code 1, and its
    state does not apply it.
    """

    timeout = 90

    async def test_a_committed_entry_of_a_newer_version_stops_the_node(self) -> None:
        cluster = ProcessCluster(reactor, os.path.abspath(self.mktemp()), 1)
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        await cluster.wait_leader(30)
        await cluster.stop(1)
        node = cluster.node(1)
        data = os.path.join(node.workdir, "data")
        db = sqlite3.connect(os.path.join(data, "raft.db"))
        index, term = db.execute("SELECT idx, term FROM entries ORDER BY idx DESC").fetchone()
        db.execute(
            "INSERT INTO entries (idx, term, kind, data, request_id) VALUES (?, ?, 0, ?, '')",
            (index + 1, term, newer_command()),
        )
        db.execute("UPDATE hard_state SET commit_index = ?", (index + 1,))
        db.commit()
        db.close()
        node.spawn()
        ended = await node.exited()
        self.assertEqual(getattr(ended, "exitCode", 0), 1, node.output)
        lines = log_lines(node.workdir, "stops:")
        self.assertEqual(len(lines), 1, node.output)
        self.assertIn("critical", lines[0])
        self.assertIn(f"Raft entry {index + 1}:", lines[0])
        self.assertIn(f"entry version {ENTRY_VERSION + 1}", lines[0])
        state = sqlite3.connect(os.path.join(data, "state.db"))
        applied = state.execute("SELECT value FROM meta WHERE key = 'applied_index'").fetchone()
        state.close()
        self.assertLessEqual(applied[0], index)

    def test_the_leader_s_refusal_reaches_the_follower_s_client(self) -> None:
        """
        A leader that refuses a command of a newer entry version than the
        cluster writes answers 409 with the versions; the follower's peer
        client raises the same EntryVersionTooLow (its API answers 409 too).
        """

        def propose_as_leader(command: Command) -> Deferred:
            return fail(EntryVersionTooLow("labels", 2, 1))

        api = PeerAPI(SimpleNamespace(propose_as_leader=propose_as_leader), Admin())  # type: ignore[arg-type]
        treq = StubTreq(api.resource())
        client = PeerClient(treq, Admin(), lambda node_id: "http://leader.test")
        d = client.propose(1, Command(Op.DELETE_JOB, {"uuid": "j"}, version=2), 1.0)
        treq.flush()
        error = self.failureResultOf(d, EntryVersionTooLow).value
        self.assertEqual((error.feature, error.needed, error.current), ("labels", 2, 1))
