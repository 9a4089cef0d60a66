"""
The job fields of issue 14 (concurrency_policy, coalesce, retry_delay_s,
retry_max_delay_s) and a project's notify_url in the replicated store:
defaults, checks, changes, files and snapshots from before them.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from scheduler0.model import ADDED_JOB_DEFAULTS
from tests.support.state import OLD_JOBS, OLD_PROJECTS, StateCase, project

T0 = "2026-01-01T00:00:00.000Z"
T1 = "2026-01-01T00:01:00.000Z"
NEW_DEFAULTS = {
    "retry_delay_s": 1.0,
    "retry_max_delay_s": 60.0,
    "concurrency_policy": "allow",
    "coalesce": False,
}


def job(uuid: str, **extra: Any) -> dict:
    value = {
        "uuid": uuid,
        "project_uuid": "p1",
        "name": f"job {uuid}",
        "spec": "@every 1m",
        "callback_url": "http://127.0.0.1/cb",
        "created_at": T0,
        "updated_at": T0,
    }
    value.update(extra)
    return value


class StoreFieldTests(StateCase):
    """The new columns in the replicated store: defaults, checks, changes, old files."""

    def test_defaults_when_left_out(self) -> None:
        """A create_jobs without the new fields stores their defaults; reads give their types."""
        store = self.seeded()
        (created,) = self.ok(store, "create_jobs", jobs=[job("j1")])
        stored = self.result(store.get_job("j1"))
        self.assertEqual(created, stored)
        self.assertEqual({k: stored[k] for k in NEW_DEFAULTS}, NEW_DEFAULTS)
        self.assertIs(stored["coalesce"], False)
        self.assertIsInstance(stored["retry_delay_s"], float)
        self.assertEqual(ADDED_JOB_DEFAULTS, {**NEW_DEFAULTS, "labels": {}})

    def test_given_values_are_stored_alike_on_both_paths(self) -> None:
        """
        The fast path (plain types) and the full checks store the same row:
        ints become floats, coalesce a boolean read back as a boolean.
        """
        store = self.seeded()
        fields = {
            "retry_delay_s": 2,
            "retry_max_delay_s": 30.5,
            "concurrency_policy": "forbid",
            "coalesce": True,
        }
        # A tuple is not a plain list, so this job takes the full checks.
        slow = job("j2", data=("x",), **fields)
        self.ok(store, "create_jobs", jobs=[job("j1", data=["x"], **fields), slow])
        one, two = self.result(store.get_jobs(["j1", "j2"]))
        expected = {
            "retry_delay_s": 2.0,
            "retry_max_delay_s": 30.5,
            "concurrency_policy": "forbid",
            "coalesce": True,
        }
        for stored in (one, two):
            self.assertEqual({k: stored[k] for k in expected}, expected)
            self.assertIs(stored["coalesce"], True)
            self.assertIsInstance(stored["retry_delay_s"], float)
        dump = self.result(store.dump())["jobs"]
        self.assertEqual(dump[0][3:], dump[1][3:])  # (the uuid and name aside)

    def test_bad_values_are_refused_naming_the_field(self) -> None:
        """Wrong types, unknown policies, negative delays and a max below the delay are refused."""
        store = self.seeded()
        cases = [
            ({"concurrency_policy": "skip"}, "concurrency_policy"),
            ({"concurrency_policy": ["allow"]}, "concurrency_policy"),
            ({"coalesce": 1}, "coalesce"),
            ({"coalesce": "yes"}, "coalesce"),
            ({"retry_delay_s": -1}, "retry_delay_s"),
            ({"retry_delay_s": True}, "retry_delay_s"),
            ({"retry_delay_s": float("nan")}, "retry_delay_s"),
            ({"retry_max_delay_s": "60"}, "retry_max_delay_s"),
            ({"retry_max_delay_s": float("inf")}, "retry_max_delay_s"),
            ({"retry_delay_s": 5, "retry_max_delay_s": 4}, "retry_max_delay_s"),
            ({"retry_delay_s": 61}, "retry_max_delay_s"),
        ]
        for fields, field in cases:
            refused = self.apply(store, "create_jobs", jobs=[job("j1", **fields)])
            self.assertEqual((refused.ok, refused.field), (False, field), fields)
        self.assertEqual(self.result(store.all_jobs()), [])

    def test_update_changes_and_checks_the_fields(self) -> None:
        """update_job changes each new field; a max delay below the (stored) delay is refused."""
        store = self.seeded()
        self.ok(store, "create_jobs", jobs=[job("j1")])
        changes = {
            "concurrency_policy": "replace",
            "coalesce": True,
            "retry_delay_s": 10,
            "retry_max_delay_s": 100,
        }
        changed = self.ok(store, "update_job", uuid="j1", changes=changes, updated_at=T1)
        self.assertEqual(
            {k: changed[k] for k in changes},
            {
                "concurrency_policy": "replace",
                "coalesce": True,
                "retry_delay_s": 10.0,
                "retry_max_delay_s": 100.0,
            },
        )
        self.assertEqual(self.result(store.get_job("j1")), changed)
        for bad, field in (
            ({"retry_max_delay_s": 5}, "retry_max_delay_s"),
            ({"retry_delay_s": 101}, "retry_max_delay_s"),
            ({"concurrency_policy": "queue"}, "concurrency_policy"),
            ({"coalesce": None}, "coalesce"),
        ):
            refused = self.apply(store, "update_job", uuid="j1", changes=bad, updated_at=T1)
            self.assertEqual((refused.ok, refused.field), (False, field), bad)
        self.assertEqual(self.result(store.get_job("j1")), changed)

    def test_project_notify_url_set_changed_and_cleared(self) -> None:
        """notify_url is optional (None), kept, changed and cleared; non-text is refused."""
        store = self.store()
        plain = self.ok(store, "create_project", project=project())
        self.assertIsNone(plain["notify_url"])
        with_url = self.ok(
            store, "create_project", project=project("p2", "beta") | {"notify_url": "http://n/x"}
        )
        self.assertEqual(with_url["notify_url"], "http://n/x")
        self.assertEqual(self.result(store.get_project("p2")), with_url)
        changed = self.ok(
            store,
            "update_project",
            uuid="p1",
            changes={"notify_url": "https://n/y"},
            updated_at=T1,
        )
        self.assertEqual(changed["notify_url"], "https://n/y")
        self.assertEqual(self.result(store.get_project("p1")), changed)
        cleared = self.ok(
            store, "update_project", uuid="p1", changes={"notify_url": None}, updated_at=T1
        )
        self.assertIsNone(cleared["notify_url"])
        self.assertIsNone(self.result(store.get_project_by_name("alpha"))["notify_url"])
        for args in (
            {"project": project("p3", "gamma") | {"notify_url": 3}},
            {"project": project("p3", "gamma") | {"notify_url": ["http://n/"]}},
        ):
            refused = self.apply(store, "create_project", **args)
            self.assertEqual((refused.ok, refused.field), (False, "notify_url"))
        refused = self.apply(
            store, "update_project", uuid="p1", changes={"notify_url": 1}, updated_at=T1
        )
        self.assertEqual((refused.ok, refused.field), (False, "notify_url"))

    def old_file(self, name: str) -> str:
        """A state.db of the first release: no ownership and none of the new columns."""
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

    def test_an_old_file_reads_the_defaults(self) -> None:
        """
        A state.db without the new columns opens with them added: its jobs
        read the defaults and its projects no notify_url; they change like
        new ones, and the columns are those (in that order) of a fresh file.
        """
        self.old_file("state.db")
        store = self.store("state.db")
        old = self.result(store.get_job("old"))
        self.assertEqual({k: old[k] for k in NEW_DEFAULTS}, NEW_DEFAULTS)
        self.assertIs(old["coalesce"], False)
        self.assertIsNone(self.result(store.get_project("p1"))["notify_url"])
        self.assertEqual(self.result(store.jobs_page())[0], old)
        self.apply(store, "create_project", project=project("p0", "zero"))
        changed = self.ok(
            store, "update_job", uuid="old", changes={"coalesce": True}, updated_at=T1
        )
        self.assertIs(changed["coalesce"], True)
        self.ok(store, "create_jobs", jobs=[job("new", concurrency_policy="forbid")])
        fresh = self.store("fresh.db")
        for table in ("jobs", "projects"):
            columns = f"SELECT name FROM pragma_table_info('{table}')"
            self.assertEqual(
                self.result(store.pool.runQuery(columns)),
                self.result(fresh.pool.runQuery(columns)),
                table,
            )

    def test_an_old_snapshot_restores_with_the_defaults(self) -> None:
        """An image from before the new columns restores into a store that reads the defaults."""
        with open(self.old_file("old.db"), "rb") as f:
            image = f.read()
        store = self.seeded()
        self.result(store.restore(image))
        old = self.result(store.get_job("old"))
        self.assertEqual({k: old[k] for k in NEW_DEFAULTS}, NEW_DEFAULTS)

    def test_snapshot_round_trip_keeps_the_fields(self) -> None:
        """A snapshot restored elsewhere holds the same new fields (and dumps equal)."""
        store = self.store()
        self.ok(store, "create_project", project=project() | {"notify_url": "http://n/"})
        self.ok(
            store,
            "create_jobs",
            jobs=[
                job("j1", concurrency_policy="replace", coalesce=True, retry_delay_s=3),
                job("j2"),
            ],
        )
        restored = self.store("restored.db")
        self.result(restored.restore(self.result(store.snapshot())))
        self.assertEqual(self.result(restored.dump()), self.result(store.dump()))
        self.assertEqual(
            self.result(restored.get_jobs(["j1", "j2"])), self.result(store.get_jobs(["j1", "j2"]))
        )
        self.assertEqual(self.result(restored.get_project("p1"))["notify_url"], "http://n/")
