"""
Tests for project pause (issue 19): the state machine keeps C{paused} on a
project and each job's own flag untouched, and a resume stamps the
project's active jobs as a job resume would; the scheduler, over the real
store and proposer on a L{Clock}, fires none of a paused project's jobs --
after a restart either -- and fires exactly the active ones again from the
resume on, owing nothing of the pause.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.cluster.handover import Handover
from scheduler0.scheduler.service import SchedulerService
from scheduler0.store.commands import Command, Op, Result
from scheduler0.timeutil import format_instant, utc_from_timestamp
from tests.support.api import fired, real_backend
from tests.support.scheduler import (
    START,
    FakeExecutions,
    FakeExecutor,
    FakeProposer,
    FakeState,
    make_job,
)

T0 = format_instant(START)


def project(uuid: str = "p1", **extra: Any) -> dict:
    return {
        "uuid": uuid,
        "name": f"project {uuid}",
        "description": "",
        "created_at": T0,
        "updated_at": T0,
        **extra,
    }


class ProjectPauseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        self.state, self.proposer, _ = real_backend(self.clock)
        self.executor = FakeExecutor()
        self.executor.clock = self.clock
        self.executions = FakeExecutions()
        self.propose("create_project", {"project": project("p1")})
        self.propose("create_project", {"project": project("p2")})
        jobs = [
            make_job("a", project_uuid="p1"),
            make_job("b", project_uuid="p1", paused=True),
            make_job("c", project_uuid="p2"),
        ]
        self.propose("create_jobs", {"jobs": jobs})

    def propose(self, op: str, args: dict, version: int = 2) -> Any:
        result = fired(self.proposer.propose(Command(op, args, version=version)))
        self.assertTrue(result.ok, result)
        return result.value

    def now(self) -> str:
        return format_instant(utc_from_timestamp(self.clock.seconds()))

    def set_paused(self, paused: bool, uuid: str = "p1") -> Any:
        return self.propose(
            "update_project",
            {"uuid": uuid, "changes": {"paused": paused}, "updated_at": self.now()},
        )

    def scheduler(self) -> SchedulerService:
        scheduler = SchedulerService(
            self.clock, self.state, self.proposer, self.executions, self.executor, node_id=1
        )
        scheduler.startService()
        self.addCleanup(scheduler.stopService)
        return scheduler

    def fired_jobs(self, seconds: int) -> list[str]:
        """The jobs fired in the next C{seconds}, one second at a time."""
        before = len(self.executor.submitted)
        for _ in range(seconds):
            self.clock.advance(1)
        return sorted({d.job_uuid for d in self.executor.submitted[before:]})

    def test_the_state_keeps_each_job_s_flag_and_stamps_the_resumed_ones(self) -> None:
        """
        Pausing changes no job; resuming stamps active_since and updated_at
        of the project's active jobs (not the paused one, not another project's).
        """
        before = {u: fired(self.state.get_job(u)) for u in "abc"}
        self.assertEqual(self.set_paused(True)["paused"], True)
        self.assertEqual(fired(self.state.get_project("p1"))["paused"], True)
        self.assertEqual(fired(self.state.paused_projects()), {"p1"})
        self.assertEqual({u: fired(self.state.get_job(u)) for u in "abc"}, before)
        self.clock.advance(30)
        resumed = self.set_paused(False)
        self.assertNotIn("paused", resumed)
        self.assertEqual(fired(self.state.paused_projects()), set())
        after = {u: fired(self.state.get_job(u)) for u in "abc"}
        self.assertEqual(after["a"]["updated_at"], self.now())
        self.assertEqual(after["b"], before["b"])
        self.assertEqual(after["c"], before["c"])
        (placed,) = fired(self.state.project_jobs_page("p1", None))
        self.assertEqual((placed["uuid"], placed["active_since"]), ("a", self.now()))

    def test_a_paused_project_fires_none_of_its_jobs_until_resumed(self) -> None:
        """
        Its jobs stop at once, another project's go on; resumed, exactly its
        active jobs fire again, from the resume on (no slot of the pause).
        """
        self.scheduler()
        self.assertEqual(self.fired_jobs(3), ["a", "c"])
        self.set_paused(True)
        self.assertIn(("a", "job_paused"), self.executor.cancelled)
        self.assertEqual(self.fired_jobs(10), ["c"])
        resumed_at = self.clock.seconds()
        self.set_paused(False)
        before = len(self.executor.submitted)
        self.assertEqual(self.fired_jobs(3), ["a", "c"])
        slots_of_a = [d.scheduled_s for d in self.executor.submitted[before:] if d.job_uuid == "a"]
        self.assertTrue(slots_of_a)
        self.assertGreater(min(slots_of_a), resumed_at)
        self.assertTrue(fired(self.state.get_job("b"))["paused"])

    def test_a_restarted_node_fires_no_job_of_a_paused_project(self) -> None:
        """Jobs are loaded with the paused projects: a restart does not bring them back."""
        self.set_paused(True)
        scheduler = self.scheduler()
        self.assertEqual(self.fired_jobs(5), ["c"])
        self.assertIsNone(scheduler.next_run_at(fired(self.state.get_job("a"))))
        self.assertEqual(scheduler.active_jobs(), 1)

    def test_a_job_created_in_or_moved_to_a_paused_project_does_not_fire(self) -> None:
        """New jobs of a paused project wait for its resume; a job moved out fires again."""
        self.set_paused(True)
        self.scheduler()
        self.propose("create_jobs", {"jobs": [make_job("d", project_uuid="p1")]})
        self.propose(
            "update_job",
            {"uuid": "c", "changes": {"project_uuid": "p1"}, "updated_at": self.now()},
        )
        self.assertEqual(self.fired_jobs(5), [])
        self.propose(
            "update_job",
            {"uuid": "d", "changes": {"project_uuid": "p2"}, "updated_at": self.now()},
        )
        self.assertEqual(self.fired_jobs(3), ["d"])
        self.set_paused(False)
        self.assertEqual(self.fired_jobs(3), ["a", "c", "d"])

    def test_a_restored_state_brings_its_paused_projects(self) -> None:
        """
        After a snapshot restore the scheduler holds what the restored state
        says: a project paused in it stops, one resumed in it fires again.
        """
        scheduler = self.scheduler()
        self.assertEqual(self.fired_jobs(2), ["a", "c"])
        changes = {"paused": True}
        args = {"uuid": "p2", "changes": changes, "updated_at": self.now()}
        # Applied behind the scheduler's back, as a restored image holds it.
        index = fired(self.state.applied_index()) + 1
        fired(self.state.apply(index, Command("update_project", args, version=2)))
        scheduler.apply_change(Command(Op.STATE_RESTORED, {}), Result.success(None))
        self.assertEqual(self.fired_jobs(3), ["a"])

    def test_a_project_paused_again_while_its_jobs_are_read_stays_paused(self) -> None:
        """A resume whose read is overtaken by a new pause starts nothing."""
        self.set_paused(True)
        held = HeldProjectReads(self.state)
        scheduler = SchedulerService(
            self.clock, held, self.proposer, self.executions, self.executor, node_id=1
        )
        scheduler.startService()
        self.addCleanup(scheduler.stopService)
        self.set_paused(False)
        self.set_paused(True)
        self.assertEqual(len(held.reads), 1)
        held.release()
        self.assertEqual(self.fired_jobs(5), ["c"])


class HeldProjectReads:
    """The real store, whose reads of a project's jobs wait until released."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.reads: list[tuple[Deferred, Deferred]] = []

    def jobs_page(self, after: Any, limit: int) -> Deferred:
        return self.state.jobs_page(after, limit)

    def paused_projects(self) -> Deferred:
        return self.state.paused_projects()

    def project_jobs_page(self, *args: Any) -> Deferred:
        held: Deferred = Deferred()
        self.reads.append((self.state.project_jobs_page(*args), held))
        return held

    def release(self) -> None:
        for read, held in self.reads:
            read.chainDeferred(held)


class Owners:
    """Which node owns each job (a fake of L{scheduler0.cluster.ownership.Ownership})."""

    def __init__(self, jobs: list[dict], owners: dict[str, int], node_id: int) -> None:
        self.jobs = jobs
        self.owners = owners
        self.node_id = node_id
        #: Reads of a project's jobs held until the test releases them.
        self.held: list[tuple[Deferred, list[dict]]] = []
        self.hold = False

    def _mine(self, job: dict) -> dict | None:
        if self.owners.get(job["uuid"]) != self.node_id:
            return None
        return dict(job, handover_at=None, active_since=job.get("active_since"))

    def jobs_page(self, after: Any, limit: int) -> Deferred:
        ordered = sorted(self.jobs, key=lambda job: (job["created_at"], job["uuid"]))
        mine = [m for j in ordered if (m := self._mine(j)) is not None]
        return succeed([j for j in mine if after is None or (j["created_at"], j["uuid"]) > after])

    def last_slots_of(self, uuids: list[str]) -> Deferred:
        return succeed({})

    def owned_jobs(self, uuids: list[str]) -> Deferred:
        return succeed([m for j in self.jobs if j["uuid"] in uuids and (m := self._mine(j))])

    def project_jobs_page(self, project_uuid: str, after: Any, limit: int) -> Deferred:
        page = [
            m
            for j in self.jobs
            if j["project_uuid"] == project_uuid and not j["paused"] and (m := self._mine(j))
        ]
        if not self.hold:
            return succeed(page)
        d: Deferred = Deferred()
        self.held.append((d, page))
        return d

    def release(self) -> None:
        for d, page in self.held:
            d.callback(page)


class ClusterProjectPauseTests(SynchronousTestCase):
    """In a cluster the handover takes a resumed project's jobs up again, this node's only."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        jobs = [make_job(u, project_uuid="p1") for u in ("a", "b", "c")]
        self.state = FakeState(jobs)
        self.state.paused = {"p1"}
        self.owners = Owners(jobs, {"a": 1, "b": 1, "c": 2}, node_id=1)
        self.proposer = FakeProposer()
        self.executor = FakeExecutor()
        self.executor.clock = self.clock
        self.scheduler = SchedulerService(
            self.clock,
            self.state,
            self.proposer,
            FakeExecutions(),
            self.executor,
            node_id=1,
            handover=Handover(self.clock, self.owners, 1),
            applied_index=lambda: 0,
        )
        self.scheduler.startService()
        self.addCleanup(self.scheduler.stopService)

    def fired_jobs(self, seconds: int) -> list[str]:
        before = len(self.executor.submitted)
        for _ in range(seconds):
            self.clock.advance(1)
        return sorted({d.job_uuid for d in self.executor.submitted[before:]})

    def test_a_resume_takes_up_this_node_s_jobs(self) -> None:
        """Loaded paused, nothing fires; resumed, this node's two jobs do, not the other's."""
        self.assertEqual(self.fired_jobs(3), [])
        self.proposer.applied("update_project", {"uuid": "p1"})
        self.assertEqual(self.fired_jobs(3), ["a", "b"])
        self.proposer.applied("update_project", {"uuid": "p1", "paused": True})
        self.assertEqual(self.fired_jobs(3), [])

    def test_a_job_moved_away_during_the_resume_read_is_not_taken_up(self) -> None:
        """A job assigned elsewhere while the resume reads the project stays off this node."""
        self.owners.hold = True
        self.proposer.applied("update_project", {"uuid": "p1"})
        self.owners.owners["b"] = 2
        for fn in self.proposer.observers:
            fn(Command("assign_jobs", {"moves": [["b", 2]]}), Result.success(None))
        self.owners.release()
        self.assertEqual(self.fired_jobs(3), ["a"])
