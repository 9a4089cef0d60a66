"""
Tests of the scheduler in a cluster: a node fires only the jobs it owns,
only while its lease is valid, takes up jobs moved to it from where the
cluster got, and hands jobs over at an instant without a slot fired twice
or missed. Driven by task.Clock with an in-memory ownership table.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.cluster.handover import Handover
from scheduler0.cluster.leader import plan_moves
from scheduler0.cluster.ownership import TakenUp
from scheduler0.scheduler.service import SchedulerService
from scheduler0.store.commands import Command, Result
from scheduler0.timeutil import format_instant
from tests.support.scheduler import (
    START,
    FakeExecutions,
    FakeExecutor,
    FakeProposer,
    FakeState,
    make_job,
)


class FakeOwnership:
    """Who owns what (job uuid -> (node id, handover_at)), and committed progress."""

    def __init__(self, state: FakeState, node_id: int, owners: dict, progress: dict) -> None:
        self.state = state
        self.node_id = node_id
        self.owners = owners
        self.progress = progress
        self.recorded: dict[str, list[str]] = {}

    def _mine(self, job: dict) -> bool:
        return self.owners.get(job["uuid"], (None, None))[0] == self.node_id

    def _with_handover(self, job: dict) -> dict:
        return dict(
            job, handover_at=self.owners[job["uuid"]][1], active_since=job.get("active_since")
        )

    def jobs_page(self, after: Any, limit: int) -> Any:
        ordered = sorted(self.state.jobs, key=lambda job: (job["created_at"], job["uuid"]))
        page = [
            self._with_handover(j)
            for j in ordered
            if self._mine(j) and (after is None or (j["created_at"], j["uuid"]) > after)
        ]
        return succeed(page[:limit])

    def last_slots_of(self, uuids: list[str]) -> Any:
        return succeed({u: self.progress[u] for u in uuids if u in self.progress})

    def last_slots_before(self, taken_up: list[TakenUp]) -> Any:
        """
        From what the cluster knows was done: C{recorded[uuid]}, the slots
        the old owner fired (all before the instant it handed the job over at).
        """
        found = {}
        for job in taken_up:
            before = self.recorded.get(job.uuid)
            if before:
                found[job.uuid] = max(before)
        return succeed(found)

    def jobs(self, uuids: list[str]) -> Any:
        jobs = {j["uuid"]: j for j in self.state.jobs}
        return succeed([self._with_handover(jobs[u]) for u in uuids if u in jobs])

    def owned_jobs(self, uuids: list[str]) -> Any:
        jobs = {j["uuid"]: j for j in self.state.jobs}
        return succeed(
            [self._with_handover(jobs[u]) for u in uuids if u in jobs and self._mine(jobs[u])]
        )


class Node:
    """One node's scheduler over a shared job list and ownership table."""

    def __init__(
        self,
        clock: Clock,
        jobs: list,
        owners: dict,
        progress: dict,
        node_id: int,
        applied_index: Any = None,
    ):
        self.state = FakeState(jobs)
        self.proposer = FakeProposer()
        self.executor = FakeExecutor()
        self.lease = True
        self.ownership = FakeOwnership(self.state, node_id, owners, progress)
        self.scheduler = SchedulerService(
            clock,
            self.state,
            self.proposer,
            FakeExecutions(),
            self.executor,
            node_id=node_id,
            may_fire=lambda: self.lease,
            handover=Handover(clock, self.ownership, node_id, gap_check_s=5.0),
            applied_index=applied_index,
        )
        self.scheduler.startService()

    def apply(self, op: str, args: dict, value: Any = None) -> None:
        for fn in self.proposer.observers:
            fn(Command(op, args), Result.success(value))

    def slots(self, job_uuid: str | None = None) -> list[str]:
        return [
            d.scheduled_at
            for d in self.executor.submitted
            if job_uuid is None or d.job_uuid == job_uuid
        ]


def second(k: float) -> str:
    return format_instant(START + timedelta(seconds=k))


class ClusterSchedulerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        self.jobs = [make_job("job-a"), make_job("job-b")]
        self.owners = {"job-a": (1, None), "job-b": (2, None)}
        self.progress: dict[str, str] = {}

    def node(self, node_id: int) -> Node:
        return Node(self.clock, self.jobs, self.owners, self.progress, node_id)

    def hold_reads(self, *nodes: Node) -> list[Deferred]:
        """Make the take-over reads of C{nodes} wait: the list of reads, to fire by hand."""
        reading: list[Deferred] = []

        def owned_jobs(uuids: list[str]) -> Deferred:
            d: Deferred = Deferred()
            reading.append(d)
            return d

        for node in nodes:
            node.ownership.owned_jobs = owned_jobs
        return reading

    def elapse(self, seconds: float) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(0.01)

    def test_a_node_fires_only_the_jobs_it_owns(self) -> None:
        """Each of two nodes fires its own job and never the other's."""
        one, two = self.node(1), self.node(2)
        self.elapse(3.005)
        self.assertEqual(set(one.slots()), set(one.slots("job-a")))
        self.assertEqual(one.slots("job-a"), [second(k) for k in (1, 2, 3)])
        self.assertEqual(two.slots(), [second(k) for k in (1, 2, 3)])
        self.assertEqual({d.job_uuid for d in two.executor.submitted}, {"job-b"})

    def test_without_a_lease_nothing_fires_and_owed_slots_follow_late(self) -> None:
        """Slots due while the lease is lapsed fire, with their own ids, once it is back."""
        one = self.node(1)
        one.lease = False
        self.elapse(3.005)
        self.assertEqual(one.slots(), [])
        one.lease = True
        self.elapse(0.2)
        self.assertEqual(one.slots("job-a"), [second(k) for k in (1, 2, 3)])

    def test_new_jobs_go_only_to_their_owner(self) -> None:
        """A created job starts firing on the node that owns it, not on the others."""
        one, two = self.node(1), self.node(2)
        job = make_job("job-c", at=START + timedelta(seconds=0.5))
        self.jobs.append(job)
        self.owners["job-c"] = (2, None)
        for node in (one, two):
            node.apply("create_jobs", {}, [job])
        self.elapse(3.005)
        self.assertEqual(one.slots("job-c"), [])
        self.assertEqual(two.slots("job-c"), [second(k) for k in (1, 2, 3)])

    def test_a_job_taken_from_a_gone_node_catches_up_from_committed_progress(self) -> None:
        """
        Moved without a handover instant, a job fires on its new owner every
        slot after the last one the cluster committed, late but with its ids.
        """
        two = self.node(2)
        self.elapse(4.005)
        self.progress["job-a"] = second(1)
        self.owners["job-a"] = (2, None)
        two.apply("assign_jobs", {"moves": [["job-a", 2]], "handover_at": None})
        self.elapse(0.05)
        self.assertEqual(two.slots("job-a"), [second(k) for k in (2, 3, 4)])
        self.elapse(1)
        self.assertEqual(two.slots("job-a")[-1], second(5))

    def test_a_handover_fires_every_slot_exactly_once(self) -> None:
        """
        A job handed from node 1 to node 2 at an instant: node 1 fires the
        slots before it, node 2 those at and after it; none twice, none missed.
        """
        one, two = self.node(1), self.node(2)
        self.elapse(2.5)
        handover = second(4)
        self.owners["job-a"] = (2, handover)
        args = {"moves": [["job-a", 2]], "handover_at": handover}
        one.apply("assign_jobs", args)
        two.apply("assign_jobs", args)
        self.elapse(4.005)
        self.assertEqual(one.slots("job-a"), [second(k) for k in (1, 2, 3)])
        self.assertEqual(two.slots("job-a"), [second(k) for k in (4, 5, 6)])

    def test_a_change_before_the_handover_instant_does_not_start_the_new_owner_early(
        self,
    ) -> None:
        """A job changed between its move and the handover instant still starts there."""
        one, two = self.node(1), self.node(2)
        self.elapse(1.5)
        handover = second(4)
        self.owners["job-a"] = (2, handover)
        args = {"moves": [["job-a", 2]], "handover_at": handover}
        one.apply("assign_jobs", args)
        two.apply("assign_jobs", args)
        self.elapse(0.5)
        changed = dict(self.jobs[0], data={"n": 5}, updated_at=second(2))
        for node in (one, two):
            node.apply("update_job", {}, changed)
        self.elapse(4.005)
        self.assertEqual(one.slots("job-a"), [second(k) for k in (1, 2, 3)])
        self.assertEqual(two.slots("job-a"), [second(k) for k in (4, 5, 6)])

    def test_a_pause_stops_a_job_being_handed_over(self) -> None:
        """
        A job handed to another node at an instant still fires on the old
        owner until then, unless it is paused meanwhile (resumed before the
        instant, its remaining slots are the new owner's to fill).
        """
        one = self.node(1)
        self.elapse(1.5)
        handover = second(6)
        self.owners["job-a"] = (2, handover)
        one.apply("assign_jobs", {"moves": [["job-a", 2]], "handover_at": handover})
        self.elapse(1)
        one.apply("update_job", {}, dict(self.jobs[0], paused=True))
        self.elapse(2)
        self.assertEqual(one.slots("job-a"), [second(1), second(2)])
        one.apply("update_job", {}, dict(self.jobs[0], paused=False, updated_at=second(4.5)))
        self.elapse(4)
        self.assertEqual(one.slots("job-a"), [second(1), second(2)])

    def test_a_job_resumed_before_its_handover_instant_fires_on_the_new_owner(self) -> None:
        """
        A job paused while it is handed over and resumed before the instant
        fires from the resume on the new owner (the old one dropped it).
        """
        one, two = self.node(1), self.node(2)
        self.elapse(1.5)
        self.jobs[0] = dict(self.jobs[0], paused=True)
        for node in (one, two):
            node.apply("update_job", {}, self.jobs[0])
        self.owners["job-a"] = (2, second(6))
        args = {"moves": [["job-a", 2]], "handover_at": second(6)}
        for node in (one, two):
            node.apply("assign_jobs", args)
        self.elapse(1)
        resumed = dict(self.jobs[0], paused=False, updated_at=second(2.7))
        for node in (one, two):
            node.apply("update_job", {}, resumed)
        self.elapse(4.5)
        self.assertEqual(one.slots("job-a"), [second(1)])
        self.assertEqual(two.slots("job-a"), [second(k) for k in range(3, 8)])

    def test_a_change_of_data_does_not_cancel_owed_slots(self) -> None:
        """
        A job whose data changed after its owner failed is still caught up
        from the last committed slot by its new owner (only resuming or a new
        schedule moves that floor).
        """
        two = self.node(2)
        self.elapse(4.005)
        self.progress["job-a"] = second(1)
        self.jobs[0] = dict(self.jobs[0], data={"n": 2}, updated_at=second(2.5))
        self.owners["job-a"] = (2, None)
        two.apply("assign_jobs", {"moves": [["job-a", 2]], "handover_at": None})
        self.elapse(0.05)
        self.assertEqual(two.slots("job-a"), [second(k) for k in (2, 3, 4)])
        self.jobs[0] = dict(self.jobs[0], active_since=second(3.5))
        self.owners["job-a"] = (2, None)
        three = self.node(3)
        self.owners["job-a"] = (3, None)
        three.apply("assign_jobs", {"moves": [["job-a", 3]], "handover_at": None})
        self.elapse(0.05)
        self.assertEqual(three.slots("job-a"), [second(4)])

    def test_slots_an_old_owner_never_fired_before_a_handover_are_filled(self) -> None:
        """
        Node 1 loses its lease before the handover instant: the slots it owed
        before the instant, which no node recorded, are fired by node 2 once
        it has checked, late but with their ids; recorded ones are not.
        """
        one, two = self.node(1), self.node(2)
        self.elapse(2.5)
        handover = second(6)
        self.owners["job-a"] = (2, handover)
        args = {"moves": [["job-a", 2]], "handover_at": handover}
        one.apply("assign_jobs", args)
        two.apply("assign_jobs", args)
        self.elapse(1)
        one.lease = False  # node 1 fired slot 3, then stopped
        two.ownership.recorded["job-a"] = one.slots("job-a")
        self.elapse(4)
        self.assertEqual(one.slots("job-a"), [second(k) for k in (1, 2, 3)])
        self.assertEqual(two.slots("job-a"), [second(k) for k in range(6, 8)])
        self.elapse(5)
        fired = two.slots("job-a")
        self.assertEqual(sorted(fired), [second(k) for k in range(4, 13)])
        # Late: after the slots the new owner fired from the instant on.
        self.assertGreater(fired.index(second(4)), fired.index(second(6)))

    def test_a_handover_gap_is_filled_though_the_job_moved_on(self) -> None:
        """
        The node that took a job over at an instant fires the unrecorded slots
        before it even when the job has moved on to a third node since.
        """
        one, two = self.node(1), self.node(2)
        self.elapse(2.5)
        handover = second(4)
        self.owners["job-a"] = (2, handover)
        args = {"moves": [["job-a", 2]], "handover_at": handover}
        one.apply("assign_jobs", args)
        two.apply("assign_jobs", args)
        one.lease = False  # node 1 fails before slot 3
        self.elapse(3)
        self.owners["job-a"] = (3, second(7))
        two.apply("assign_jobs", {"moves": [["job-a", 3]], "handover_at": second(7)})
        two.ownership.recorded["job-a"] = one.slots("job-a")
        self.elapse(7)
        self.assertEqual(one.slots("job-a"), [second(1), second(2)])
        self.assertEqual(sorted(two.slots("job-a")), [second(k) for k in range(3, 7)])

    def test_a_handover_whose_old_owner_reported_fills_nothing(self) -> None:
        """When the old owner recorded every slot before the instant, the check fires nothing."""
        one, two = self.node(1), self.node(2)
        self.elapse(2.5)
        handover = second(4)
        self.owners["job-a"] = (2, handover)
        args = {"moves": [["job-a", 2]], "handover_at": handover}
        one.apply("assign_jobs", args)
        two.apply("assign_jobs", args)
        self.elapse(2)
        two.ownership.recorded["job-a"] = one.slots("job-a")
        self.elapse(7)
        self.assertEqual(two.slots("job-a"), [second(k) for k in range(4, 12)])

    def test_a_restored_state_owes_the_jobs_it_gives_this_node_from_their_progress(
        self,
    ) -> None:
        """
        After a snapshot is installed, jobs this node now owns are caught up
        from where the cluster got, not started afresh (slots were missed).
        """
        two = self.node(2)
        self.elapse(4.005)
        self.owners["job-a"] = (2, None)
        self.progress["job-a"] = second(1)
        two.apply("state_restored", {})
        self.elapse(0.05)
        self.assertEqual(two.slots("job-a"), [second(k) for k in (2, 3, 4)])

    def test_a_node_judged_gone_stops_its_moved_jobs_at_once(self) -> None:
        """A job moved off a node without a handover instant is dropped there at once."""
        one = self.node(1)
        self.elapse(1.5)
        self.owners["job-a"] = (2, None)
        one.apply("assign_jobs", {"moves": [["job-a", 2]], "handover_at": None})
        self.elapse(3)
        self.assertEqual(one.slots("job-a"), [second(1)])
        self.assertIn(("job-a", "job_moved"), one.executor.cancelled)

    def test_a_pause_takes_effect_while_a_take_over_is_being_read(self) -> None:
        """
        A pause applied while the node still reads who owns newly created
        jobs stops the paused job at once; the change to a job it is still
        taking up waits for that read.
        """
        one = self.node(1)
        ownership = one.ownership
        reading: Deferred = Deferred()
        ownership.owned_jobs = lambda uuids: reading
        self.elapse(1.5)
        one.apply("create_jobs", {}, [make_job("job-c", at=START + timedelta(seconds=1.2))])
        one.apply("update_job", {}, dict(self.jobs[0], paused=True))
        self.elapse(2)
        self.assertEqual(one.slots("job-a"), [second(1)])
        job_c = make_job("job-c", at=START + timedelta(seconds=1.2))
        one.apply("update_job", {}, dict(job_c, data={"n": 9}))
        reading.callback([dict(job_c, handover_at=None, active_since=None)])
        self.elapse(1)
        fired = [d for d in one.executor.submitted if d.job_uuid == "job-c"]
        self.assertTrue(fired)
        self.assertEqual(fired[-1].data, {"n": 9})

    def test_a_job_moved_away_stops_even_while_a_take_over_is_being_read(self) -> None:
        """
        Jobs moved off a node stop the moment the move is applied, though a
        take-over read before it is still pending (a node back from a
        partition may fire again as soon as it has applied the move).
        """
        one = self.node(1)
        reading: Deferred = Deferred()
        one.ownership.owned_jobs = lambda uuids: reading
        self.elapse(1.5)
        one.apply("create_jobs", {}, [make_job("job-c", at=START + timedelta(seconds=1.2))])
        self.owners["job-a"] = (2, None)
        one.apply("assign_jobs", {"moves": [["job-a", 2]], "handover_at": None})
        self.elapse(3)
        self.assertEqual(one.slots("job-a"), [second(1)])

    def test_a_take_over_read_before_the_job_moved_on_does_not_start_it(self) -> None:
        """
        A take-over whose read still showed the job as this node's, when a
        later move took it elsewhere before the read came back, does not
        fire it (the other node does); moved on at an instant, it fires only
        until then.
        """
        two = self.node(2)
        reading = self.hold_reads(two)
        self.elapse(1.5)
        two.apply("assign_jobs", {"moves": [["job-a", 2]], "handover_at": None})
        two.apply("assign_jobs", {"moves": [["job-a", 3]], "handover_at": None})
        reading[0].callback([dict(self.jobs[0], handover_at=None, active_since=None)])
        self.elapse(3)
        self.assertEqual(two.slots("job-a"), [])
        two.apply("assign_jobs", {"moves": [["job-a", 2]], "handover_at": None})
        two.apply("assign_jobs", {"moves": [["job-a", 3]], "handover_at": second(6)})
        self.elapse(0.01)
        reading[1].callback([dict(self.jobs[0], handover_at=None, active_since=None)])
        self.elapse(4)
        self.assertEqual(two.slots("job-a")[-1], second(5))
        self.assertNotIn(second(6), two.slots("job-a"))

    def test_a_slot_before_the_handover_held_up_by_a_lapsed_lease_is_still_sent(self) -> None:
        """
        A job handed over at an instant: a slot before the instant that was
        prepared but not yet sent when the lease lapsed is sent once the
        lease is back, even if by then the next slot (past the instant)
        has been reached and ended the job here.
        """
        # Whether the release or the next preparation runs first once the
        # lease is back depends on when it comes back: try each.
        for lapse in range(100, 115):
            self.setUp()
            one = self.node(1)
            self.elapse(2.5)
            handover = format_instant(START + timedelta(seconds=3.42))
            self.owners["job-a"] = (2, handover)
            one.apply("assign_jobs", {"moves": [["job-a", 2]], "handover_at": handover})
            entries = one.scheduler._entries
            while not (entries.get("job-a") and entries["job-a"].prepared):
                self.clock.advance(0.001)
            one.lease = False  # slot 3 is prepared, not yet sent
            self.elapse(lapse / 100)
            one.lease = True
            self.elapse(2)
            self.assertEqual(
                one.slots("job-a"), [second(k) for k in (1, 2, 3)], f"lease back after {lapse}"
            )
            self.assertNotIn("job-a", entries)

    def test_a_job_deleted_while_its_take_over_is_being_read_is_not_started(self) -> None:
        """
        A job deleted after a take-over read it as this node's, but before
        the take-over started it (the read, or the look at its last slots,
        still pending), is not started: the delete found nothing to stop,
        and starting the job after it would fire it for good. Also for a
        project deleted with its jobs.
        """
        two, one = self.node(2), self.node(1)
        reading = self.hold_reads(two, one)
        self.elapse(1.5)
        two.apply("assign_jobs", {"moves": [["job-a", 2]], "handover_at": None})
        two.apply("delete_job", {}, {"uuid": "job-a"})
        reading[0].callback([dict(self.jobs[0], handover_at=None, active_since=None)])
        one.apply("assign_jobs", {"moves": [["job-b", 1]], "handover_at": None})
        one.apply("delete_project", {}, {"deleted_jobs": ["job-b"]})
        reading[1].callback([dict(self.jobs[1], handover_at=None, active_since=None)])
        self.elapse(3)
        self.assertEqual(two.slots("job-a"), [])
        self.assertEqual(one.slots("job-b"), [])

    def test_updates_to_a_job_owned_elsewhere_do_not_start_it_here(self) -> None:
        """An update applied on a node that does not own the job fires nothing there."""
        one = self.node(1)
        changed = dict(self.jobs[1], spec="@every 2s")
        one.apply("update_job", {}, changed)
        self.elapse(3.005)
        self.assertEqual(one.slots("job-b"), [])


class PlanMovesTests(SynchronousTestCase):
    def test_moves_fill_the_emptiest_nodes_first(self) -> None:
        """Each job goes to the target with the fewest jobs at that moment."""
        moves = plan_moves({1: 5, 2: 0, 3: 1}, [1, 2, 3], {9: ["a", "b", "c", "d"]}, 100)
        self.assertEqual(moves, [("a", 2), ("b", 2), ("c", 3), ("d", 2)])

    def test_moves_stop_at_the_limit(self) -> None:
        """No more than the limit of moves is planned in one round."""
        moves = plan_moves({}, [1], {None: ["a", "b", "c"]}, 2)
        self.assertEqual(len(moves), 2)

    def test_no_target_no_move(self) -> None:
        """With no healthy node to take them, jobs stay where they are."""
        self.assertEqual(plan_moves({}, [], {None: ["a"]}, 10), [])


class ProgressMarkTests(SynchronousTestCase):
    """
    How far a node got (SchedulerService.progress_mark): the first slot not
    yet sent, and the log index its knowledge of ownership is as of.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        self.jobs = [make_job("job-a"), make_job("job-b")]
        self.owners = {"job-a": (1, None), "job-b": (2, None)}
        self.index = 10

    def node(self) -> Node:
        return Node(self.clock, self.jobs, self.owners, {}, 1, applied_index=lambda: self.index)

    def elapse(self, seconds: float) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(0.01)

    def test_no_mark_on_a_single_node_or_before_the_jobs_are_loaded(self) -> None:
        """Without a log index there is nothing to report; nor while the jobs load."""
        single = Node(self.clock, self.jobs, self.owners, {}, 1)
        self.assertIsNone(single.scheduler.progress_mark())
        loading = Node(self.clock, self.jobs, self.owners, {}, 1, applied_index=lambda: 10)
        pages: list[Deferred] = []
        ownership = loading.ownership
        ownership.jobs_page = lambda after, limit: pages.append(Deferred()) or pages[-1]
        loading.scheduler.stopService()
        loading.scheduler.startService()
        self.assertIsNone(loading.scheduler.progress_mark())

    def test_the_mark_is_the_first_slot_whose_post_has_not_begun(self) -> None:
        """
        Slots handed to the executor hold the mark until their first attempt
        begins; with every one begun it is now (the next slot is to come).
        """
        one = self.node()
        self.elapse(2.005)
        first, second_slot = one.executor.submitted
        self.assertEqual(one.scheduler.progress_mark(), (second(1), 10, 10))
        one.scheduler.on_started(first, self.clock.seconds())
        self.assertEqual(one.scheduler.progress_mark()[0], second(2))
        one.scheduler.on_started(second_slot, self.clock.seconds())
        self.assertEqual(one.scheduler.progress_mark()[0], second(2.009))

    def test_the_mark_is_as_of_before_a_take_up_still_being_read(self) -> None:
        """
        While a job moved to this node is being read, the mark speaks only for
        the changes before that move; once taken up, the job's owed slots hold
        the mark back.
        """
        one = self.node()
        self.elapse(3.005)
        for delivery in one.executor.submitted:
            one.scheduler.on_started(delivery, self.clock.seconds())
        reading: list[Deferred] = []

        def owned_jobs(uuids: list[str]) -> Deferred:
            d: Deferred = Deferred()
            reading.append(d)
            return d

        one.ownership.owned_jobs = owned_jobs
        self.index = 12
        self.owners["job-b"] = (1, None)
        one.apply("assign_jobs", {"moves": [["job-b", 1]], "handover_at": None})
        self.assertEqual(one.scheduler.progress_mark(), (second(3.009), 10, 11))
        self.index = 13
        one.apply("update_project", {})
        self.assertEqual(one.scheduler.progress_mark()[2], 11)
        reading[0].callback([dict(self.jobs[1], handover_at=None, active_since=None)])
        # job-b owes every slot since its creation (no progress known).
        self.assertEqual(one.scheduler.progress_mark(), (second(1), 10, 13))
