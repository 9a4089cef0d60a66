"""
A handover whose old owner stopped just before the instant, and whose job
moved on again before the new owner's gap check: the slots the old owner
never sent are still fired.

Real pieces throughout but the network: each node is a real
L{SchedulerService} with a real L{Handover} over a real L{Ownership} of one
real state file (the state machine applies every command, as each node's
copy would) and its own real executions file; only the executor (which
records what was handed to it) and the leader (the test proposes what it
would) are played by the test. Time is a L{task.Clock}.
"""

from __future__ import annotations

import os
from datetime import timedelta

from twisted.internet import task

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.cluster.handover import Handover
from scheduler0.cluster.ownership import Ownership
from scheduler0.scheduler.service import SchedulerService
from scheduler0.scheduler.spec import execution_id_at, slot_milliseconds
from scheduler0.store.commands import Command
from scheduler0.store.executions import ExecutionStore
from scheduler0.store.state import StateStore
from scheduler0.timeutil import format_instant
from tests.support.scheduler import START, FakeExecutor, FakeProposer
from tests.support.state import StateCase, member, project

JOB = "job-1"
# How long after a handover instant the new owner checks for owed slots.
GAP_CHECK_S = 5.0


def second(k: float) -> str:
    return format_instant(START + timedelta(seconds=k))


class ClusterNode:
    """One node: its scheduler, handover and executions over the shared state file."""

    def __init__(self, case: HandoverMovedOnTests, node_id: int) -> None:
        self.case = case
        self.node_id = node_id
        pool = SynchronousConnectionPool(
            os.path.join(case.directory, f"executions-{node_id}-{len(case.nodes)}.db")
        )
        case.addCleanup(pool.close)
        self.executions = ExecutionStore(pool, case.clock, history_per_job=1000)
        case.result(self.executions.open())
        self.proposer = FakeProposer()
        self.executor = FakeExecutor()
        self.executor.clock = case.clock
        self.scheduler = SchedulerService(
            case.clock,
            case.state,
            self.proposer,
            self.executions,
            self.executor,
            node_id=node_id,
            may_fire=lambda: True,
            handover=Handover(
                case.clock,
                Ownership(case.state, self.executions, node_id),
                node_id,
                gap_check_s=GAP_CHECK_S,
            ),
            applied_index=lambda: case.index,
        )
        self.scheduler.startService()
        self.stopped = False

    def begin_sending(self) -> None:
        """The first attempt of everything handed to the executor began (it was sent)."""
        now = self.case.clock.seconds()
        for delivery in self.executor.submitted:
            if delivery.execution_id not in self.case.started:
                self.case.started.add(delivery.execution_id)
                self.scheduler.on_started(delivery, now)

    def stop(self) -> None:
        """The node stops: it sends nothing more and reports nothing more."""
        self.stopped = True
        self.case.result(self.scheduler.stopService())

    def slots(self) -> list[str]:
        return [d.scheduled_at for d in self.executor.submitted if d.job_uuid == JOB]


class HandoverMovedOnTests(StateCase):
    def setUp(self) -> None:
        super().setUp()
        self.clock = task.Clock()
        self.clock.advance(START.timestamp())
        self.state: StateStore = self.store()
        self.index = 0
        self.nodes: list[ClusterNode] = []
        self.started: set[str] = set()
        self.command("create_project", project=project("project-1"))
        self.command("set_members", members=[member(n) for n in (1, 2, 3)])
        self.command(
            "create_jobs",
            jobs=[
                {
                    "uuid": JOB,
                    "project_uuid": "project-1",
                    "name": "every second",
                    "spec": "@every 1s",
                    "callback_url": "http://127.0.0.1:9/callback",
                    "catch_up_window_s": 60,
                    "created_at": second(0),
                    "updated_at": second(0),
                }
            ],
        )
        self.command("assign_jobs", moves=[[JOB, 2]], handover_at=None)

    def command(self, op: str, **args: object) -> None:
        """Apply one command to the state, and tell every running node, as its log would."""
        result = self.apply(self.state, op, **args)
        self.assertTrue(result.ok, result)
        self.index = self.indexes[id(self.state)]
        for node in self.nodes:
            if not node.stopped:
                for observer in node.proposer.observers:
                    observer(Command(op, args), result)

    def node(self, node_id: int) -> ClusterNode:
        node = ClusterNode(self, node_id)
        self.nodes.append(node)
        return node

    def run_until(self, k: float) -> None:
        """Let time pass until START + C{k} s; every node sends what it fires at once."""
        end = START.timestamp() + k
        while self.clock.seconds() < end:
            self.clock.advance(min(0.05, end - self.clock.seconds()))
            for node in self.nodes:
                if not node.stopped:
                    node.begin_sending()

    def fan_in(self) -> None:
        """The leader commits how far each running node got."""
        marks = []
        for node in self.nodes:
            mark = None if node.stopped else node.scheduler.progress_mark()
            if mark is not None:
                marks.append([node.node_id, *mark])
        self.command("record_progress", marks=marks)

    def delivered(self) -> list[str]:
        return sorted({slot for node in self.nodes for slot in node.slots()})

    def handed_over_by_a_node_that_stopped(self) -> tuple[ClusterNode, ClusterNode]:
        """
        Node 2 fires the job, is asked to hand it to node 1 at START + 20 s,
        reports having sent every slot before START + 15 s, sends two more
        and stops at START + 17.5 s: slots 18 and 19 s are never sent by it.
        """
        old, new = self.node(2), self.node(1)
        self.run_until(10.5)
        self.fan_in()
        self.command("assign_jobs", moves=[[JOB, 1]], handover_at=second(20))
        self.run_until(14.5)
        self.fan_in()
        self.run_until(17.5)
        old.stop()
        self.assertEqual(old.slots()[-1], second(17))
        self.run_until(21.5)
        self.fan_in()
        return old, new

    def assertEverySlot(self, first: float, last: float) -> None:
        """Every slot from C{first} to C{last} was delivered, by one node or another."""
        wanted = [second(k) for k in range(int(first), int(last) + 1)]
        missing = [slot for slot in wanted if slot not in self.delivered()]
        self.assertEqual(missing, [])

    def test_not_moved_again_before_the_gap_check(self) -> None:
        """
        The usual case, for comparison: node 1 keeps the job, and its gap
        check fires the slots from node 2's last report to the instant.
        """
        old, new = self.handed_over_by_a_node_that_stopped()
        self.run_until(29.5)
        self.assertEqual(sorted(new.slots()), [second(k) for k in range(15, 30)])
        self.assertEverySlot(1, 29)

    def test_moved_on_to_another_node_before_the_gap_check(self) -> None:
        """
        The job moves from node 1 to node 3 two seconds after the handover
        instant, before node 1's gap check: node 1's report (which speaks
        only for slots from the instant on) was committed at that move, yet
        the slots node 2 never sent before the instant are fired.
        """
        old, new = self.handed_over_by_a_node_that_stopped()
        self.node(3)
        self.command("assign_jobs", moves=[[JOB, 3]], handover_at=second(31.5))
        self.run_until(45)
        self.assertIn(second(18), new.slots())
        self.assertIn(second(19), new.slots())
        self.assertEverySlot(1, 44)
        # What node 2 reported sent is not sent again.
        self.assertNotIn(second(14), new.slots())
        # Late, at node 1's gap check, with the slot's own execution id.
        (late,) = [
            (d, at)
            for d, at in zip(new.executor.submitted, new.executor.turns, strict=True)
            if d.scheduled_at == second(18)
        ]
        self.assertGreaterEqual(late[1], START.timestamp() + 20 + GAP_CHECK_S)
        self.assertLess(late[1], START.timestamp() + 21 + GAP_CHECK_S)
        self.assertEqual(
            late[0].execution_id,
            execution_id_at(JOB, slot_milliseconds(START + timedelta(seconds=18))),
        )

    def test_moved_back_to_the_old_owner_come_back_before_the_gap_check(self) -> None:
        """
        Node 2 comes back right after the handover instant and gets the job
        back (a rebalance at an instant) before node 1's gap check: its new
        run's report says nothing of the old one, and the slots it never
        sent before the first instant are still fired.
        """
        old, new = self.handed_over_by_a_node_that_stopped()
        back = self.node(2)
        self.run_until(22)
        self.fan_in()
        self.command("assign_jobs", moves=[[JOB, 2]], handover_at=second(31.5))
        self.run_until(45)
        self.assertIn(second(18), new.slots())
        self.assertIn(second(19), new.slots())
        self.assertEverySlot(1, 44)
        # The cluster keeps one report per node: node 2's from the run that
        # held the job (through 14 s) gave way to its new run's, so only what
        # was committed at the move (through 10 s) is known, and 11-17 s,
        # which it sent, are sent again, as after any failover.
        self.assertNotIn(second(10), new.slots())
        self.assertIn(second(32), back.slots())
