"""
The execution fan-in in the state machine: commit_executions, per-job
progress, the committed history and its pruning, and snapshots of it all.

The committed history is checked against the node-local ExecutionStore fed
the same records: both must filter, page and prune alike.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from twisted.internet import task

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.store.commands import Result
from scheduler0.store.executions import ExecutionStore
from scheduler0.store.state import StateStore
from scheduler0.timeutil import format_instant, parse_instant
from tests.support.state import StateCase, job, jobs_named, member, project

NOW = "2026-03-01T00:00:00.000Z"


def at(minutes: float, base: str = NOW) -> str:
    return format_instant(parse_instant(base) + timedelta(minutes=minutes))


def record(
    eid: str,
    job_uuid: str = "j000",
    scheduled_at: str = NOW,
    state: str = "succeeded",
    **extra: Any,
) -> dict:
    value = {
        "execution_id": eid,
        "job_uuid": job_uuid,
        "project_uuid": "p1",
        "scheduled_at": scheduled_at,
        "state": state,
        "attempts": 1,
        "node_id": 2,
        "started_at": None,
        "finished_at": None,
        "status_code": 200,
        "error": None,
        "skip_reason": None,
    }
    value.update(extra)
    return value


class FaninCase(StateCase):
    def commit(
        self,
        store: StateStore,
        records: list[dict],
        from_seq: int = 0,
        up_to_seq: int | None = None,
        node_id: int = 2,
        now: str = NOW,
        keep: int = 100,
    ) -> dict:
        return self.ok(
            store,
            "commit_executions",
            node_id=node_id,
            from_seq=from_seq,
            up_to_seq=from_seq + len(records) if up_to_seq is None else up_to_seq,
            records=records,
            now=now,
            keep=keep,
        )

    def with_jobs(self, count: int = 3) -> StateStore:
        store = self.seeded(1, 2)
        self.ok(store, "create_jobs", jobs=jobs_named("j", count))
        return store

    def local(self, now: str, history_per_job: int) -> ExecutionStore:
        """An ExecutionStore whose clock reads C{now}."""
        clock = task.Clock()
        clock.advance(parse_instant(now).timestamp())
        pool = SynchronousConnectionPool(os.path.join(self.directory, "executions.db"))
        self.addCleanup(pool.close)
        store = ExecutionStore(pool, clock, history_per_job=history_per_job)
        self.result(store.open())
        return store

    def everything(self, store: Any) -> list[dict]:
        if isinstance(store, StateStore):
            return self.result(store.query_executions(limit=10_000))[0]
        return self.result(store.query(limit=10_000))[0]


class CommitTests(FaninCase):
    """commit_executions commits each node's records once, in order."""

    def test_records_are_committed_and_the_seq_advances(self) -> None:
        """A batch from the stored seq is committed; fanin_seq becomes its up_to_seq."""
        store = self.with_jobs()
        value = self.commit(store, [record("e1"), record("e2", "j001")], up_to_seq=7)
        self.assertEqual(value, {"committed": 2, "stale": False})
        self.assertEqual(self.result(store.fanin_seq(2)), 7)
        self.assertEqual(self.result(store.fanin_seq(1)), 0)
        self.assertEqual(sorted(r["execution_id"] for r in self.everything(store)), ["e1", "e2"])
        value = self.commit(store, [record("e1", state="failed")], from_seq=7, up_to_seq=9)
        self.assertEqual(value, {"committed": 1, "stale": False})
        self.assertEqual(self.result(store.latest_executions(["j000"]))["j000"]["state"], "failed")

    def test_a_stale_batch_changes_nothing(self) -> None:
        """A batch whose from_seq is not the stored seq is stale and commits nothing."""
        store = self.with_jobs()
        self.commit(store, [record("e1")], up_to_seq=4)
        before = self.result(store.dump())
        for from_seq in (0, 3, 5):
            result = self.apply(
                store,
                "commit_executions",
                node_id=2,
                from_seq=from_seq,
                up_to_seq=10,
                records=[record("e9", scheduled_at=at(5))],
                now=NOW,
                keep=100,
            )
            self.assertEqual(result, Result.success({"committed": 0, "stale": True}))
        after = self.result(store.dump())
        after.pop("meta"), before.pop("meta")
        self.assertEqual(after, before)

    def test_a_bad_record_refuses_the_batch(self) -> None:
        """A bad record (no scheduled_at, unknown state, ...) changes nothing and is named."""
        store = self.with_jobs()
        before = self.result(store.dump())
        bad_records = [
            [record("e1"), {"execution_id": "e2", "job_uuid": "j000"}],
            [record("e1", state="exploded")],
            [record("e1", colour="red")],
            [record("e1", node_id={"id": 2})],
            [record("e1", status_code=2**64)],
            [record("e1", attempts="many")],
            ["e1"],
        ]
        for records in bad_records:
            result = self.apply(
                store,
                "commit_executions",
                node_id=2,
                from_seq=0,
                up_to_seq=2,
                records=records,
                now=NOW,
                keep=100,
            )
            self.assertEqual((result.ok, result.field), (False, "records"))
        self.assertIn(
            "scheduled_at",
            self.apply(
                store,
                "commit_executions",
                node_id=2,
                from_seq=0,
                up_to_seq=1,
                records=bad_records[0],
                now=NOW,
                keep=1,
            ).message,
        )
        for args, field in [
            (dict(from_seq=-1), "from_seq"),
            (dict(up_to_seq=0, from_seq=1), "up_to_seq"),
            (dict(now="soon"), "now"),
            (dict(keep=None), "keep"),
            (dict(node_id="2"), "node_id"),
            (dict(records={}), "records"),
        ]:
            command = dict(node_id=2, from_seq=0, up_to_seq=1, records=[], now=NOW, keep=1)
            command.update(args)
            result = self.apply(store, "commit_executions", **command)
            self.assertEqual((result.ok, result.field), (False, field), args)
        after = self.result(store.dump())
        after.pop("meta"), before.pop("meta")
        self.assertEqual(after, before)

    def test_history_reads_like_the_local_store(self) -> None:
        """Committed history answers as ExecutionStore's query and latest_per_job do."""
        store = self.with_jobs()
        records = [
            record("a", "j000", at(-3)),
            record("b", "j000", at(-2), "failed", status_code=500),
            record("c", "j001", at(-2), "skipped", skip_reason="queue_full"),
            record("d", "j001", at(-1), "running", project_uuid="p2"),
            record("e", "j002", at(0), "scheduled"),
        ]
        self.commit(store, records)
        local = self.local(NOW, 100)
        for r in records:
            local.record(r)
        for filters in [
            {},
            {"job_uuid": "j000"},
            {"project_uuid": "p2"},
            {"state": "failed"},
            {"since": at(-2), "until": at(0)},
            {"limit": 2, "offset": 1},
        ]:
            self.assertEqual(
                self.result(store.query_executions(**filters)),
                self.result(local.query(**filters)),
                filters,
            )
        uuids = ["j000", "j001", "j002", "nope"]
        self.assertEqual(
            self.result(store.latest_executions(uuids)), self.result(local.latest_per_job(uuids))
        )
        self.failureResultOf(store.query_executions(limit=-1), ValueError)
        self.failureResultOf(store.query_executions(since="whenever"), ValueError)


class ProgressTests(FaninCase):
    """job_progress: the last committed slot that got further than scheduled."""

    def test_progress_only_moves_forward(self) -> None:
        """A later batch with older slots, or slots only scheduled, does not move progress back."""
        store = self.with_jobs()
        self.commit(
            store,
            [record("a", "j000", at(2)), record("b", "j000", at(1)), record("c", "j001", at(1))],
        )
        self.assertEqual(
            self.result(store.job_progress(["j000", "j001", "j002"])),
            {"j000": at(2), "j001": at(1)},
        )
        self.commit(
            store,
            [
                record("d", "j000", at(-5), "failed"),
                record("e", "j001", at(9), "scheduled"),
                record("f", "j002", at(3), "skipped"),
            ],
            from_seq=3,
        )
        self.assertEqual(
            self.result(store.job_progress(["j000", "j001", "j002"])),
            {"j000": at(2), "j001": at(1), "j002": at(3)},
        )

    def test_deleted_jobs_lose_their_progress(self) -> None:
        """delete_job and a cascading delete_project drop progress; a deleted job gets none back."""
        store = self.with_jobs()
        self.ok(store, "create_project", project=project("p2", "beta"))
        self.ok(store, "create_jobs", jobs=[job("k0", "p2")])
        self.commit(store, [record("a", "j000"), record("b", "j001"), record("c", "k0")])
        self.ok(store, "delete_job", uuid="j000")
        self.ok(store, "delete_project", uuid="p2", cascade=True)
        self.assertEqual(self.result(store.job_progress(["j000", "j001", "k0"])), {"j001": NOW})
        # A record of the deleted job arriving late is history, not progress.
        self.commit(store, [record("d", "j000", at(1))], from_seq=3)
        self.assertEqual(self.result(store.job_progress(["j000"])), {})
        self.assertEqual(self.result(store.query_executions(job_uuid="j000"))[1], 2)


class PruneTests(FaninCase):
    """Committed history is pruned per touched job, as ExecutionStore.prune does."""

    def test_keeps_the_newest_records_and_recent_failures(self) -> None:
        """Per job the newest `keep` records stay, and failures of the last 7 days regardless."""
        store = self.with_jobs()
        records = [record(f"s{i}", "j000", at(-i)) for i in range(6)]
        records += [
            record("f-recent", "j000", at(-60 * 24 * 6), "failed"),
            record("f-old", "j000", at(-60 * 24 * 8), "failed"),
            record("other", "j001", at(-60 * 24 * 9)),
        ]
        self.commit(store, records, keep=3)
        kept = sorted(r["execution_id"] for r in self.everything(store))
        self.assertEqual(kept, ["f-recent", "other", "s0", "s1", "s2"])
        local = self.local(NOW, 3)
        for r in records:
            local.record(r)
        self.result(local.prune())
        self.assertEqual(self.everything(store), self.everything(local))

    def test_only_touched_jobs_are_pruned_with_the_commands_now(self) -> None:
        """Pruning uses the command's now and keep, and leaves jobs the batch did not touch."""
        store = self.with_jobs()
        self.commit(store, [record(f"a{i}", "j000", at(-i)) for i in range(4)], keep=10)
        self.commit(store, [record("b0", "j001", at(0))], from_seq=4, keep=1)
        self.assertEqual(self.result(store.query_executions(job_uuid="j000"))[1], 4)
        later = at(60 * 24 * 30)
        self.commit(store, [record("a9", "j000", at(1))], from_seq=5, keep=2, now=later)
        self.assertEqual(
            [r["execution_id"] for r in self.everything(store) if r["job_uuid"] == "j000"],
            ["a9", "a0"],
        )


class SnapshotTests(FaninCase):
    """Snapshots carry members, ownership, history, progress and fan-in positions."""

    def test_snapshot_round_trip_includes_the_cluster_tables(self) -> None:
        """A restored snapshot dumps the same, and reads of the new tables answer the same."""
        source = self.with_jobs(5)
        self.ok(source, "assign_jobs", moves=[["j000", 1]], handover_at=NOW)
        self.commit(source, [record("a", "j000"), record("b", "j001", state="failed")])
        image = self.result(source.snapshot())
        target = self.store("target.db")
        self.ok(target, "set_members", members=[member(9)])
        self.result(target.restore(image))
        dump = self.result(source.dump())
        self.assertEqual(self.result(target.dump()), dump)
        for table in ("members", "executions", "job_progress", "fanin", "owner_loads"):
            self.assertTrue(dump[table], table)
        self.assertEqual(self.result(target.members()), self.result(source.members()))
        self.assertEqual(self.result(target.fanin_seq(2)), 2)
        self.assertEqual(self.result(target.owner_counts()), self.result(source.owner_counts()))
        self.assertEqual(self.everything(target), self.everything(source))
        # The restored store keeps going from there.
        self.indexes[id(target)] = self.result(target.applied_index())
        value = self.ok(
            target,
            "commit_executions",
            node_id=2,
            from_seq=2,
            up_to_seq=3,
            records=[record("c", "j002")],
            now=NOW,
            keep=10,
        )
        self.assertEqual(value, {"committed": 1, "stale": False})


class NodeProgressTests(FaninCase):
    """
    record_progress keeps one row per node, whatever the executions behind
    it; a job moved off a node continues from that node's report when the
    report speaks for the job (covers_job).
    """

    def owner_of(self, store: StateStore, uuid: str) -> int:
        return self.result(store.ownership_of([uuid]))[uuid][0]

    def test_one_row_per_node_and_an_older_report_changes_nothing(self) -> None:
        """A newer report (by as_of, then loaded_at) replaces the node's row; an older one not."""
        store = self.with_jobs()
        self.assertEqual(
            self.ok(store, "record_progress", marks=[[2, at(1), 3, 3], [1, at(2), 3, 3]]),
            {"kept": 2},
        )  # index 4
        self.assertEqual(self.ok(store, "record_progress", marks=[[2, at(5), 3, 2]]), {"kept": 0})
        self.ok(store, "record_progress", marks=[[2, at(3), 5, 5]])  # index 6
        self.assertEqual(
            self.result(store.progress_reports()), {1: (at(2), 3, 3), 2: (at(3), 5, 5)}
        )
        count = self.result(store.pool.runQuery("SELECT COUNT(*) FROM node_progress"))
        self.assertEqual(count[0][0], 2)

    def test_bad_marks_are_refused_and_change_nothing(self) -> None:
        """A malformed mark, or one as of this entry or later, is refused whole."""
        store = self.with_jobs()
        for marks in (
            [[2, at(1), 3]],
            [[2, "soon", 3, 4]],
            [[True, at(1), 3, 4]],
            [[2, at(1), 3, 4], [1, at(1), 3, 99]],
        ):
            result = self.apply(store, "record_progress", marks=marks)
            self.assertFalse(result.ok, marks)
            self.assertEqual(result.field, "marks")
        self.assertEqual(self.result(store.progress_reports()), {})

    def test_a_job_moved_off_a_node_continues_after_its_report(self) -> None:
        """
        Moved without a handover instant, a job's committed progress becomes
        the last millisecond before its old owner's done_before; the new
        owner and the old one are remembered with the indexes they got it at.
        """
        store = self.with_jobs()  # jobs created by the entry at index 3
        uuid = next(u for u in ("j000", "j001", "j002") if self.owner_of(store, u) == 2)
        self.ok(store, "record_progress", marks=[[2, at(1), 3, 3]])
        self.ok(store, "assign_jobs", moves=[[uuid, 1]], handover_at=None)  # index 5
        self.assertEqual(self.result(store.job_progress([uuid])), {uuid: at(1 - 1 / 60000)})
        (placed,) = self.result(store.owned_jobs_of(1, [uuid]))
        self.assertEqual(
            (placed["owner_since"], placed["prev_owner"], placed["prev_owner_since"]), (5, 2, 3)
        )
        # Committed progress never goes back.
        self.ok(store, "record_progress", marks=[[1, at(0.5), 3, 5]])
        self.ok(store, "assign_jobs", moves=[[uuid, 2]], handover_at=None)
        self.assertEqual(self.result(store.job_progress([uuid])), {uuid: at(1 - 1 / 60000)})

    def test_a_report_made_before_the_node_took_the_job_says_nothing_of_it(self) -> None:
        """
        A node's report as of an index before it took a job up does not speak
        for that job: the job keeps what was committed for it before.
        """
        store = self.with_jobs()
        uuid = next(u for u in ("j000", "j001", "j002") if self.owner_of(store, u) == 2)
        self.ok(store, "assign_jobs", moves=[[uuid, 1]], handover_at=None)  # index 4
        self.ok(store, "record_progress", marks=[[1, at(9), 3, 3]])  # as of index 3
        self.ok(store, "assign_jobs", moves=[[uuid, 2]], handover_at=None)
        self.assertEqual(self.result(store.job_progress([uuid])), {})

    def test_covers_job_needs_the_job_held_when_the_report_was_made(self) -> None:
        """covers_job: as_of at or after the owner got the job, in a run loaded before the move."""
        from scheduler0.store.state import covers_job

        self.assertTrue(covers_job((NOW, 3, 7), 5, 9))
        self.assertFalse(covers_job((NOW, 3, 4), 5, 9))  # made before the job was taken up
        self.assertFalse(covers_job((NOW, 9, 12), 5, 9))  # a run begun after the move
        self.assertTrue(covers_job((NOW, 0, 0), None, 1))  # owner from before owner_since existed


class HandoverGapTests(FaninCase):
    """
    Ownership.last_slots_before over the real state: where a job's old owner
    got before a handover instant, for the new owner's gap check.
    """

    def ownership(self, store: StateStore) -> Any:
        from scheduler0.cluster.ownership import Ownership

        return Ownership(store, self.local(NOW, 100), 1)

    def taken_up(self, store: StateStore, uuid: str, assigned: int) -> list[Any]:
        """The job as node 1 reads it when it takes it up after the move at C{assigned}."""
        from scheduler0.cluster.ownership import TakenUp

        ownership = self.ownership(store)
        (job,) = self.result(ownership.owned_jobs([uuid]))
        last_slot = self.result(ownership.last_slots_of([uuid])).get(uuid)
        return [TakenUp.of(job, last_slot, assigned)]

    def handed_over(self) -> tuple[StateStore, str, int]:
        """A job node 2 held since index 3, handed to node 1 at index 5 (at NOW + 1 min)."""
        store = self.with_jobs()
        uuid = next(u for u in ("j000", "j001", "j002") if self.owner_of(store, u) == 2)
        self.ok(store, "record_progress", marks=[[2, at(0.5), 3, 3]])  # index 4
        self.ok(store, "assign_jobs", moves=[[uuid, 1]], handover_at=at(1))  # index 5
        return store, uuid, 5

    def owner_of(self, store: StateStore, uuid: str) -> int:
        return self.result(store.ownership_of([uuid]))[uuid][0]

    def test_the_old_owners_later_report_says_how_far_it_got(self) -> None:
        """A report made after the handover, in the run that held the job, is used."""
        store, uuid, assigned = self.handed_over()
        taken_up = self.taken_up(store, uuid, assigned)
        self.ok(store, "record_progress", marks=[[2, at(2), 3, 5]])
        found = self.result(self.ownership(store).last_slots_before(taken_up))
        self.assertEqual(found, {uuid: at(2 - 1 / 60000)})

    def test_a_report_from_a_run_begun_after_the_handover_is_not_used(self) -> None:
        """
        The old owner restarted after the handover never loaded the job: its
        report says nothing of it, and only what was committed at the move counts.
        """
        store, uuid, assigned = self.handed_over()
        taken_up = self.taken_up(store, uuid, assigned)
        self.ok(store, "record_progress", marks=[[1, at(0), 3, 3]])  # index 6
        self.ok(store, "record_progress", marks=[[2, at(2), 6, 6]])
        found = self.result(self.ownership(store).last_slots_before(taken_up))
        self.assertEqual(found, {uuid: at(0.5 - 1 / 60000)})

    def test_a_job_moved_on_since_keeps_what_its_old_owner_reported(self) -> None:
        """
        When the job moved on after the handover, what was committed for it
        at that move (the next owner's report, for slots after the instant)
        says nothing of the slots before the instant: the old owner's reports
        from the run that held the job still do.
        """
        store, uuid, assigned = self.handed_over()
        taken_up = self.taken_up(store, uuid, assigned)
        self.ok(store, "record_progress", marks=[[2, at(1.5), 3, 5], [1, at(3), 3, 5]])
        self.ok(store, "assign_jobs", moves=[[uuid, 2]], handover_at=None)
        self.assertEqual(self.result(store.job_progress([uuid])), {uuid: at(3 - 1 / 60000)})
        found = self.result(self.ownership(store).last_slots_before(taken_up))
        self.assertEqual(found, {uuid: at(1.5 - 1 / 60000)})

    def test_a_row_changed_by_a_later_move_names_no_old_owner(self) -> None:
        """
        Read after the job had moved on, the row's old owner is not the one
        that owed the slots before the instant: only what was known counts.
        """
        store, uuid, assigned = self.handed_over()
        self.ok(store, "assign_jobs", moves=[[uuid, 2]], handover_at=None)  # index 6
        self.ok(store, "assign_jobs", moves=[[uuid, 1]], handover_at=None)  # index 7
        self.ok(store, "record_progress", marks=[[2, at(2), 3, 6]])
        taken_up = self.taken_up(store, uuid, assigned)
        found = self.result(self.ownership(store).last_slots_before(taken_up))
        self.assertEqual(found, {uuid: at(0.5 - 1 / 60000)})
