"""
Execution records through failed writes and crashes: while executions.db
cannot be written (a full disk) the records wait in memory, reads answer
from the file and the memory merged, writes are tried again with backoff on
the reactor's clock, one log event tells each change, and at
ExecutionRecordsMaxPending the node stops firing; a record a crash left in
flight is resolved when the store opens, and the scheduler sends it again
under the same execution_id while its job's catch-up window allows.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from datetime import timedelta
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, fail
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0 import readiness
from scheduler0.scheduler.service import SchedulerService
from scheduler0.scheduler.spec import execution_id
from scheduler0.store import executions as store_executions
from scheduler0.store.executions import (
    HOLD_RETRY_FIRST_S,
    HOLD_RETRY_MAX_S,
    IN_DOUBT_ERROR,
    ExecutionStore,
)
from scheduler0.timeutil import format_instant, parse_instant
from tests.support.api import Harness
from tests.support.scheduler import START, FakeExecutor, FakeProposer, FakeState, make_job

T0 = "2026-01-01T00:00:00.000Z"
T1 = "2026-01-01T00:00:01.000Z"
T2 = "2026-01-01T00:00:02.000Z"


def record(eid: str, job_uuid: str = "j1", state: str = "running", **extra: Any) -> dict:
    value = {
        "execution_id": eid,
        "job_uuid": job_uuid,
        "project_uuid": "p1",
        "scheduled_at": T0,
        "state": state,
        "attempts": 1,
        "node_id": 3,
        "started_at": None,
        "finished_at": None,
        "status_code": None,
        "error": None,
        "skip_reason": None,
        "response_body": None,
    }
    value.update(extra)
    return value


class FullDiskPool:
    """
    A real SQLite pool (run inline) whose record writes fail while C{full},
    as SQLite's do on a full disk; reads (and prunes) go through.
    """

    def __init__(self, path: str) -> None:
        self.inner = SynchronousConnectionPool(path)
        self.full = False
        self.writes_tried = 0

    def runInteraction(self, fn: Any, *args: Any) -> Deferred:
        if fn is store_executions._write:
            self.writes_tried += 1
            if self.full:
                return fail(sqlite3.OperationalError("database or disk is full"))
        return self.inner.runInteraction(fn, *args)

    def close(self) -> None:
        self.inner.close()


class HeldRecordsTests(SynchronousTestCase):
    """Records wait in memory while they cannot be written; reads never fail for it."""

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.pool = FullDiskPool(os.path.join(directory, "executions.db"))
        self.addCleanup(self.pool.close)
        self.clock = task.Clock()
        self.store = ExecutionStore(self.pool, self.clock, flush_delay=0.25, max_pending=5)
        self.successResultOf(self.store.open())
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def told(self, name: str) -> list[dict]:
        return [e for e in self.events if e.get("event") == name]

    def test_a_failed_write_holds_the_records_and_tries_again_with_backoff(self) -> None:
        """
        A write that fails keeps its records in memory and is tried again
        after 0.25 s, then twice as long each time up to 5 s; one event says
        the records are held (with the cause) and one that they were written
        again, whatever the number of failures in between.
        """
        self.pool.full = True
        self.store.record(record("e1"))
        self.clock.advance(0.25)
        self.assertTrue(self.store.held())
        self.assertEqual(self.store.pending(), 1)
        # New records while held start no write of their own.
        self.store.record(record("e2"))
        tried = [self.pool.writes_tried]
        waits = []
        for _ in range(8):
            delay = min(call.getTime() for call in self.clock.getDelayedCalls())
            waits.append(round(delay - self.clock.seconds(), 3))
            self.clock.advance(delay - self.clock.seconds())
            tried.append(self.pool.writes_tried)
        self.assertEqual(
            waits, [HOLD_RETRY_FIRST_S, 0.5, 1.0, 2.0, 4.0, HOLD_RETRY_MAX_S, 5.0, 5.0]
        )
        self.assertEqual(tried, list(range(1, 10)))
        self.assertEqual(self.store.write_failures, 9)
        (held,) = self.told("execution_records_held")
        self.assertEqual(held["cause"], "database or disk is full")
        self.assertEqual(held["log_level"].name, "warn")
        self.assertEqual(self.told("execution_records_written"), [])

        self.pool.full = False
        self.clock.advance(HOLD_RETRY_MAX_S)
        self.assertFalse(self.store.held())
        self.assertEqual(self.store.pending(), 0)
        self.assertEqual(len(self.told("execution_records_written")), 1)
        self.assertEqual(len(self.told("execution_records_held")), 1)
        items, total = self.successResultOf(self.store.query())
        self.assertEqual((total, sorted(i["execution_id"] for i in items)), (2, ["e1", "e2"]))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reads_answer_from_the_file_and_the_records_held(self) -> None:
        """
        While writes fail, every read answers over the file's records with
        the held ones merged in (a held record replaces the file's row of the
        same id), and pages, filters and totals count both.
        """
        self.store.record(record("e0", scheduled_at=T0))
        self.store.record(record("other", "j2", state="succeeded", scheduled_at=T0))
        self.successResultOf(self.store.flush())
        self.pool.full = True
        self.store.record(record("e0", state="succeeded", status_code=200, scheduled_at=T0))
        self.store.record(record("e1", scheduled_at=T1), trusted=True)
        self.store.record(record("e2", state="failed", scheduled_at=T2))
        self.clock.advance(0.25)
        self.assertTrue(self.store.held())

        items, total = self.successResultOf(self.store.query(job_uuid="j1"))
        self.assertEqual(total, 3)
        self.assertEqual([i["execution_id"] for i in items], ["e2", "e1", "e0"])
        self.assertEqual(items[2]["state"], "succeeded")
        self.assertEqual(items[2]["status_code"], 200)
        page, total = self.successResultOf(self.store.query(limit=1, offset=1))
        self.assertEqual((total, [i["execution_id"] for i in page]), (4, ["e1"]))
        failed, total = self.successResultOf(self.store.query(state="failed"))
        self.assertEqual((total, [i["execution_id"] for i in failed]), (1, ["e2"]))
        latest = self.successResultOf(self.store.latest_per_job(["j1", "j2", "j3"]))
        self.assertEqual(
            {k: v["execution_id"] for k, v in latest.items()}, {"j1": "e2", "j2": "other"}
        )
        self.assertEqual(self.successResultOf(self.store.last_slots_of(["j1"])), {"j1": T2})
        # Nothing of the merge is left behind: once written, the file alone answers.
        self.pool.full = False
        self.clock.advance(HOLD_RETRY_FIRST_S)
        self.assertFalse(self.store.held())
        items, total = self.successResultOf(self.store.query())
        self.assertEqual(total, 4)

    def test_a_read_whose_flush_fails_still_answers(self) -> None:
        """A read that finds records buffered, and whose flush of them fails, answers merged."""
        self.pool.full = True
        self.store.record(record("e1"))
        items, total = self.successResultOf(self.store.query())
        self.assertEqual((total, items[0]["execution_id"]), (1, "e1"))
        self.assertTrue(self.store.held())

    def test_at_the_bound_the_node_stops_firing_until_records_are_written(self) -> None:
        """
        Firing goes on while fewer than max_pending records are held; at the
        bound firing_stopped says so (one error event, the health reason, the
        hold state), and it ends when the records are written.
        """
        self.pool.full = True
        for n in range(4):
            self.store.record(record(f"e{n}"))
        self.clock.advance(0.25)
        self.assertTrue(self.store.held())
        self.assertFalse(self.store.firing_stopped())
        self.assertIsNone(readiness.records_held(self.store.hold_state()))
        self.store.record(record("e4"))
        self.assertTrue(self.store.firing_stopped())
        self.assertTrue(self.store.firing_stopped())
        (stopped,) = self.told("execution_records_firing_stopped")
        self.assertEqual(stopped["log_level"].name, "error")
        self.assertEqual(self.store.firing_stops, 1)
        state = self.store.hold_state()
        self.assertEqual(
            {k: state[k] for k in ("held", "pending", "max_pending", "cause", "firing_stopped")},
            {
                "held": True,
                "pending": 5,
                "max_pending": 5,
                "cause": "database or disk is full",
                "firing_stopped": True,
            },
        )
        self.assertEqual(
            state["held_since"], format_instant(parse_instant("1970-01-01T00:00:00.250Z"))
        )
        reason = readiness.records_held(state)
        assert reason is not None
        self.assertEqual(reason["code"], readiness.RECORDS_HELD)
        self.assertIn("database or disk is full", reason["message"])

        self.pool.full = False
        self.clock.advance(HOLD_RETRY_MAX_S)
        self.assertFalse(self.store.firing_stopped())
        self.assertEqual(self.store.hold_state()["pending"], 0)

    def test_a_run_now_it_could_not_record_is_refused_not_sent(self) -> None:
        """
        POST /jobs/{uuid}/run while max_pending records are held answers 503
        with the code records_held and a message naming the cause, and sends
        nothing; below the bound, and once the records are written, a run is
        sent (202).
        """
        executor = FakeExecutor()
        scheduler = SchedulerService(
            self.clock,
            FakeState([]),
            FakeProposer(),
            self.store,
            executor,
            node_id=7,
            run_refusal=self.store.run_refusal,
        )
        api = Harness(scheduler=scheduler)
        job = api.job(api.project()["uuid"])
        run = f"/jobs/{job['uuid']}/run"
        self.pool.full = True
        for n in range(4):
            self.store.record(record(f"e{n}"))
        self.clock.advance(0.25)
        status, _, body = api.request("POST", run)
        self.assertEqual(status, 202, body)
        self.assertEqual(len(executor.submitted), 1)
        self.store.record(record("e4"))
        status, headers, body = api.request("POST", run)
        self.assertEqual(status, 503, body)
        self.assertEqual(body["error"]["code"], readiness.RECORDS_HELD)
        message = body["error"]["message"]
        self.assertIn("this run was not sent", message)
        self.assertIn("database or disk is full", message)
        self.assertIn("ExecutionRecordsMaxPending 5", message)
        self.assertEqual(headers["retry-after"], "5")
        self.assertEqual(len(executor.submitted), 1)
        self.pool.full = False
        self.clock.advance(HOLD_RETRY_MAX_S)
        status, _, body = api.request("POST", run)
        self.assertEqual(status, 202, body)
        self.assertEqual(len(executor.submitted), 2)

    def test_close_while_held_logs_what_is_lost_and_closes(self) -> None:
        """Stopping while records cannot be written says how many, and still releases the pool."""
        self.pool.full = True
        self.store.record(record("e1"))
        self.clock.advance(0.25)
        self.successResultOf(self.store.close())
        (lost,) = self.told("execution_records_lost_at_stop")
        self.assertEqual(lost["pending"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class InFlightAtStartTests(SynchronousTestCase):
    """What a crash left in flight is resolved when the store opens, and sent again if owed."""

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "executions.db")

    def open_store(self, clock: task.Clock) -> tuple[ExecutionStore, SynchronousConnectionPool]:
        pool = SynchronousConnectionPool(self.path)
        self.addCleanup(pool.close)
        store = ExecutionStore(pool, clock)
        self.successResultOf(store.open())
        return store, pool

    def test_records_left_running_are_failed_saying_they_may_have_been_delivered(self) -> None:
        """
        A record left running (or scheduled) is failed at open with the
        in-doubt error and the time it was found; finished ones are left as
        they were; in_doubt lists the slots found.
        """
        clock = task.Clock()
        clock.advance(1000.0)
        store, pool = self.open_store(clock)
        store.record(record("a", scheduled_at=T0))
        store.record(record("b", scheduled_at=T1, state="succeeded", status_code=200))
        store.record(record("c", "j2", scheduled_at=T2, state="scheduled", attempts=0))
        self.successResultOf(store.flush())
        pool.close()

        store, _ = self.open_store(clock)
        self.assertEqual(store.in_doubt, {"j1": [T0], "j2": [T2]})
        items, _ = self.successResultOf(store.query())
        by_id = {i["execution_id"]: i for i in items}
        self.assertEqual(by_id["a"]["state"], "failed")
        self.assertEqual(by_id["a"]["error"], IN_DOUBT_ERROR)
        self.assertEqual(by_id["a"]["finished_at"], "1970-01-01T00:16:40.000Z")
        self.assertEqual(by_id["c"]["state"], "failed")
        self.assertEqual((by_id["b"]["state"], by_id["b"]["error"]), ("succeeded", None))
        # Opened again (nothing in flight now), there is nothing in doubt.
        store, _ = self.open_store(clock)
        self.assertEqual(store.in_doubt, {})

    def test_the_scheduler_sends_again_what_is_owed_and_leaves_the_rest_failed(self) -> None:
        """
        Loading its jobs, the scheduler sends again, with the same
        execution_id, each in-doubt slot still inside its job's catch-up
        window (once it may fire), and not those older than the window.
        """
        clock = task.Clock()
        clock.advance(START.timestamp())
        store, _ = self.open_store(clock)
        recent = format_instant(START - timedelta(seconds=10))
        old = format_instant(START - timedelta(hours=1))
        job = make_job("job-a", spec="0 0 1 1 *", at=START - timedelta(hours=2))
        for slot in (recent, old):
            store.record(
                record(execution_id("job-a", parse_instant(slot)), "job-a", scheduled_at=slot)
            )
        self.successResultOf(store.flush())
        store.pool.close()
        store, _ = self.open_store(clock)
        allowed = [False]
        executor = FakeExecutor()
        executor.clock = clock
        scheduler = SchedulerService(
            clock,
            FakeState([job]),
            FakeProposer(),
            store,
            executor,
            node_id=7,
            may_fire=lambda: allowed[0],
        )
        scheduler.startService()
        self.addCleanup(scheduler.stopService)
        self.assertEqual(executor.submitted, [])
        allowed[0] = True
        clock.advance(0.1)
        self.assertEqual([d.scheduled_at for d in executor.submitted], [recent])
        self.assertEqual(
            executor.submitted[0].execution_id, execution_id("job-a", parse_instant(recent))
        )
        self.assertEqual(store.in_doubt, {})


class FullFilesystemTests(SynchronousTestCase):
    """On a real full filesystem (a small tmpfs; needs root) reads still answer."""

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("mounting a tmpfs needs root (CI runs the tests as root)")
        self.mount = os.path.abspath(self.mktemp())
        os.makedirs(self.mount)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", self.mount],
            capture_output=True,
            check=False,
        )
        if done.returncode:
            raise SkipTest(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
        self.addCleanup(subprocess.run, ["umount", self.mount], check=False)

    def test_reads_answer_while_the_disk_is_full(self) -> None:
        """
        With the disk filled up, writes of records fail and hold them, and a
        read answers with the file's records and the held ones merged (the
        merge is made in memory, not on the full disk).
        """
        pool = SynchronousConnectionPool(os.path.join(self.mount, "executions.db"))
        self.addCleanup(pool.close)
        clock = task.Clock()
        store = ExecutionStore(pool, clock)
        self.successResultOf(store.open())
        store.record(record("e0", scheduled_at=T0))
        self.successResultOf(store.flush())
        with open(os.path.join(self.mount, "filler"), "wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        for n in range(200):
            store.record(record(f"e{n + 1}", scheduled_at=T1, error="x" * 200))
        clock.advance(0)
        self.assertTrue(store.held())
        items, total = self.successResultOf(store.query(limit=1000))
        self.assertEqual(total, 201)
        os.remove(os.path.join(self.mount, "filler"))
        clock.advance(HOLD_RETRY_FIRST_S)
        self.assertFalse(store.held())
        self.assertEqual(self.successResultOf(store.query())[1], 201)
