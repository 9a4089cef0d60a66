"""
Cluster state in the state machine: members, which node owns each job, and
the migration of files written before ownership existed.

Real SQLite files in a temporary directory, driven through the synchronous
pool so every apply and read has fired when it returns.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from scheduler0.raft.storage import SnapshotFile
from scheduler0.store.commands import Command
from scheduler0.store.state import JOB_COLUMNS
from tests.support.state import (
    OLD_JOBS,
    OLD_PROJECTS,
    T0,
    T1,
    StateCase,
    job,
    jobs_named,
    member,
    project,
)


class MemberTests(StateCase):
    """set_members, set_eligible and remove_member."""

    def test_set_members_adds_and_updates_without_removing(self) -> None:
        """set_members inserts new members as eligible, updates addresses, keeps the rest."""
        store = self.seeded(1, 2)
        self.ok(store, "set_eligible", node_id=2, eligible=False)
        self.ok(store, "set_members", members=[member(2, "http://moved:1"), member(3)])
        self.assertEqual(
            self.result(store.members()),
            [
                {
                    "node_id": 1,
                    "address": "http://n1:7070",
                    "raft_address": "n1:7071",
                    "eligible": True,
                },
                {
                    "node_id": 2,
                    "address": "http://moved:1",
                    "raft_address": "n2:7071",
                    "eligible": False,
                },
                {
                    "node_id": 3,
                    "address": "http://n3:7070",
                    "raft_address": "n3:7071",
                    "eligible": True,
                },
            ],
        )

    def test_bad_member_is_invalid_and_names_the_field(self) -> None:
        """A member without an integer node_id, or with an unknown key, changes nothing."""
        store = self.seeded(1)
        result = self.apply(
            store, "set_members", members=[member(5), {"node_id": "x", "address": "a"}]
        )
        self.assertEqual((result.ok, result.code, result.field), (False, "invalid", "node_id"))
        result = self.apply(store, "set_members", members=[dict(member(6), role="leader")])
        self.assertEqual(result.field, "role")
        result = self.apply(store, "set_members", members={"node_id": 1})
        self.assertEqual(result.field, "members")
        self.assertEqual([m["node_id"] for m in self.result(store.members())], [1])

    def test_set_eligible_of_an_unknown_member_is_not_found(self) -> None:
        """set_eligible needs a known member and a boolean."""
        store = self.seeded(1)
        result = self.apply(store, "set_eligible", node_id=9, eligible=True)
        self.assertEqual((result.code, result.field), ("not_found", "node_id"))
        result = self.apply(store, "set_eligible", node_id=1, eligible=1)
        self.assertEqual((result.code, result.field), ("invalid", "eligible"))

    def test_remove_member_unowns_its_jobs(self) -> None:
        """Removing a member deletes it, leaves its jobs unowned and forgets its fan-in seq."""
        store = self.seeded(1, 2)
        self.ok(store, "create_jobs", jobs=jobs_named("j", 4))
        self.ok(store, "assign_jobs", moves=[["j000", 2]], handover_at=T1)
        self.ok(
            store,
            "commit_executions",
            node_id=2,
            from_seq=0,
            up_to_seq=5,
            records=[],
            now=T1,
            keep=10,
        )
        value = self.ok(store, "remove_member", node_id=2)
        self.assertEqual(value, {"node_id": 2, "removed": True, "unowned": 3})
        self.assertEqual([m["node_id"] for m in self.result(store.members())], [1])
        self.assertEqual(self.result(store.owner_counts()), {1: 1, None: 3})
        self.assertEqual(self.result(store.owner_counts()), self.counted(store))
        self.assertEqual(self.result(store.ownership_of(["j000"])), {"j000": (None, None)})
        self.assertEqual(self.result(store.fanin_seq(2)), 0)
        again = self.ok(store, "remove_member", node_id=2)
        self.assertEqual(again, {"node_id": 2, "removed": False, "unowned": 0})


class CreateJobsOwnershipTests(StateCase):
    """create_jobs gives every new job an owner, evenly and deterministically."""

    def test_a_batch_spreads_evenly_lowest_node_id_first(self) -> None:
        """10 jobs over 3 empty members go 4/3/3, node 1 taking the extra one."""
        store = self.seeded(3, 1, 2)
        self.ok(store, "create_jobs", jobs=jobs_named("j", 10))
        self.assertEqual(self.result(store.owner_counts()), {1: 4, 2: 3, 3: 3})
        owners = self.result(store.ownership_of([f"j{i:03d}" for i in range(4)]))
        # In command order, each job to the least loaded member at that moment.
        self.assertEqual(
            owners, {"j000": (1, None), "j001": (2, None), "j002": (3, None), "j003": (1, None)}
        )

    def test_new_jobs_go_to_the_least_loaded_eligible_members(self) -> None:
        """A later batch fills the members with fewest jobs; ineligible ones get none."""
        store = self.seeded(1, 2)
        self.ok(store, "create_jobs", jobs=jobs_named("a", 4))
        self.ok(store, "set_members", members=[member(3), member(4)])
        self.ok(store, "set_eligible", node_id=4, eligible=False)
        self.ok(store, "create_jobs", jobs=jobs_named("b", 5))
        self.assertEqual(self.result(store.owner_counts()), {1: 3, 2: 3, 3: 3})
        self.assertEqual(self.result(store.owner_counts()), self.counted(store))

    def test_without_eligible_members_jobs_are_unowned(self) -> None:
        """With no member, or none eligible, new jobs have owner None."""
        store = self.seeded()
        self.ok(store, "create_jobs", jobs=jobs_named("a", 2))
        self.ok(store, "set_members", members=[member(1)])
        self.ok(store, "set_eligible", node_id=1, eligible=False)
        self.ok(store, "create_jobs", jobs=jobs_named("b", 2))
        self.assertEqual(self.result(store.owner_counts()), {None: 4})
        self.assertEqual(self.result(store.jobs_owned_by(1)), [])

    def test_the_result_and_job_reads_are_unchanged(self) -> None:
        """create_jobs returns and reads give the public job dict: no owner keys."""
        store = self.seeded(1)
        value = self.ok(store, "create_jobs", jobs=[job("j1")])
        self.assertEqual(set(value[0]), set(JOB_COLUMNS))
        self.assertEqual(self.result(store.get_job("j1")), value[0])
        self.assertEqual(self.result(store.jobs_page(None, 10)), value)
        self.assertEqual(self.result(store.list_jobs())[0], value)
        self.assertEqual(self.result(store.get_jobs(["j1"])), value)
        command = Command("create_jobs", {"jobs": [job("j2")]}, request_id="r1")
        first = self.result(store.apply(50, command))
        again = self.result(store.apply(51, command))
        self.assertEqual(again, attrs.evolve(first, duplicate=True))
        self.assertEqual(self.result(store.owner_counts()), {1: 2})

    def test_a_refused_batch_changes_no_counts(self) -> None:
        """A batch with a taken uuid is refused and leaves owners and counts alone."""
        store = self.seeded(1, 2)
        self.ok(store, "create_jobs", jobs=[job("j1")])
        result = self.apply(store, "create_jobs", jobs=[job("j2"), job("j1")])
        self.assertEqual(result.code, "conflict")
        self.assertEqual(self.result(store.owner_counts()), {1: 1})

    def test_deleting_jobs_keeps_the_counts_right(self) -> None:
        """delete_job and a cascading delete_project lower their owners' counts."""
        store = self.seeded(1, 2, 3)
        self.ok(store, "create_project", project=project("p2", "beta"))
        self.ok(store, "create_jobs", jobs=jobs_named("a", 6))
        self.ok(store, "create_jobs", jobs=[job(f"b{i}", "p2") for i in range(5)])
        self.ok(store, "delete_job", uuid="a000")
        self.assertEqual(self.result(store.owner_counts()), self.counted(store))
        self.ok(store, "delete_project", uuid="p2", cascade=True)
        self.assertEqual(self.result(store.owner_counts()), {2: 2, 3: 2, 1: 1})
        self.assertEqual(self.result(store.owner_counts()), self.counted(store))


class AssignJobsTests(StateCase):
    """assign_jobs moves jobs between owners, with or without a handover instant."""

    def test_moves_existing_jobs_and_counts_missing_ones(self) -> None:
        """Deleted jobs are skipped and counted; the others take the owner and handover_at."""
        store = self.seeded(1, 2)
        self.ok(store, "create_jobs", jobs=jobs_named("j", 4))
        self.ok(store, "delete_job", uuid="j003")
        value = self.ok(
            store,
            "assign_jobs",
            moves=[["j000", 2], ["j003", 2], ["gone", 1], ["j002", None]],
            handover_at="2026-01-01T00:01:00Z",
        )
        self.assertEqual(value, {"moved": 2, "missing": 2})
        self.assertEqual(
            self.result(store.ownership_of(["j000", "j001", "j002", "j003"])),
            {"j000": (2, T1), "j001": (2, None), "j002": (None, T1)},
        )
        self.assertEqual(self.result(store.owner_counts()), {2: 2, None: 1})
        self.assertEqual(self.result(store.owner_counts()), self.counted(store))
        self.ok(store, "assign_jobs", moves=[["j000", 1], ["j000", 2]], handover_at=None)
        self.assertEqual(self.result(store.ownership_of(["j000"])), {"j000": (2, None)})
        self.assertEqual(self.result(store.owner_counts()), self.counted(store))

    def test_a_bad_move_is_invalid_and_changes_nothing(self) -> None:
        """One malformed move refuses the whole command."""
        store = self.seeded(1, 2)
        self.ok(store, "create_jobs", jobs=jobs_named("j", 2))
        before = self.result(store.dump())
        for moves, handover_at, field in [
            ([["j000", 2], ["j001", "2"]], None, "moves"),
            ([["j000", 2], ["j001"]], None, "moves"),
            ([["j000", True]], None, "moves"),
            ([["j000", 2**63]], None, "moves"),
            ("j000", None, "moves"),
            ([["j000", 2]], "yesterday", "handover_at"),
        ]:
            result = self.apply(store, "assign_jobs", moves=moves, handover_at=handover_at)
            self.assertEqual((result.ok, result.field), (False, field), moves)
        after = self.result(store.dump())
        after.pop("meta"), before.pop("meta")
        self.assertEqual(after, before)


class OwnershipReadTests(StateCase):
    """Reading a node's jobs a page at a time."""

    def test_jobs_owned_by_pages_in_creation_order(self) -> None:
        """jobs_owned_by walks one owner's (or the unowned) uuids after the last one seen."""
        store = self.seeded(1, 2)
        self.ok(store, "create_jobs", jobs=jobs_named("b", 4, created_at=T1))
        self.ok(store, "create_jobs", jobs=jobs_named("a", 4, created_at=T0))
        self.assertEqual(self.result(store.jobs_owned_by(1, limit=3)), ["a000", "a002", "b000"])
        self.assertEqual(self.result(store.jobs_owned_by(1, "b000", 3)), ["b002"])
        self.ok(store, "assign_jobs", moves=[["a001", None], ["b003", None]], handover_at=None)
        self.assertEqual(self.result(store.jobs_owned_by(None)), ["a001", "b003"])
        self.assertEqual(self.result(store.jobs_owned_by(None, "a001")), ["b003"])
        self.failureResultOf(store.jobs_owned_by(1, "nope"), KeyError)
        self.failureResultOf(store.jobs_owned_by(1, None, -1), ValueError)

    def test_owned_jobs_page_is_jobs_page_for_one_owner(self) -> None:
        """
        owned_jobs_page gives jobs_page's dicts for one owner plus owner,
        handover_at, active_since and who owned it from when; owned_jobs_of
        gives the same for chosen jobs.
        """
        store = self.seeded(1, 2)
        self.ok(store, "create_jobs", jobs=jobs_named("j", 7))
        self.ok(store, "assign_jobs", moves=[["j004", 2]], handover_at=T1)
        every = self.result(store.jobs_page(None, 100))
        expected = []
        for public in every:
            owner, handover_at = self.result(store.ownership_of([public["uuid"]]))[public["uuid"]]
            if owner == 2:
                moved = public["uuid"] == "j004"
                expected.append(
                    dict(
                        public,
                        owner=owner,
                        handover_at=handover_at,
                        active_since=None,
                        # Created by the entry at index 3; j004 moved
                        # from node 1 by the one at index 4.
                        owner_since=4 if moved else 3,
                        prev_owner=1 if moved else None,
                        prev_owner_since=3 if moved else None,
                    )
                )
        pages, after = [], None
        while True:
            page = self.result(store.owned_jobs_page(2, after, 2))
            if not page:
                break
            pages.extend(page)
            after = (page[-1]["created_at"], page[-1]["uuid"])
        self.assertEqual(pages, expected)
        self.assertEqual([j["uuid"] for j in pages], ["j001", "j003", "j004", "j005"])
        self.assertEqual(pages[2]["handover_at"], T1)
        self.assertEqual(self.result(store.owned_jobs_page(None)), [])
        chosen = self.result(store.owned_jobs_of(2, ["j000", "j004", "j005", "gone"]))
        self.assertEqual(chosen, [j for j in expected if j["uuid"] in ("j004", "j005")])

    def test_active_since_moves_on_resume_and_reschedule_only(self) -> None:
        """
        A job's active_since is set when it is resumed or its schedule
        changes, and left alone by a change of its data or name.
        """
        store = self.seeded(1)
        self.ok(store, "create_jobs", jobs=jobs_named("j", 1))

        def since() -> object:
            (job,) = self.result(store.owned_jobs_of(1, ["j000"]))
            return job["active_since"]

        self.assertIsNone(since())
        later = "2026-01-01T00:00:05.000Z"
        self.ok(store, "update_job", uuid="j000", changes={"data": {"x": 1}}, updated_at=later)
        self.assertIsNone(since())
        self.ok(store, "update_job", uuid="j000", changes={"paused": True}, updated_at=later)
        self.assertIsNone(since())
        resumed = "2026-01-01T00:00:09.000Z"
        self.ok(store, "update_job", uuid="j000", changes={"paused": False}, updated_at=resumed)
        self.assertEqual(since(), resumed)
        changed = "2026-01-01T00:00:12.000Z"
        self.ok(store, "update_job", uuid="j000", changes={"spec": "@every 5s"}, updated_at=changed)
        self.assertEqual(since(), changed)


class DeterminismTests(StateCase):
    """The same cluster commands give the same state on every node."""

    def test_two_stores_applying_the_same_commands_are_identical(self) -> None:
        """Dumps (owners, counts, history, progress, fan-in) match, commands decoded from bytes."""
        record = {
            "execution_id": "e1",
            "job_uuid": "j001",
            "project_uuid": "p1",
            "scheduled_at": T1,
            "state": "succeeded",
            "attempts": 1,
            "node_id": 2,
        }
        commands = [
            Command("create_project", {"project": project()}),
            Command("set_members", {"members": [member(2), member(1), member(3)]}),
            Command("create_jobs", {"jobs": jobs_named("j", 11)}),
            Command("set_eligible", {"node_id": 3, "eligible": False}),
            Command("create_jobs", {"jobs": jobs_named("k", 5)}),
            Command("assign_jobs", {"moves": [["j000", 3], ["k004", 1]], "handover_at": T1}),
            Command(
                "commit_executions",
                {
                    "node_id": 2,
                    "from_seq": 0,
                    "up_to_seq": 3,
                    "records": [record],
                    "now": T1,
                    "keep": 5,
                },
            ),
            Command("delete_job", {"uuid": "j002"}),
            Command("remove_member", {"node_id": 1}),
        ]
        one, two = self.store("one.db"), self.store("two.db")
        results_one = [self.result(one.apply(i, c)) for i, c in enumerate(commands, 1)]
        results_two = [
            self.result(two.apply(i, Command.from_bytes(c.to_bytes())))
            for i, c in enumerate(commands, 1)
        ]
        self.assertTrue(all(r.ok for r in results_one), results_one)
        self.assertEqual(results_one, results_two)
        dump = self.result(one.dump())
        self.assertEqual(dump, self.result(two.dump()))
        self.assertEqual(len(dump["members"]), 2)
        self.assertTrue(dump["owner_loads"])


class MigrationTests(StateCase):
    """Files written before ownership existed open and gain the new columns and tables."""

    def old_file(self, name: str) -> str:
        path = os.path.join(self.directory, name)
        connection = sqlite3.connect(path)
        connection.execute(OLD_PROJECTS)
        connection.execute(OLD_JOBS)
        connection.execute("INSERT INTO projects VALUES ('p1', 'alpha', '', ?, ?)", (T0, T0))
        connection.execute(
            "INSERT INTO jobs VALUES ('old', 'p1', 'n', '@every 1m', 'http://x/', 'null',"
            " 'UTC', 'http', 0, 60.0, 30.0, 10, ?, ?, ?)",
            (T0, T0, T0),
        )
        connection.commit()
        connection.close()
        return path

    def test_an_old_file_gains_owner_columns(self) -> None:
        """Opening a jobs table without owner columns adds them; old jobs are unowned."""
        self.old_file("state.db")
        store = self.store("state.db")
        self.assertEqual(self.result(store.get_job("old"))["spec"], "@every 1m")
        self.assertEqual(self.result(store.ownership_of(["old"])), {"old": (None, None)})
        self.ok(store, "set_members", members=[member(1)])
        self.ok(store, "create_jobs", jobs=[job("new")])
        self.assertEqual(self.result(store.owner_counts()), {1: 1, None: 1})
        # The same columns, in the same order, as a file made fresh.
        fresh = self.store("fresh.db")
        columns = "SELECT name FROM pragma_table_info('jobs')"
        self.assertEqual(
            self.result(store.pool.runQuery(columns)), self.result(fresh.pool.runQuery(columns))
        )

    def test_counts_are_rebuilt_when_missing(self) -> None:
        """A file with owners but no kept counts has them counted once at open."""
        store = self.seeded(1, 2)
        self.ok(store, "create_jobs", jobs=jobs_named("j", 5))
        self.result(store.pool.runOperation("DROP TABLE owner_loads"))
        store.pool.close()
        reopened = self.store("state.db")
        self.assertEqual(self.result(reopened.owner_counts()), {1: 3, 2: 2})

    def test_a_snapshot_copied_beside_the_pool_is_of_the_state_when_it_was_asked_for(
        self,
    ) -> None:
        """
        With run_blocking the image is copied off the pool's thread, and
        commands the pool applies before the copy runs are not in it.
        """
        calls: list[tuple[Any, tuple]] = []

        def run_blocking(fn: Any, *args: Any) -> Deferred:
            d: Deferred = Deferred()
            calls.append((lambda: d.callback(fn(*args)), args))
            return d

        store = self.seeded(1, 2)
        store.run_blocking = run_blocking
        self.ok(store, "create_jobs", jobs=jobs_named("before", 2))
        asked_at = self.result(store.applied_index())
        image = store.snapshot()
        self.assertNoResult(image)
        self.ok(store, "create_jobs", jobs=jobs_named("after", 3))
        ((copy, _),) = calls
        copy()
        restored = self.store("restored.db")
        self.result(restored.restore(self.successResultOf(image)))
        self.assertEqual(self.result(restored.applied_index()), asked_at)
        self.assertEqual(sum(self.result(restored.owner_counts()).values()), 2)
        self.assertEqual(sum(self.result(store.owner_counts()).values()), 5)

    def test_a_snapshot_written_to_a_file_restores_from_that_file(self) -> None:
        """
        snapshot(path) writes the image to a file (no bytes in memory), and
        restore() takes that file as it is, leaving nothing beside it.
        """
        store = self.seeded(1, 2)
        self.ok(store, "create_jobs", jobs=jobs_named("j", 4))
        folder = os.path.join(self.directory, "snapshots")
        os.makedirs(folder)
        path = os.path.join(folder, "image.db")
        self.assertIsNone(self.result(store.snapshot(path)))
        restored = self.store("restored.db")
        self.result(restored.restore(SnapshotFile.at(path)))
        self.assertEqual(self.result(restored.dump()), self.result(store.dump()))
        self.assertEqual(os.listdir(folder), ["image.db"])

    def test_owned_jobs_of_finds_the_jobs_by_uuid_not_by_walking_the_owners(self) -> None:
        """
        Reading the jobs a node owns among 500 new ones looks them up by
        uuid: its cost must not grow with the jobs the node already owns
        (each create_jobs of a million-job run reads its jobs back this way).
        """
        store = self.seeded(1, 2)
        self.ok(store, "create_jobs", jobs=jobs_named("j", 500))
        uuids = [f"j{i:03d}" for i in range(500)]
        statements: list[str] = []
        connection = store.pool._connection
        connection.set_trace_callback(statements.append)
        try:
            found = self.result(store.owned_jobs_of(1, uuids))
        finally:
            connection.set_trace_callback(None)
        self.assertEqual(len(found), self.result(store.owner_counts())[1])
        (select,) = [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]
        plan = " ".join(row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + select))
        self.assertNotIn("jobs_by_owner", plan)
        self.assertIn("uuid=?", plan)

    def test_restoring_an_old_snapshot_migrates_it(self) -> None:
        """An image from before ownership restores into a store that can own jobs."""
        with open(self.old_file("old.db"), "rb") as f:
            image = f.read()
        store = self.seeded(1)
        self.result(store.restore(image))
        self.assertEqual(self.result(store.members()), [])
        self.assertEqual(self.result(store.owner_counts()), {None: 1})
        self.ok(store, "set_members", members=[member(4)])
        self.ok(store, "assign_jobs", moves=[["old", 4]], handover_at=None)
        self.assertEqual(self.result(store.owner_counts()), {4: 1})
