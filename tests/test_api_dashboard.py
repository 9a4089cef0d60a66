"""
What the dashboard asks of the API besides the lists it already had: jobs
found by the start of their name, and the next slots of a schedule that is
not stored (a job form's live preview). C{GET /} is tested in
test_dashboard, over real TCP.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.api.routes import DEFAULT_NEXT, PREFIXES
from scheduler0.client.operations import Operations
from scheduler0.store.selection import prefix_end
from tests.support.api import Harness, fired


class _APICase(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()

    def assertRefused(self, response, status: int, field: str) -> dict:
        got, _, body = response
        self.assertEqual(got, status, body)
        self.assertIs(body["success"], False)
        self.assertIn(field, body["error"]["fields"], body)
        return body["error"]


class NamePrefixTests(_APICase):
    def setUp(self) -> None:
        super().setUp()
        self.project = self.h.project()["uuid"]
        self.other = self.h.project("other")["uuid"]
        self.jobs = {}
        for project, name, paused in (
            (self.project, "alpha-1", False),
            (self.project, "beta", False),
            (self.other, "alpha-2", True),
            (self.project, "Alpha-3", False),
            (self.project, "alpha", False),
            (self.project, "alph\U0010ffff", False),
        ):
            self.jobs[name] = self.h.job(project, name=name, paused=paused)["uuid"]

    def names(self, query: str) -> tuple[list[str], int]:
        status, _, body = self.h.request("GET", f"/jobs?{query}")
        self.assertEqual(status, 200, body)
        return [job["name"] for job in body["data"]["items"]], body["data"]["total"]

    def test_prefix_finds_the_names_that_start_with_it_in_creation_order(self) -> None:
        """name_prefix keeps the jobs whose name starts with it, case included, as created."""
        self.assertEqual(self.names("name_prefix=alpha"), (["alpha-1", "alpha-2", "alpha"], 3))
        self.assertEqual(self.names("name_prefix=Alpha"), (["Alpha-3"], 1))
        self.assertEqual(self.names("name_prefix=alpha-"), (["alpha-1", "alpha-2"], 2))
        self.assertEqual(
            self.names("name_prefix=alph"), (["alpha-1", "alpha-2", "alpha", "alph\U0010ffff"], 4)
        )
        self.assertEqual(self.names("name_prefix=gamma"), ([], 0))

    def test_prefix_combines_with_the_other_filters_and_the_cursor(self) -> None:
        """With project_uuid and paused, and page by page through the cursor."""
        self.assertEqual(
            self.names(f"name_prefix=alpha&project_uuid={self.project}"), (["alpha-1", "alpha"], 2)
        )
        self.assertEqual(self.names("name_prefix=alpha&paused=true"), (["alpha-2"], 1))
        status, _, body = self.h.request("GET", "/jobs?name_prefix=alpha&limit=2")
        first = body["data"]
        self.assertEqual([j["name"] for j in first["items"]], ["alpha-1", "alpha-2"])
        status, _, body = self.h.request(
            "GET", f"/jobs?name_prefix=alpha&limit=2&cursor={first['next_cursor']}"
        )
        second = body["data"]
        self.assertEqual(
            ([j["name"] for j in second["items"]], second["offset"], second["total"]),
            (["alpha"], 2, 3),
        )
        self.assertIsNone(second["next_cursor"])

    def test_an_empty_prefix_is_refused(self) -> None:
        """An empty name_prefix is a 400 naming it (leave it out to list every job)."""
        before = self.h.dump()
        self.assertRefused(self.h.request("GET", "/jobs?name_prefix="), 400, "name_prefix")
        self.assertEqual(self.h.dump(), before)

    def test_the_prefix_is_a_range_of_a_name_index(self) -> None:
        """SQLite answers the filter from the name index, alone or in a project, not job by job."""
        connection = self.h.state.pool._connection
        for filters, index in (
            ({}, "jobs_by_name"),
            ({"project_uuid": self.project}, "jobs_by_name"),
        ):
            statements: list[str] = []
            connection.set_trace_callback(statements.append)
            try:
                fired(self.h.state.list_jobs(name_prefix="alpha", limit=10, **filters))
            finally:
                connection.set_trace_callback(None)
            for sql in statements:
                if sql.lstrip().startswith("SELECT"):
                    plan = " ".join(r[3] for r in connection.execute("EXPLAIN QUERY PLAN " + sql))
                    self.assertIn(f"INDEX {index} ", plan, sql)

    def test_prefix_end(self) -> None:
        """The bound above every text with the prefix: its last raisable character raised."""
        self.assertEqual(prefix_end("ab"), "ac")
        self.assertEqual(prefix_end("a\U0010ffff"), "b")
        self.assertEqual(prefix_end("a\ud7ff"), "a\ue000")
        self.assertIsNone(prefix_end("\U0010ffff"))


class SchedulePreviewTests(_APICase):
    def preview(self, body: object) -> tuple[int, dict, dict]:
        return self.h.request("POST", "/schedule/preview", body)

    def test_next_slots_of_a_cron_spec_in_its_zone(self) -> None:
        """The next n slots in UTC and in the zone, as a job created now would fire them."""
        before = (self.h.dump(), len(self.h.proposer.proposed))
        for prefix in PREFIXES:
            status, _, body = self.h.request(
                "POST",
                f"{prefix}/schedule/preview",
                {"spec": "30 9 * * *", "timezone": "Europe/Berlin", "n": 3},
            )
            self.assertEqual(status, 200, body)
            self.assertEqual(
                body["data"],
                {
                    "items": [
                        {
                            "utc": f"2026-01-0{d}T08:30:00.000Z",
                            "local": f"2026-01-0{d}T09:30:00.000+01:00",
                        }
                        for d in (2, 3, 4)
                    ],
                    "timezone": "Europe/Berlin",
                    "paused": False,
                },
            )
        self.assertEqual((self.h.dump(), len(self.h.proposer.proposed)), before)

    def test_every_counts_from_now_and_n_defaults(self) -> None:
        """@every counts from now (to the second), in UTC by default, DEFAULT_NEXT slots."""
        status, _, body = self.preview({"spec": "@every 90s"})
        self.assertEqual(status, 200, body)
        items = body["data"]["items"]
        self.assertEqual(len(items), DEFAULT_NEXT)
        self.assertEqual(items[0]["utc"], "2026-01-02T03:05:35.000Z")
        self.assertEqual(items[1]["utc"], "2026-01-02T03:07:05.000Z")
        self.assertEqual(body["data"]["timezone"], "UTC")

    def test_the_same_refusals_as_creating_a_job(self) -> None:
        """A bad spec or zone is refused naming it, in the words job creation uses."""
        project = self.h.project()["uuid"]
        job = {"project_uuid": project, "name": "j", "callback_url": "http://cb.test/x"}
        for fields, field in (
            ({"spec": "61 * * * *"}, "spec"),
            ({"spec": "@every 0s"}, "spec"),
            ({"spec": "@at 2020-01-01T00:00:00Z"}, "spec"),
            ({"spec": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
            ({"spec": 5}, "spec"),
        ):
            preview = self.assertRefused(self.preview(fields), 400, field)
            created = self.assertRefused(
                self.h.request("POST", "/jobs", {**job, **fields}), 400, field
            )
            self.assertEqual(preview["fields"][field], created["fields"][field], fields)
        self.assertEqual(self.h.count_jobs(), 0)

    def test_missing_unknown_and_out_of_range(self) -> None:
        """spec is required; n runs from 1 to 100; other fields are unknown."""
        self.assertRefused(self.preview({}), 400, "spec")
        self.assertRefused(self.preview({"spec": "@hourly", "n": 0}), 400, "n")
        self.assertRefused(self.preview({"spec": "@hourly", "n": 101}), 400, "n")
        self.assertRefused(self.preview({"spec": "@hourly", "n": True}), 400, "n")
        self.assertRefused(self.preview({"spec": "@hourly", "name": "x"}), 400, "name")
        self.assertRefused(self.preview(["@hourly"]), 400, "body")

    def test_needs_a_credential(self) -> None:
        """Like every client route, it answers 401 without one."""
        status, _, _ = self.h.request("POST", "/schedule/preview", {"spec": "@hourly"}, auth="none")
        self.assertEqual(status, 401)


class ClientTests(SynchronousTestCase):
    def test_the_client_builds_both_requests(self) -> None:
        """The Python client asks for name_prefix and for a preview as the API takes them."""
        request = Operations.list_jobs.build(name_prefix="night", limit=5)
        self.assertEqual(
            request.url("http://node:9091"),
            "http://node:9091/api/v1/jobs?name_prefix=night&limit=5",
        )
        request = Operations.preview_schedule.build("0 2 * * *", "Europe/Berlin", 3)
        self.assertEqual(
            (request.method, request.path, request.body),
            (
                "POST",
                "/schedule/preview",
                {"spec": "0 2 * * *", "timezone": "Europe/Berlin", "n": 3},
            ),
        )
        self.assertEqual(Operations.preview_schedule.build("@hourly").body, {"spec": "@hourly"})
