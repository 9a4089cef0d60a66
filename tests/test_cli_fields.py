"""
The CLI and the Python client with the fields of issue 14: the job flags,
a project's notify URL, import columns, and the API's refusals of jobs that
could never run shown as one line (for an import, naming the file's row).
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

import attrs

from scheduler0.cli import jobfile
from scheduler0.client.operations import UNCHANGED, Operations
from tests.support.api import Defaults, Harness
from tests.support.cli import JOB, PROJECT, ResourceCommandTestCase, envelope

NEW_FIELDS = ("retry_delay_s", "retry_max_delay_s", "concurrency_policy", "coalesce")


class JobFlagTests(ResourceCommandTestCase):
    def test_create_sends_the_new_fields(self) -> None:
        """jobs create types --retry-delay-s/--retry-max-delay-s, the policy and --coalesce."""
        self.node.on("POST", "/api/v1/jobs", (201, envelope(JOB)))
        code = self.run_cli(
            "jobs",
            "create",
            "--project",
            "p-1",
            "--name",
            "n",
            "--spec",
            "@daily",
            "--callback-url",
            "http://h/cb",
            "--retry-delay-s",
            "2.5",
            "--retry-max-delay-s",
            "30",
            "--concurrency-policy",
            "forbid",
            "--coalesce",
        )
        self.assertEqual(code, 0, self.stderr.getvalue())
        sent = self.node.calls[0]["json"]
        self.assertEqual(
            {k: sent[k] for k in NEW_FIELDS},
            {
                "retry_delay_s": 2.5,
                "retry_max_delay_s": 30.0,
                "concurrency_policy": "forbid",
                "coalesce": True,
            },
        )

    def test_create_without_them_sends_none(self) -> None:
        """Without the flags nothing new is sent (the node's defaults apply)."""
        self.node.on("POST", "/api/v1/jobs", (201, envelope(JOB)))
        args = ("--project", "p", "--name", "n", "--spec", "@daily", "--callback-url", "http://h/")
        self.assertEqual(self.run_cli("jobs", "create", *args), 0, self.stderr.getvalue())
        self.assertFalse(set(NEW_FIELDS) & set(self.node.calls[0]["json"]))

    def test_update_sends_only_the_given_ones(self) -> None:
        """jobs update --no-coalesce / --concurrency-policy replace PATCH just those."""
        self.node.on("PATCH", "/api/v1/jobs/j-1", (200, envelope(JOB)))
        self.assertEqual(
            self.run_cli(
                "jobs", "update", "j-1", "--no-coalesce", "--concurrency-policy", "replace"
            ),
            0,
        )
        self.assertEqual(
            self.node.calls[0]["json"], {"coalesce": False, "concurrency_policy": "replace"}
        )
        self.assertEqual(self.run_cli("jobs", "update", "j-1", "--retry-max-delay-s", "600"), 0)
        self.assertEqual(self.node.calls[1]["json"], {"retry_max_delay_s": 600.0})

    def test_bad_flag_values_are_usage_errors(self) -> None:
        """An unknown policy or a delay that is not a number exits 2 before any request."""
        for argv in (
            ("jobs", "update", "j-1", "--concurrency-policy", "queue"),
            ("jobs", "update", "j-1", "--retry-delay-s", "soon"),
        ):
            self.assertEqual(self.run_cli(*argv), 2, argv)
            self.assertIn(f"argument {argv[3]}", self.one_error_line())
        self.assertEqual(self.node.calls, [])


class ProjectNotifyURLFlagTests(ResourceCommandTestCase):
    def test_create_and_update(self) -> None:
        """--notify-url on create and update; --no-notify-url sends null; not both at once."""
        self.node.on("POST", "/api/v1/projects", (201, envelope(PROJECT)))
        self.node.on("PUT", "/api/v1/projects/p-1", (200, envelope(PROJECT)))
        self.assertEqual(
            self.run_cli("projects", "create", "--name", "d", "--notify-url", "http://n/x"), 0
        )
        self.assertEqual(self.node.calls[0]["json"], {"name": "d", "notify_url": "http://n/x"})
        self.assertEqual(self.run_cli("projects", "update", "p-1", "--notify-url", "http://n/y"), 0)
        self.assertEqual(self.node.calls[1]["json"], {"notify_url": "http://n/y"})
        self.assertEqual(self.run_cli("projects", "update", "p-1", "--no-notify-url"), 0)
        self.assertEqual(self.node.calls[2]["json"], {"notify_url": None})
        self.assertEqual(
            self.run_cli(
                "projects", "update", "p-1", "--notify-url", "http://n/", "--no-notify-url"
            ),
            2,
        )
        self.assertEqual(len(self.node.calls), 3)


class ClientTests(ResourceCommandTestCase):
    def test_project_requests(self) -> None:
        """create_project takes notify_url; update_project leaves it, sets it, or clears it."""
        create = Operations.create_project.build("p", notify_url="http://n/")
        self.assertEqual(create.body, {"name": "p", "notify_url": "http://n/"})
        self.assertEqual(Operations.create_project.build("p").body, {"name": "p"})
        update = Operations.update_project.build
        self.assertEqual(update("u", name="x").body, {"name": "x"})
        self.assertEqual(update("u", notify_url=None).body, {"notify_url": None})
        self.assertEqual(update("u", notify_url="http://n/").body, {"notify_url": "http://n/"})
        self.assertEqual(repr(UNCHANGED), "UNCHANGED")


# -- against the real API ---------------------------------------------------------


class RealAPITestCase(ResourceCommandTestCase):
    """The command's HTTP function answered by the real API, in memory."""

    cap_mb = 2.0

    def setUp(self) -> None:
        super().setUp()
        self.h = Harness(defaults=Defaults(http_executor_payload_max_size_mb=self.cap_mb))
        self.environ["SCHEDULER0_API_KEY"] = self.h.key
        self.environ["SCHEDULER0_API_SECRET"] = self.h.secret
        self.node = self.api  # type: ignore[assignment]
        self.puuid = self.h.project()["uuid"]
        self.created: list[int] = []

    def api(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        auth: Any = None,
        timeout: float = 0,
        headers: dict | None = None,
    ) -> tuple[int, Any]:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        body = attrs.NOTHING if json is None else json
        status, _, answer = self.h.request(method, path, body, headers=headers)
        if method == "POST" and parts.path.endswith("/jobs") and status == 201:
            self.created.append(len(answer["data"]) if isinstance(answer["data"], list) else 1)
        return status, answer


class RefusalTests(RealAPITestCase):
    cap_mb = 0.01

    def create(self, *extra: str) -> int:
        return self.run_cli(
            "jobs",
            "create",
            "--project",
            self.puuid,
            "--name",
            "n",
            "--spec",
            "@daily",
            "--callback-url",
            "http://h.test/cb",
            *extra,
        )

    def test_create_refusals_are_one_line_naming_the_field(self) -> None:
        """The API's refusals of the new checks: one line naming the field, exit 2."""
        cases = (
            (("--retry-delay-s", "120"), "retry_max_delay_s: is 60, less than retry_delay_s"),
            (("--spec", "@at 2020-01-01T00:00:00Z"), "spec: @at 2020-01-01T00:00:00.000Z is in"),
            (("--data", json.dumps("x" * 20_000)), "data: is 20,002 bytes as JSON"),
        )
        for extra, expected in cases:
            self.assertEqual(self.create(*extra), 2, extra)
            line = self.one_error_line()
            self.assertIn(expected, line)
            self.assertTrue(line.endswith("(HTTP 400)"), line)
        self.assertEqual(self.created, [])
        self.assertEqual(self.create("--concurrency-policy", "replace", "--coalesce"), 0)
        shown = self.stdout.getvalue()
        self.assertIn("concurrency_policy: replace", shown)
        self.assertIn("coalesce:           yes", shown)


class ImportFieldTests(RealAPITestCase):
    cap_mb = 0.01

    def test_csv_columns_are_typed(self) -> None:
        """The new columns of a CSV are typed (numbers, a boolean, text) and stored."""
        self.write(
            "jobs.csv",
            "name,spec,callback_url,retry_delay_s,retry_max_delay_s,concurrency_policy,coalesce\n"
            "a,@daily,http://h.test/,2,20.5,forbid,yes\n"
            "b,@daily,http://h.test/,,,,\n",
        )
        self.assertEqual(
            self.run_cli("jobs", "import", "jobs.csv", "--project", self.puuid),
            0,
            self.stderr.getvalue(),
        )
        a, b = self.h.request("GET", "/jobs")[2]["data"]["items"]
        self.assertEqual(
            {k: a[k] for k in NEW_FIELDS},
            {
                "retry_delay_s": 2.0,
                "retry_max_delay_s": 20.5,
                "concurrency_policy": "forbid",
                "coalesce": True,
            },
        )
        self.assertEqual(b["concurrency_policy"], "allow")
        self.write("bad.csv", "name,spec,callback_url,coalesce\nc,@daily,http://h.test/,maybe\n")
        self.assertEqual(self.run_cli("jobs", "import", "bad.csv", "--project", self.puuid), 2)
        self.assertIn("row 1 (line 2): coalesce: must be true or false", self.one_error_line())

    def test_listed_jobs_round_trip_with_the_new_fields(self) -> None:
        """`jobs list --json` output imports with its concurrency_policy, coalesce and delays."""
        self.h.job(
            self.puuid,
            concurrency_policy="replace",
            coalesce=True,
            retry_delay_s=3,
            retry_max_delay_s=9,
        )
        self.assertEqual(self.run_cli("jobs", "list", "--json"), 0)
        self.write("listed.json", self.stdout.getvalue())
        self.assertEqual(self.run_cli("jobs", "import", "listed.json"), 0, self.stderr.getvalue())
        first, second = self.h.request("GET", "/jobs")[2]["data"]["items"]
        self.assertEqual({k: second[k] for k in NEW_FIELDS}, {k: first[k] for k in NEW_FIELDS})

    def test_a_past_at_is_refused_before_anything_is_sent(self) -> None:
        """An @at in the past is named with its row, and nothing is imported."""
        self.write(
            "jobs.csv",
            "name,spec,callback_url\n"
            "a,@at 2099-01-01T00:00:00Z,http://h.test/\n"
            "b,@at 2020-01-01T00:00:00Z,http://h.test/\n",
        )
        self.assertEqual(self.run_cli("jobs", "import", "jobs.csv", "--project", self.puuid), 2)
        line = self.one_error_line()
        self.assertIn("jobs.csv: row 2 (line 3): spec: @at 2020-01-01T00:00:00.000Z is in", line)
        self.assertIn("nothing was imported", line)
        self.assertEqual(self.created, [])

    def test_a_row_the_node_refuses_is_named_and_the_fixed_file_imports_the_rest(self) -> None:
        """
        Data too large for the node's callbacks, in the second batch: one
        line naming the file's row and data, exit 2, the first batch kept.
        Fixed, the same command creates only the rest.
        """
        rows = ["name,spec,callback_url,data"]
        rows += [f'j{i},@daily,http://h.test/,"{{""i"": {i}}}"' for i in range(4)]
        rows[4] = f'j3,@daily,http://h.test/,"""{"x" * 20_000}"""'
        self.write("jobs.csv", "\n".join(rows) + "\n")
        code = self.run_cli(
            "jobs", "import", "jobs.csv", "--project", self.puuid, "--batch-size", "2"
        )
        self.assertEqual(code, 2)
        line = self.stderr.getvalue().splitlines()[-1]
        self.assertIn("jobs.csv: row 4 (line 5): data: is 20,002 bytes as JSON", line)
        self.assertIn("(HTTP 400); 2 of 4 jobs were imported", line)
        self.assertIn("Fix the file and run the same command again", line)
        self.assertNotIn("jobs[1]", line)
        self.assertEqual(self.created, [2])
        rows[4] = 'j3,@daily,http://h.test/,"{""i"": 3}"'
        self.write("jobs.csv", "\n".join(rows) + "\n")
        code = self.run_cli(
            "jobs", "import", "jobs.csv", "--project", self.puuid, "--batch-size", "2"
        )
        self.assertEqual(code, 0, self.stderr.getvalue())
        names = [job["name"] for job in self.h.request("GET", "/jobs")[2]["data"]["items"]]
        self.assertEqual(sorted(names), ["j0", "j1", "j2", "j3"])


class LoadJobRowsTests(ResourceCommandTestCase):
    def test_rows_are_named(self) -> None:
        """load_job_rows gives each job's place in the file beside it."""
        rows = [
            {"name": n, "spec": "@daily", "callback_url": "http://h/", "project_uuid": "p"}
            for n in "ab"
        ]
        with open(os.path.join(self.cwd, "b.json"), "w") as f:
            json.dump(rows, f)
        jobs, wheres = jobfile.load_job_rows("b.json", self.cwd)
        self.assertEqual([j["name"] for j in jobs], ["a", "b"])
        self.assertEqual(wheres, ["row 1", "row 2"])
