"""
Job labels in the replicated store: the labels column and the label index
kept right by every command that changes jobs, listing by a selector (with
the project and paused filters and pagination, through the index and by a
scan alike), and bulk_jobs resolving its selector when applied.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from scheduler0.labels import parse_selector
from scheduler0.store import selection
from scheduler0.store.commands import Command, Op, Result, Subscribers, bulk_effects
from scheduler0.store.state import StateStore
from tests.support.state import OLD_JOBS, OLD_PROJECTS, StateCase, project

T0 = "2026-01-01T00:00:00.000Z"
T1 = "2026-01-01T00:01:00.000Z"
T2 = "2026-01-01T00:02:00.000Z"


def job(uuid: str, labels: dict | None = None, **extra: Any) -> dict:
    value: dict[str, Any] = {
        "uuid": uuid,
        "project_uuid": "p1",
        "name": f"job {uuid}",
        "spec": "@every 1m",
        "callback_url": "http://127.0.0.1/cb",
        "created_at": extra.pop("created_at", T0),
        "updated_at": T0,
    }
    if labels is not None:
        value["labels"] = labels
    value.update(extra)
    return value


# Eight jobs over two projects, created one second apart.
LABELLED = [
    ("j0", "p1", {"team": "billing", "env": "prod"}),
    ("j1", "p1", {"team": "billing", "env": "dev", "tier": "web"}),
    ("j2", "p1", {"team": "ops", "env": "prod"}),
    ("j3", "p2", {"team": "billing", "env": "prod", "tier": ""}),
    ("j4", "p2", {}),
    ("j5", "p1", None),
    ("j6", "p2", {"team": "ops", "example.com/owner": "ann"}),
    ("j7", "p1", {"team": "billing"}),
]


class LabelStoreCase(StateCase):
    def labelled(self) -> StateStore:
        store = self.seeded()
        self.ok(store, "create_project", project=project("p2", "beta"))
        self.ok(
            store,
            "create_jobs",
            jobs=[
                job(uuid, labels, project_uuid=p, created_at=f"2026-01-01T00:00:0{i}.000Z")
                for i, (uuid, p, labels) in enumerate(LABELLED)
            ],
        )
        return store

    def index_rows(self, store: StateStore) -> list:
        return self.result(
            store.pool.runQuery("SELECT key, value, job_uuid FROM job_labels ORDER BY 1, 2, 3")
        )

    def assert_index_right(self, store: StateStore) -> None:
        """The index holds exactly one row per label of every job."""
        expected = sorted(
            (key, value, job["uuid"])
            for job in self.result(store.all_jobs())
            for key, value in job["labels"].items()
        )
        self.assertEqual([tuple(row) for row in self.index_rows(store)], expected)

    def listed(self, store: StateStore, text: str | None, **filters: Any) -> tuple[list, int]:
        selector = parse_selector(text) if text else None
        items, total = self.result(store.list_jobs(selector=selector, **filters))
        return [item["uuid"] for item in items], total


class LabelColumnTests(LabelStoreCase):
    """Labels are part of the job, and the index follows every change to them."""

    def test_created_jobs_carry_labels(self) -> None:
        """A job keeps its labels; one without reads {}; the index holds each label."""
        store = self.labelled()
        self.assertEqual(self.result(store.get_job("j1"))["labels"], LABELLED[1][2])
        self.assertEqual(self.result(store.get_job("j5"))["labels"], {})
        self.assertEqual(self.result(store.get_job("j4"))["labels"], {})
        self.assert_index_right(store)
        self.assertEqual(len(self.index_rows(store)), 13)

    def test_bad_labels_are_refused_naming_the_label(self) -> None:
        """The state machine refuses a bad label, naming labels.<key>; nothing is stored."""
        store = self.seeded()
        refused = self.apply(store, "create_jobs", jobs=[job("a", {"team": "a b"})])
        self.assertEqual((refused.ok, refused.field), (False, "labels.team"))
        self.assertEqual(self.index_rows(store), [])
        self.ok(store, "create_jobs", jobs=[job("a", {"team": "x"})])
        refused = self.apply(
            store, "update_job", uuid="a", changes={"labels": {"-": "x"}}, updated_at=T1
        )
        self.assertEqual((refused.ok, refused.field), (False, "labels.-"))
        self.assert_index_right(store)

    def test_update_changes_the_index(self) -> None:
        """Changing a job's labels replaces its index rows; other changes keep them."""
        store = self.labelled()
        changed = self.ok(
            store,
            "update_job",
            uuid="j0",
            changes={"labels": {"team": "ops", "new": "1"}},
            updated_at=T1,
        )
        self.assertEqual(changed["labels"], {"team": "ops", "new": "1"})
        self.ok(store, "update_job", uuid="j1", changes={"name": "renamed"}, updated_at=T1)
        self.ok(store, "update_job", uuid="j2", changes={"labels": {}}, updated_at=T1)
        self.assert_index_right(store)
        self.assertEqual(self.listed(store, "team=ops"), (["j0", "j6"], 2))

    def test_deletes_drop_index_rows(self) -> None:
        """Deleting a job, or a project with its jobs, drops their index rows."""
        store = self.labelled()
        self.ok(store, "delete_job", uuid="j1")
        self.assert_index_right(store)
        self.ok(store, "delete_project", uuid="p2", cascade=True)
        self.assert_index_right(store)
        self.assertEqual(self.listed(store, "team"), (["j0", "j2", "j7"], 3))

    def test_snapshot_restore_keeps_the_index(self) -> None:
        """A restored image answers selectors as the original (the dumps are equal)."""
        store = self.labelled()
        restored = self.store("restored.db")
        self.result(restored.restore(self.result(store.snapshot())))
        self.assertEqual(self.result(restored.dump()), self.result(store.dump()))
        self.assertIn("job_labels", self.result(store.dump()))
        self.assertEqual(self.listed(restored, "team=billing"), self.listed(store, "team=billing"))

    def test_old_file_reads_no_labels(self) -> None:
        """A file from before labels opens with the column and index; its jobs have none."""
        path = os.path.join(self.directory, "state.db")
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
        store = self.store("state.db")
        self.assertEqual(self.result(store.get_job("old"))["labels"], {})
        self.assertEqual(self.listed(store, "!team"), (["old"], 1))
        self.ok(store, "update_job", uuid="old", changes={"labels": {"team": "a"}}, updated_at=T1)
        self.assertEqual(self.listed(store, "team=a"), (["old"], 1))
        self.assert_index_right(store)


class SelectorListingTests(LabelStoreCase):
    """list_jobs by selector, through the index and by a scan, with the other filters."""

    CASES = {
        "team=billing": ["j0", "j1", "j3", "j7"],
        "team==billing,env=prod": ["j0", "j3"],
        "team=billing,env!=prod": ["j1", "j7"],
        "tier": ["j1", "j3"],
        "tier=": ["j3"],
        "!team": ["j4", "j5"],
        "env!=prod": ["j1", "j4", "j5", "j6", "j7"],
        "example.com/owner=ann": ["j6"],
        "team=nobody": [],
        "team=ops,!example.com/owner": ["j2"],
    }

    def check_cases(self, store: StateStore) -> None:
        for text, expected in self.CASES.items():
            self.assertEqual(self.listed(store, text), (expected, len(expected)), text)
        self.assertEqual(self.listed(store, "team=billing", project_uuid="p2"), (["j3"], 1))
        self.assertEqual(
            self.listed(store, "team", project_uuid="p1"), (["j0", "j1", "j2", "j7"], 4)
        )

    def test_selectors_through_the_index(self) -> None:
        """Each kind of selector selects the jobs it names, alone and with a project."""
        self.check_cases(self.labelled())

    def test_selectors_by_scan(self) -> None:
        """With every term past the drive limit the scan selects the same jobs."""
        self.patch(selection, "DRIVE_LIMIT", 0)
        self.check_cases(self.labelled())

    def test_paused_filter(self) -> None:
        """A selector combines with paused."""
        store = self.labelled()
        self.ok(store, "update_job", uuid="j1", changes={"paused": True}, updated_at=T1)
        self.assertEqual(self.listed(store, "team=billing", paused=True), (["j1"], 1))
        self.assertEqual(self.listed(store, "team=billing", paused=False), (["j0", "j3", "j7"], 3))

    def test_pagination(self) -> None:
        """limit and offset, or a position, page a selection; total counts all of it."""
        store = self.labelled()
        self.assertEqual(self.listed(store, "team", limit=2), (["j0", "j1"], 6))
        self.assertEqual(self.listed(store, "team", limit=2, offset=2), (["j2", "j3"], 6))
        after = ("2026-01-01T00:00:03.000Z", "j3")
        self.assertEqual(self.listed(store, "team", limit=2, after=after), (["j6", "j7"], 6))
        self.patch(selection, "DRIVE_LIMIT", 0)
        self.assertEqual(self.listed(store, "team", limit=2, after=after), (["j6", "j7"], 6))

    def test_no_selector_lists_as_before(self) -> None:
        """Without a selector the listing is the one of every job."""
        store = self.labelled()
        self.assertEqual(self.listed(store, None), ([uuid for uuid, _, _ in LABELLED], 8))
        self.assertEqual(self.listed(store, None, project_uuid="p2"), (["j3", "j4", "j6"], 3))


class BulkJobsTests(LabelStoreCase):
    """bulk_jobs: pause, resume or delete what its selector selects when applied."""

    def bulk(self, store: StateStore, action: str, selector: str, **extra: Any) -> Result:
        args = {"action": action, "selector": selector, "at": T1, "limit": 100, **extra}
        return self.apply(store, Op.BULK_JOBS, **args)

    def test_pause_and_resume(self) -> None:
        """Pausing changes only the active selected jobs; resuming marks active_since."""
        store = self.labelled()
        self.ok(store, "update_job", uuid="j0", changes={"paused": True}, updated_at=T1)
        result = self.bulk(store, "pause", "team=billing")
        self.assertTrue(result.ok, result)
        self.assertEqual(result.value["uuids"], ["j1", "j3", "j7"])
        self.assertEqual((result.value["count"], result.value["more"]), (3, False))
        self.assertTrue(all(job["paused"] for job in result.value["jobs"]))
        self.assertEqual({job["updated_at"] for job in result.value["jobs"]}, {T1})
        self.assertEqual(self.listed(store, "team=billing", paused=True)[1], 4)
        resumed = self.bulk(store, "resume", "team=billing,env=prod", at=T2).value
        self.assertEqual(resumed["uuids"], ["j0", "j3"])
        placed = self.result(store.owned_jobs_of(None, ["j0", "j3", "j1"]))
        since = {job["uuid"]: job["active_since"] for job in placed}
        self.assertEqual(since, {"j0": T2, "j3": T2, "j1": None})

    def test_same_as_update_job(self) -> None:
        """A bulk pause leaves the rows an update_job of paused leaves."""
        bulk_store = self.labelled()
        self.bulk(bulk_store, "pause", "tier")
        self.bulk(bulk_store, "resume", "tier", at=T2)
        one_store = self.store("one.db")
        self.ok(one_store, "create_project", project=project())
        self.ok(one_store, "create_project", project=project("p2", "beta"))
        self.ok(
            one_store,
            "create_jobs",
            jobs=[
                job(uuid, labels, project_uuid=p, created_at=f"2026-01-01T00:00:0{i}.000Z")
                for i, (uuid, p, labels) in enumerate(LABELLED)
            ],
        )
        for uuid in ("j1", "j3"):
            self.ok(one_store, "update_job", uuid=uuid, changes={"paused": True}, updated_at=T1)
        for uuid in ("j1", "j3"):
            self.ok(one_store, "update_job", uuid=uuid, changes={"paused": False}, updated_at=T2)
        bulk_dump, one_dump = self.result(bulk_store.dump()), self.result(one_store.dump())
        self.assertEqual(bulk_dump["jobs"], one_dump["jobs"])

    def test_delete(self) -> None:
        """A bulk delete removes the selected jobs of the project given, and their labels."""
        store = self.labelled()
        result = self.bulk(store, "delete", "team=billing", project_uuid="p1")
        self.assertEqual(result.value["uuids"], ["j0", "j1", "j7"])
        self.assertNotIn("jobs", result.value)
        self.assertEqual(self.listed(store, "team=billing"), (["j3"], 1))
        self.assert_index_right(store)

    def test_limit_and_more(self) -> None:
        """At most limit jobs change; more says others are selected; again changes them."""
        store = self.labelled()
        first = self.bulk(store, "pause", "team", limit=4).value
        self.assertEqual((first["uuids"], first["more"]), (["j0", "j1", "j2", "j3"], True))
        second = self.bulk(store, "pause", "team", limit=4).value
        self.assertEqual((second["uuids"], second["more"]), (["j6", "j7"], False))

    def test_refusals(self) -> None:
        """A bad selector, action or limit is refused naming it; nothing changes."""
        store = self.labelled()
        before = self.result(store.dump())
        for extra, field in (
            ({"selector": "a b"}, "selector"),
            ({"selector": ""}, "selector"),
            ({"action": "stop"}, "action"),
            ({"limit": 0}, "limit"),
            ({"limit": 10_001}, "limit"),
            ({"at": 5}, "at"),
        ):
            args = {"action": "pause", "selector": "team", "at": T1, "limit": 10, **extra}
            refused = self.apply(store, Op.BULK_JOBS, **args)
            self.assertEqual((refused.ok, refused.field), (False, field), extra)
        after = self.result(store.dump())
        self.assertEqual(after["jobs"], before["jobs"])


class BulkSubscriberTests(LabelStoreCase):
    """Subscribers hear what a bulk_jobs did as the update_job or delete_job of each job."""

    def test_effects(self) -> None:
        store = self.labelled()
        command = Command(
            Op.BULK_JOBS,
            {"action": "pause", "selector": "tier", "at": T1, "limit": 10},
            version=2,
        )
        result = self.result(store.apply(100, command))
        heard: dict[str, list] = {"all": [], "updates": [], "bulk": [], "deletes": []}
        subscribers = Subscribers()
        subscribers.add(lambda c, r: heard["all"].append((c.op, r.value["uuid"])))
        subscribers.add(lambda c, r: heard["updates"].append(c.args), [Op.UPDATE_JOB])
        subscribers.add(lambda c, r: heard["bulk"].append(c.op), [Op.BULK_JOBS])
        subscribers.add(lambda c, r: heard["deletes"].append(c.op), [Op.DELETE_JOB])
        subscribers.tell(command, result)
        self.assertEqual(heard["all"], [(Op.UPDATE_JOB, "j1"), (Op.UPDATE_JOB, "j3")])
        self.assertEqual(
            heard["updates"][0], {"uuid": "j1", "changes": {"paused": True}, "updated_at": T1}
        )
        self.assertEqual((heard["bulk"], heard["deletes"]), ([Op.BULK_JOBS], []))
        deleted = self.result(
            store.apply(
                101,
                Command(
                    Op.BULK_JOBS,
                    {"action": "delete", "selector": "tier", "at": T1, "limit": 10},
                    version=2,
                ),
            )
        )
        effects = bulk_effects(Command(Op.BULK_JOBS, {}), deleted)
        self.assertEqual(
            [(c.op, c.args, r.value) for c, r in effects],
            [
                (Op.DELETE_JOB, {"uuid": "j1"}, {"uuid": "j1"}),
                (Op.DELETE_JOB, {"uuid": "j3"}, {"uuid": "j3"}),
            ],
        )
        self.assertEqual(bulk_effects(command, Result(False, code="invalid")), [])
