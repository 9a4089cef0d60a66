"""
Contract tests for the node's seams (L{scheduler0.ports}): one mixin per
seam, whose tests state what every implementation does. Each
C{tests/test_contract_*} module runs a mixin against the real
implementation and against every fake in C{tests/support} that stands for
it; a subclass says how to build one and how to drive it.

mypy checks this module, so the fakes' fit to the Protocols is checked
here too (L{fakes_fit}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.delivery import Delivery, Outcome
from scheduler0.ports import (
    AppliedCommands,
    ExecutionHistory,
    ExecutionRecords,
    JobReader,
    Proposer,
    Sender,
    StateReader,
)
from scheduler0.store.commands import Command, Result
from tests.support.api import RecordingExecutions, RecordingProposer
from tests.support.executor import delivery
from tests.support.scheduler import FakeExecutions, FakeExecutor, FakeProposer, FakeState
from tests.support.state import T0, T1, job, project


def fakes_fit(
    proposer: RecordingProposer,
    subscribers: FakeProposer,
    history: RecordingExecutions,
    records: FakeExecutions,
    reader: FakeState,
    sender: FakeExecutor,
) -> None:
    """Never called: mypy checks that each fake fits the seam it stands for."""
    _proposer: Proposer = proposer
    _subscribers: AppliedCommands = subscribers
    _history: ExecutionHistory = history
    _records: ExecutionRecords = records
    _reader: JobReader = reader
    _sender: Sender = sender


# A mixin is a test case to mypy, and to trial only once a subclass of it
# says how to build what it tests (else trial would run it bare).
if TYPE_CHECKING:
    _Contract = SynchronousTestCase
else:
    _Contract = object


def succeeded(result: Result) -> bool:
    """Whether a command's result says it was applied (the one place that reads a result)."""
    return result.ok


def rejection(result: Result) -> str:
    """The code of a rejected command's result."""
    return str(result.code)


def named(result: Result) -> str:
    """The name in an applied project command's value."""
    return str(result.value["name"])


def create_project(uuid: str, name: str) -> Command:
    return Command("create_project", {"project": project(uuid, name)})


def rename_project(uuid: str, name: str) -> Command:
    return Command("update_project", {"uuid": uuid, "changes": {"name": name}, "updated_at": T1})


class ProposerContract(_Contract):
    """L{Proposer}: a proposed command is applied, and its result comes back."""

    def proposer(self) -> Proposer:
        raise NotImplementedError

    def settle(self) -> None:
        """Let whatever carries a proposal (a log, Raft) run to completion."""

    def proposed(self, proposer: Proposer, command: Command) -> Any:
        d = proposer.propose(command)
        self.settle()
        return self.successResultOf(d)

    def test_fits(self) -> None:
        """The implementation has what the Protocol names."""
        self.assertIsInstance(self.proposer(), Proposer)

    def test_result_comes_back(self) -> None:
        """A proposed command fires with its result once applied."""
        result = self.proposed(self.proposer(), create_project("p1", "alpha"))
        self.assertTrue(succeeded(result))
        self.assertEqual(named(result), "alpha")

    def test_rejection_is_a_result(self) -> None:
        """A command the state refuses fires with a rejection, not a failure."""
        proposer = self.proposer()
        self.proposed(proposer, create_project("p1", "alpha"))
        result = self.proposed(proposer, create_project("p2", "alpha"))
        self.assertFalse(succeeded(result))
        self.assertEqual(rejection(result), "conflict")

    def test_applied_in_order(self) -> None:
        """Commands proposed together are applied in the order proposed."""
        proposer = self.proposer()
        first = proposer.propose(create_project("p1", "alpha"))
        second = proposer.propose(rename_project("p1", "beta"))
        self.settle()
        self.assertTrue(succeeded(self.successResultOf(first)))
        self.assertEqual(named(self.successResultOf(second)), "beta")


class AppliedCommandsContract(_Contract):
    """L{AppliedCommands}: subscribers hear each applied command of the ops they name."""

    def subscribers(self) -> AppliedCommands:
        raise NotImplementedError

    def apply(self, subscribers: AppliedCommands, command: Command) -> None:
        """Have C{command} applied where C{subscribers} tells of it."""
        raise NotImplementedError

    def heard(self, subscribers: AppliedCommands, ops: list[str] | None) -> list[tuple[str, bool]]:
        seen: list[tuple[str, bool]] = []
        subscribers.subscribe(
            lambda command, result: seen.append((command.op, succeeded(result))), ops
        )
        return seen

    def test_fits(self) -> None:
        """The implementation has what the Protocol names."""
        self.assertIsInstance(self.subscribers(), AppliedCommands)

    def test_every_op(self) -> None:
        """A subscriber that names no ops hears every applied command, in order."""
        subscribers = self.subscribers()
        seen = self.heard(subscribers, None)
        self.apply(subscribers, create_project("p1", "alpha"))
        self.apply(subscribers, rename_project("p1", "beta"))
        self.assertEqual(seen, [("create_project", True), ("update_project", True)])

    def test_only_named_ops(self) -> None:
        """A subscriber that names ops hears those alone."""
        subscribers = self.subscribers()
        seen = self.heard(subscribers, ["update_project"])
        self.apply(subscribers, create_project("p1", "alpha"))
        self.apply(subscribers, rename_project("p1", "beta"))
        self.assertEqual(seen, [("update_project", True)])

    def test_a_failing_subscriber_does_not_silence_the_others(self) -> None:
        """A subscriber that raises is logged; the ones after it still hear."""
        subscribers = self.subscribers()

        def fail(command: Command, result: Any) -> None:
            raise RuntimeError("subscriber broke")

        subscribers.subscribe(fail)
        seen = self.heard(subscribers, None)
        self.apply(subscribers, create_project("p1", "alpha"))
        self.assertEqual(seen, [("create_project", True)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


def execution(
    execution_id: str, job_uuid: str, second: int, state: str = "succeeded"
) -> dict[str, Any]:
    """One execution record, its slot C{second} seconds into 2026."""
    slot = f"2026-01-01T00:00:{second:02d}.000Z"
    return {
        "execution_id": execution_id,
        "job_uuid": job_uuid,
        "project_uuid": "p1",
        "scheduled_at": slot,
        "state": state,
        "attempts": 0 if state == "scheduled" else 1,
        "node_id": 1,
        "started_at": None if state == "scheduled" else slot,
        "finished_at": None if state in ("scheduled", "running") else slot,
        "status_code": None,
        "error": None,
        "skip_reason": None,
    }


class ExecutionHistoryContract(_Contract):
    """L{ExecutionHistory}: what was recorded is read back newest first, by job, paged."""

    def history(self, records: list[dict[str, Any]]) -> ExecutionHistory:
        """An implementation holding C{records}."""
        raise NotImplementedError

    def page(self, history: ExecutionHistory, **filters: Any) -> tuple[list[str], int]:
        answer = self.successResultOf(history.query(**filters))
        return [item["execution_id"] for item in answer[0]], answer[1]

    def sample(self) -> ExecutionHistory:
        return self.history([execution(f"e{n}", f"j{n % 2}", n) for n in range(5)])

    def test_fits(self) -> None:
        """The implementation has what the Protocol names."""
        self.assertIsInstance(self.history([]), ExecutionHistory)

    def test_newest_first(self) -> None:
        """Records come back newest slot first, with the total."""
        self.assertEqual(self.page(self.sample()), (["e4", "e3", "e2", "e1", "e0"], 5))

    def test_by_job(self) -> None:
        """A job's records are those alone."""
        self.assertEqual(self.page(self.sample(), job_uuid="j1"), (["e3", "e1"], 2))

    def test_paged(self) -> None:
        """A page is C{limit} records from C{offset}; the total counts them all."""
        history = self.sample()
        self.assertEqual(self.page(history, limit=2, offset=1), (["e3", "e2"], 5))
        self.assertEqual(self.page(history, limit=2, offset=4), (["e0"], 5))

    def test_latest_per_job(self) -> None:
        """Each job asked for that has records maps to its newest."""
        latest = self.successResultOf(self.sample().latest_per_job(["j0", "j1", "none"]))
        self.assertEqual(
            {job_uuid: record["execution_id"] for job_uuid, record in latest.items()},
            {"j0": "e4", "j1": "e3"},
        )


class ExecutionRecordsContract(_Contract):
    """L{ExecutionRecords}: what the scheduler records tells how far each job got."""

    def records(self) -> ExecutionRecords:
        raise NotImplementedError

    def test_fits(self) -> None:
        """The implementation has what the Protocol names."""
        self.assertIsInstance(self.records(), ExecutionRecords)

    def test_last_slot_got_past_scheduled(self) -> None:
        """
        A job's last slot is its latest recorded past C{scheduled}; a slot
        only scheduled is still owed, and jobs not asked for are left out.
        """
        records = self.records()
        records.record(execution("e1", "j1", 1))
        records.record(execution("e2", "j1", 2, state="running"))
        records.record(execution("e3", "j1", 3, state="scheduled"))
        records.record(execution("e4", "j2", 4, state="scheduled"))
        records.record(execution("e5", "j3", 5))
        slots = self.successResultOf(records.last_slots_of(["j1", "j2"]))
        self.assertEqual(slots, {"j1": "2026-01-01T00:00:02.000Z"})

    def test_a_record_replaced(self) -> None:
        """A record given again for the same execution replaces the first."""
        records = self.records()
        records.record(execution("e1", "j1", 1, state="scheduled"))
        records.record(execution("e1", "j1", 1))
        slots = self.successResultOf(records.last_slots_of(["j1"]))
        self.assertEqual(slots, {"j1": "2026-01-01T00:00:01.000Z"})


class JobReaderContract(_Contract):
    """L{JobReader}: the jobs applied are read back page by page in creation order."""

    def reader(self, jobs: list[dict[str, Any]]) -> JobReader:
        """An implementation after C{jobs} (of project p1) were created."""
        raise NotImplementedError

    def page(self, reader: JobReader, after: tuple[str, str] | None, limit: int) -> list[str]:
        return [j["uuid"] for j in self.successResultOf(reader.jobs_page(after, limit))]

    def sample(self) -> JobReader:
        return self.reader([job("b", created_at=T1), job("c"), job("a")])

    def test_fits(self) -> None:
        """The implementation has what the Protocol names."""
        self.assertIsInstance(self.reader([]), JobReader)

    def test_creation_order(self) -> None:
        """Jobs come in creation order, uuid breaking ties."""
        self.assertEqual(self.page(self.sample(), None, 10), ["a", "c", "b"])

    def test_pages(self) -> None:
        """A page holds at most C{limit}; the next starts after the last one read."""
        reader = self.sample()
        self.assertEqual(self.page(reader, None, 2), ["a", "c"])
        self.assertEqual(self.page(reader, (T0, "c"), 2), ["b"])
        self.assertEqual(self.page(reader, (T1, "b"), 2), [])

    def test_created_job_read_back(self) -> None:
        """A job read back has the fields it was created with."""
        (read,) = self.successResultOf(self.reader([job("a")]).jobs_page(None, 1))
        created = job("a")
        self.assertEqual({k: read[k] for k in created}, created)

    def test_no_project_is_paused_at_first(self) -> None:
        """Jobs created in a project that was never paused: no paused project."""
        self.assertEqual(self.successResultOf(self.sample().paused_projects()), set())

    def test_a_project_s_active_jobs_page_by_page(self) -> None:
        """A project's jobs that are not paused themselves, in creation order, a page at a time."""
        reader = self.reader([job("b", created_at=T1), {**job("c"), "paused": True}, job("a")])
        first = self.successResultOf(reader.project_jobs_page("p1", None, None, 1))
        self.assertEqual([j["uuid"] for j in first], ["a"])
        rest = self.successResultOf(reader.project_jobs_page("p1", None, (T0, "a"), 10))
        self.assertEqual([j["uuid"] for j in rest], ["b"])
        self.assertEqual(self.successResultOf(reader.project_jobs_page("p9", None)), [])


class StateReaderContract(_Contract):
    """
    L{StateReader}: the projects and jobs applied are read back by key and
    in listings; a key that names nothing reads None.
    """

    def state(self, jobs: list[dict[str, Any]]) -> StateReader:
        """An implementation after project p1 ("alpha") and C{jobs} (of p1) were created."""
        raise NotImplementedError

    def read(self, d: Deferred[Any]) -> Any:
        return self.successResultOf(d)

    def test_fits(self) -> None:
        """The implementation has what the Protocol names."""
        self.assertIsInstance(self.state([]), StateReader)

    def test_created_project_read_back(self) -> None:
        """A created project is read back by uuid, by name, and in the listing."""
        state = self.state([])
        created = project()
        by_uuid = self.read(state.get_project("p1"))
        self.assertEqual({k: by_uuid[k] for k in created}, created)
        self.assertEqual(self.read(state.get_project_by_name("alpha"))["uuid"], "p1")
        items, total = self.read(state.list_projects())
        self.assertEqual(([p["uuid"] for p in items], total), (["p1"], 1))

    def test_created_jobs_read_back(self) -> None:
        """Created jobs are read back by uuid, counted, and listed in creation order."""
        state = self.state([job("b", created_at=T1), job("a")])
        created = job("a")
        read = self.read(state.get_job("a"))
        self.assertEqual({k: read[k] for k in created}, created)
        self.assertEqual(self.read(state.count_jobs("p1")), 2)
        items, total = self.read(state.list_jobs(project_uuid="p1"))
        self.assertEqual(([j["uuid"] for j in items], total), (["a", "b"], 2))

    def test_missing_reads_none(self) -> None:
        """A uuid, name or key that names nothing reads None."""
        state = self.state([job("a")])
        self.assertIsNone(self.read(state.get_project("p9")))
        self.assertIsNone(self.read(state.get_project_by_name("omega")))
        self.assertIsNone(self.read(state.get_job("z")))
        self.assertIsNone(self.read(state.get_credential("c9")))
        self.assertIsNone(self.read(state.get_credential_by_key("k9")))

    def test_a_new_state_writes_this_release_s_entry_version(self) -> None:
        """A state made by this release writes its entry version (scheduler0.versions)."""
        from scheduler0.versions import ENTRY_VERSION

        self.assertEqual(self.read(self.state([]).entry_version()), ENTRY_VERSION)


class SenderContract(_Contract):
    """
    L{Sender}: a submitted delivery is reported started, then has exactly
    one outcome; after C{stop}, one submitted is skipped without starting.
    """

    def sender(self, on_started: Any, on_outcome: Any) -> Sender:
        """An implementation that reports to the two callbacks."""
        raise NotImplementedError

    def answer(self, status_code: int) -> None:
        """The receiver of the oldest delivery not yet answered answers C{status_code}."""
        raise NotImplementedError

    def setUp(self) -> None:
        self.reports: list[tuple[str, str]] = []
        self.outcomes: list[Outcome] = []

        def started(d: Delivery, at: float) -> None:
            self.reports.append(("started", d.execution_id))

        def finished(outcome: Outcome) -> None:
            self.outcomes.append(outcome)
            self.reports.append((outcome.state, outcome.delivery.execution_id))

        self.subject = self.sender(started, finished)

    def test_fits(self) -> None:
        """The implementation has what the Protocol names."""
        self.assertIsInstance(self.subject, Sender)

    def test_success(self) -> None:
        """A delivery its receiver takes is reported started, then succeeded, once."""
        self.subject.submit(delivery(1, retry_max=0))
        self.answer(200)
        self.assertEqual(self.reports, [("started", "exec-1"), ("succeeded", "exec-1")])
        self.assertEqual(self.outcomes[0].status_code, 200)

    def test_failure(self) -> None:
        """A delivery its receiver refuses (and no retry left) is reported failed, once."""
        self.subject.submit(delivery(1, retry_max=0))
        self.answer(500)
        self.assertEqual(self.reports, [("started", "exec-1"), ("failed", "exec-1")])

    def test_after_stop(self) -> None:
        """Once stopped, a submitted delivery is skipped at once and never started."""
        d: Deferred[None] = self.subject.stop()
        self.successResultOf(d)
        self.subject.submit(delivery(1))
        self.assertEqual(self.reports, [("skipped", "exec-1")])
        self.assertEqual(self.outcomes[0].skip_reason, "node_stopping")

    def test_nothing_waiting_nothing_congested(self) -> None:
        """With nothing submitted, no URL is congested."""
        self.assertEqual(self.subject.congested(float("inf")), set())
