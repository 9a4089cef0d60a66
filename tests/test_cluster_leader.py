"""
Tests of the leader's duties (scheduler0.cluster.leader) on task.Clock with
a real SQLite state machine and a fake node: who gets which job, when jobs
leave a node that is gone, paused or over its share, and the fan-in of
the nodes' progress marks.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from scheduler0.cluster.leader import REBALANCE_INTERVAL_S, STALL_S, LeaderDuties
from scheduler0.cluster.peer import PeerUnavailable
from scheduler0.errors import WritesRefused
from scheduler0.store.commands import Command, Result
from scheduler0.store.sqlite import connection_pool
from scheduler0.store.state import StateStore
from scheduler0.timeutil import format_instant, utc_from_timestamp
from scheduler0.versions import ENTRY_VERSION

NOW = 1_800_000_000.0


@attrs.define(eq=False)
class FakeNode:
    """The part of ClusterNode the duties use: leadership, leases, proposals."""

    state: Any
    members: set[int]
    live: dict[int, bool] = attrs.field(factory=dict)
    gone_nodes: set[int] = attrs.field(factory=set)
    is_leader: bool = True
    lease_s: float = 1.0
    node_tenure: float = 10.0
    config: Any = None
    peers: Any = None
    index: int = 1000
    proposed: list[Command] = attrs.field(factory=list)
    moving_off: set[int] = attrs.field(factory=set)
    skewed_nodes: set[int] = attrs.field(factory=set)
    moving_while_proposing: list[set[int]] = attrs.field(factory=list)
    mark: tuple | None = None

    def progress_mark(self) -> tuple | None:
        return self.mark

    def tenure(self) -> float:
        return self.node_tenure

    def live_nodes(self) -> Any:
        return self.live, lambda owner: owner is None or owner in self.gone_nodes

    def member_ids(self) -> set[int]:
        return set(self.members)

    def is_paused(self) -> bool:
        return False

    def address_of(self, node_id: int) -> str:
        return f"http://127.0.0.1:{9090 + node_id}"

    def raft_address_of(self, node_id: int) -> str:
        return f"127.0.0.1:{7070 + node_id}"

    def propose(self, command: Command) -> Deferred:
        self.proposed.append(command)
        self.moving_while_proposing.append(set(self.moving_off))
        self.index += 1
        return self.state.apply(self.index, command)


@attrs.frozen
class Config:
    node_id: int = 1
    execution_log_fetch_fan_in: int = 2
    execution_log_fetch_interval_seconds: float = 2
    execution_history_per_job: int = 100


class LeaderDutiesTests(TestCase):
    async def setUp(self) -> None:
        from twisted.internet import reactor

        folder = self.mktemp()
        os.makedirs(folder)
        self.state = StateStore(connection_pool(os.path.join(folder, "state.db"), reactor))
        await self.state.open()
        self.addCleanup(self.state.close)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.node = FakeNode(self.state, {1, 2, 3}, live={1: False, 2: False, 3: False})
        self.node.config = Config()
        self.duties = LeaderDuties(self.node, self.state, Config(), self.clock)
        await self.apply(
            "create_project",
            {
                "project": {
                    "uuid": "p",
                    "name": "p",
                    "description": "",
                    "created_at": self.instant(),
                    "updated_at": self.instant(),
                },
                "signing_secret": "s",
            },
        )

    def instant(self, offset: float = 0) -> str:
        return format_instant(utc_from_timestamp(NOW + offset))

    async def apply(self, op: str, args: dict) -> dict:
        self.node.index += 1
        result = await self.state.apply(self.node.index, Command(op, args))
        self.assertTrue(result.ok, result)
        return result

    async def create_jobs(self, count: int, start: int = 0) -> None:
        jobs = [
            {
                "uuid": f"job-{n:04d}",
                "project_uuid": "p",
                "name": f"job {n}",
                "spec": "@every 1s",
                "callback_url": "http://127.0.0.1:9/cb",
                "data": None,
                "timezone": "UTC",
                "execution_type": "http",
                "paused": False,
                "catch_up_window_s": 60.0,
                "timeout_s": 30.0,
                "retry_max": 3,
                "created_at": self.instant(n / 1000),
                "updated_at": self.instant(n / 1000),
                "anchor_at": self.instant(),
            }
            for n in range(start, start + count)
        ]
        await self.apply("create_jobs", {"jobs": jobs})

    async def rebalance(self) -> list[Command]:
        before = len(self.node.proposed)
        self.duties._dirty = True
        await self.duties.rebalance()
        return [c for c in self.node.proposed[before:] if c.op == "assign_jobs"]

    async def test_members_are_registered_and_new_jobs_spread_evenly(self) -> None:
        """The first round records the members; jobs created then go 4/3/3 over them."""
        self.assertEqual(await self.rebalance(), [])
        self.assertEqual(sorted(m["node_id"] for m in await self.state.members()), [1, 2, 3])
        await self.create_jobs(10)
        self.assertEqual(await self.state.owner_counts(), {1: 4, 2: 3, 3: 3})

    async def test_jobs_of_a_gone_node_move_without_a_handover_instant(self) -> None:
        """A node that surely holds no lease loses its jobs at once, to the others, evenly."""
        await self.rebalance()
        await self.create_jobs(9)
        self.node.live = {1: False, 2: False}
        self.node.gone_nodes = {3}
        (command,) = await self.rebalance()
        self.assertIsNone(command.args["handover_at"])
        self.assertEqual({owner for _, owner in command.args["moves"]}, {1, 2})
        self.assertEqual(await self.state.owner_counts(), {1: 5, 2: 4})
        # While the move was being committed node 3 could get no lease.
        self.assertEqual(self.node.moving_while_proposing[-1], {3})
        self.assertEqual(self.node.moving_off, set())

    async def test_a_silent_node_keeps_its_jobs_while_its_lease_may_run(self) -> None:
        """Not heard from, but not surely gone: nothing moves, not even to rebalance."""
        await self.rebalance()
        await self.create_jobs(9)
        self.node.live = {1: False, 2: False}
        self.assertEqual(await self.rebalance(), [])
        self.assertEqual(await self.state.owner_counts(), {1: 3, 2: 3, 3: 3})

    async def test_a_paused_node_hands_its_jobs_over_at_an_instant(self) -> None:
        """
        A node the resource guard paused gives up its jobs through a handover
        one lease from now, so it fires until the new owners start.
        """
        await self.rebalance()
        await self.create_jobs(9)
        self.node.live = {1: False, 2: False, 3: True}
        (command,) = await self.rebalance()
        self.assertEqual(command.args["handover_at"], self.instant(self.node.lease_s))
        self.assertEqual(len(command.args["moves"]), 3)
        self.assertEqual(await self.state.owner_counts(), {1: 5, 2: 4})

    async def test_a_new_node_gets_its_share_through_handovers(self) -> None:
        """A node that joins is given jobs from the busiest nodes until counts are even."""
        self.node.members = {1, 2}
        self.node.live = {1: False, 2: False}
        await self.rebalance()
        await self.create_jobs(10)
        self.assertEqual(await self.state.owner_counts(), {1: 5, 2: 5})
        self.node.members = {1, 2, 3}
        self.node.live = {1: False, 2: False, 3: False}
        moves = await self.rebalance()
        self.assertTrue(moves)
        self.assertTrue(all(c.args["handover_at"] for c in moves))
        counts = await self.state.owner_counts()
        self.assertEqual(sorted(counts.values()), [3, 3, 4])

    async def test_a_round_after_the_leader_stalled_judges_nobody(self) -> None:
        """
        A round that runs much later than its interval follows a stall of the
        leader itself, whose unread renewals would make live nodes look gone:
        it moves nothing, and the round after it, on time, does.
        """
        await self.rebalance()
        await self.create_jobs(9)
        self.node.live = {1: False, 2: False}
        self.node.gone_nodes = {3}
        self.clock.advance(REBALANCE_INTERVAL_S + STALL_S + 0.5)
        self.assertEqual(await self.rebalance(), [])
        self.assertEqual(self.duties.stalled_rounds, 1)
        self.clock.advance(REBALANCE_INTERVAL_S)
        (command,) = await self.rebalance()
        self.assertEqual({owner for _, owner in command.args["moves"]}, {1, 2})

    async def test_a_new_leader_waits_before_placing_jobs(self) -> None:
        """In its first moments a leader moves nothing (members are still renewing with it)."""
        await self.rebalance()
        await self.create_jobs(6)
        self.node.gone_nodes = {3}
        self.node.live = {1: False, 2: False}
        self.node.node_tenure = 0.1
        self.assertEqual(await self.rebalance(), [])

    async def test_fan_in_commits_progress_marks_and_a_moved_job_continues_from_them(
        self,
    ) -> None:
        """
        One round asks this node and ExecutionLogFetchFanIn - 1 peers how far
        they got and commits the marks as one small entry; a peer that does
        not answer is left for a later round; a mark that did not change is
        not committed again. A job moved off a gone node then continues from
        that node's mark.
        """
        await self.rebalance()
        await self.create_jobs(4)
        owners = await self.state.ownership_of([f"job-{n:04d}" for n in range(4)])
        on_two = sorted(uuid for uuid, (owner, _) in owners.items() if owner == 2)
        self.assertTrue(on_two)
        index = self.node.index
        self.node.mark = (self.instant(5), index, index)
        asked = []

        class Peers:
            def progress(peers, node_id: int, timeout: float) -> Deferred:
                asked.append(node_id)
                if node_id == 3:
                    return fail(PeerUnavailable("node 3: ConnectionRefused"))
                return succeed({"mark": [self.instant(3), index, index]})

        self.node.peers = Peers()
        await self.duties.fan_in()
        self.assertEqual(asked, [2])
        marks = [c.args["marks"] for c in self.node.proposed if c.op == "record_progress"]
        self.assertEqual(
            marks, [[[1, self.instant(5), index, index], [2, self.instant(3), index, index]]]
        )
        await self.duties.fan_in()  # nodes 3 and 1: 3 does not answer, 1 did not change
        self.assertEqual(asked, [2, 3])
        self.assertEqual(len([c for c in self.node.proposed if c.op == "record_progress"]), 1)
        reports = await self.state.progress_reports()
        self.assertEqual(reports[2], (self.instant(3), index, index))
        await self.apply("assign_jobs", {"moves": [[uuid, 1] for uuid in on_two]})
        progress = await self.state.job_progress(on_two)
        self.assertEqual(progress, {uuid: self.instant(2.999) for uuid in on_two})

    async def test_a_node_whose_clock_is_out_of_bounds_is_asked_how_far_it_got_first(
        self,
    ) -> None:
        """
        The jobs of a node that said its clock is out of bounds move at once,
        and, since it stopped firing but still answers, its progress mark is
        read and committed just before: they continue exactly from there.
        """
        await self.rebalance()
        await self.create_jobs(9)
        owners = await self.state.ownership_of([f"job-{n:04d}" for n in range(9)])
        on_three = sorted(uuid for uuid, (owner, _) in owners.items() if owner == 3)
        index = self.node.index
        asked = []

        class Peers:
            def progress(peers, node_id: int, timeout: float) -> Deferred:
                asked.append(node_id)
                return succeed({"mark": [self.instant(7), index, index]})

        self.node.peers = Peers()
        self.node.live = {1: False, 2: False}
        self.node.gone_nodes = {3}
        self.node.skewed_nodes = {3}
        (command,) = await self.rebalance()
        self.assertEqual(asked, [3])
        self.assertEqual(
            [c.op for c in self.node.proposed[-2:]], ["record_progress", "assign_jobs"]
        )
        self.assertIsNone(command.args["handover_at"])
        progress = await self.state.job_progress(on_three)
        self.assertEqual(progress, {uuid: self.instant(6.999) for uuid in on_three})

    async def test_duties_rest_on_a_follower(self) -> None:
        """On a node that does not lead, the loops propose nothing."""
        self.node.is_leader = False
        self.duties._once(self.duties.rebalance)
        self.assertEqual(self.node.proposed, [])
        return succeed(None)


@attrs.define(eq=False)
class NoMembersState:
    """A state machine that never stores a member, so every full round writes again."""

    def members(self) -> Deferred:
        return succeed([])

    def owner_counts(self) -> Deferred:
        return succeed({})

    def entry_version(self) -> Deferred:
        # Already this release's, and logged: the duties propose nothing for it.
        return succeed(ENTRY_VERSION)

    def entry_version_index(self) -> Deferred:
        return succeed(1)


@attrs.define(eq=False)
class RefusingNode(FakeNode):
    """A leader whose writes are refused (its data directory is full) while C{refused}."""

    refused: bool = False

    def propose(self, command: Command) -> Deferred:
        self.proposed.append(command)
        if self.refused:
            return fail(WritesRefused("this write was not stored and changed nothing: full"))
        return succeed(Result.success(None))


class PausedDutiesTests(SynchronousTestCase):
    def test_refused_writes_are_one_event_each_way_however_many_rounds(self) -> None:
        """
        While the leader's writes are refused, its duties try every round
        but say so once ("... paused: ..."), and once more when a write is
        committed again; over a long pause the log does not grow.
        """
        clock = Clock()
        clock.advance(NOW)
        node = RefusingNode(NoMembersState(), {1}, live={1: False}, refused=True)
        node.config = Config()
        duties = LeaderDuties(node, NoMembersState(), Config(), clock)  # type: ignore[arg-type]
        duties.start()
        self.addCleanup(duties.stop)
        with capturedLogs() as events:
            node.mark = ("2027-01-15T08:00:00.000Z", 1, 1)
            for step in range(600):  # 60 s of rounds
                clock.advance(REBALANCE_INTERVAL_S)
                node.mark = (f"2027-01-15T08:00:{step // 10:02d}.000Z", 1, 1)
            refused_rounds = duties.failed_rounds
            node.refused = False
            for _ in range(50):
                clock.advance(REBALANCE_INTERVAL_S)
            node.refused = True
            for step in range(100):
                clock.advance(REBALANCE_INTERVAL_S)
                node.mark = (f"2027-01-15T08:01:{step // 10:02d}.000Z", 1, 1)
        ops = {command.op for command in node.proposed}
        self.assertEqual(ops, {"set_members", "record_progress"})
        # Both duties kept trying while refused: rebalance every full round,
        # the fan-in every interval.
        self.assertGreater(refused_rounds, 40)
        said = [
            e for e in events if e.get("event") in ("leader_duties_paused", "leader_duties_resumed")
        ]
        self.assertEqual(
            [e["event"] for e in said],
            ["leader_duties_paused", "leader_duties_resumed", "leader_duties_paused"],
        )
        self.assertIn("paused: this write was not stored", said[0]["log_format"].format(**said[0]))
        self.assertEqual(said[1]["rounds"], refused_rounds)
        self.assertTrue(duties.paused)
        self.assertEqual(duties.pauses, 2)
        # Nothing else was logged per round.
        self.assertEqual(len(events), 3, [e["log_format"] for e in events])
