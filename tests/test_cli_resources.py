"""
Tests for the resource commands of the C{scheduler0} CLI
(L{scheduler0.cli.resources}, L{scheduler0.cli.jobfile}): every command in
memory against a fake node, and a real node driven through the real CLI.
"""

from __future__ import annotations

import base64
import io
import json
import os
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from harness.process import client_headers, prepare_single_node, run_cli
from scheduler0.cli import jobfile
from scheduler0.credentials import AdminCredentials, save_admin_credentials
from tests.support.cli import (
    ENDPOINT,
    JOB,
    PROJECT,
    ResourceCommandTestCase,
    envelope,
    error,
)


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class ConnectionTests(ResourceCommandTestCase):
    """Where the commands connect and with which credentials."""

    def test_key_from_environment(self) -> None:
        """SCHEDULER0_ENDPOINT and the key pair from the environment are used."""
        self.node.on("GET", "/api/v1/projects", (200, envelope({"items": [], "total": 0})))
        self.assertEqual(self.run_cli("projects", "list"), 0)
        (call,) = self.node.calls
        self.assertTrue(call["url"].startswith(ENDPOINT + "/api/v1/projects"))
        self.assertEqual(
            (call["headers"]["x-api-key"], call["headers"]["x-secret-key"]), ("key", "secret")
        )

    def test_options_win_over_environment(self) -> None:
        """--endpoint, --api-key and --api-secret override the environment."""
        self.node.on("GET", "/api/v1/jobs/j-1", (200, envelope(JOB)))
        self.assertEqual(
            self.run_cli(
                "jobs",
                "get",
                "j-1",
                "--endpoint",
                "http://other:1/",
                "--api-key",
                "k2",
                "--api-secret",
                "s2",
            ),
            0,
        )
        (call,) = self.node.calls
        self.assertEqual(call["url"], "http://other:1/api/v1/jobs/j-1")
        self.assertEqual(call["headers"]["x-api-key"], "k2")

    def test_admin_credentials_from_config_directory(self) -> None:
        """
        Without a key pair, the config's address and the admin credentials
        beside it are used (HTTP Basic), and no secret is printed.
        """
        self.environ = {}
        self.write("config.yml", "Port: 9555\n")
        save_admin_credentials(
            os.path.join(self.cwd, ".scheduler0"), AdminCredentials("admin", "pw-1", "sk-1")
        )
        self.node.on("GET", "/api/v1/jobs", (200, envelope({"items": [JOB], "total": 1})))
        self.assertEqual(self.run_cli("jobs", "list"), 0)
        (call,) = self.node.calls
        self.assertTrue(call["url"].startswith("http://127.0.0.1:9555/api/v1/jobs"))
        token = base64.b64encode(b"admin:pw-1").decode()
        self.assertEqual(call["headers"]["Authorization"], f"Basic {token}")
        self.assertNotIn("pw-1", self.stdout.getvalue() + self.stderr.getvalue())

    def test_no_credentials(self) -> None:
        """With no key pair and no .scheduler0 the command says how to get credentials."""
        self.environ = {"SCHEDULER0_ENDPOINT": ENDPOINT}
        self.assertEqual(self.run_cli("projects", "list"), 1)
        self.assertIn("credential init", self.one_error_line())
        self.assertEqual(self.node.calls, [])

    def test_half_a_key_pair_is_a_usage_error(self) -> None:
        """An API key without its secret exits 2 naming both options."""
        del self.environ["SCHEDULER0_API_SECRET"]
        self.assertEqual(self.run_cli("jobs", "list"), 2)
        self.assertIn("--api-secret", self.one_error_line())

    def test_bad_endpoint(self) -> None:
        """An endpoint that is not an http(s) URL exits 2."""
        self.assertEqual(self.run_cli("jobs", "list", "--endpoint", "node:9091"), 2)
        self.assertIn("--endpoint", self.one_error_line())

    def test_unreachable_node_exits_1(self) -> None:
        """A refused connection is one line naming the endpoint, exit 1."""
        self.node.on("GET", "/api/v1/jobs/j-1", ConnectionRefusedError(111, "refused"))
        self.assertEqual(self.run_cli("jobs", "get", "j-1"), 1)
        line = self.one_error_line()
        self.assertIn(ENDPOINT, line)
        self.assertIn("refused", line)

    def test_api_input_error_exits_2_with_the_api_message(self) -> None:
        """A 400 shows the API's message (it names the field) and exits 2."""
        self.node.on("POST", "/api/v1/jobs", (400, error("spec: expected 5 fields", {"spec": "x"})))
        code = self.run_cli(
            "jobs",
            "create",
            "--project",
            "p-1",
            "--name",
            "n",
            "--spec",
            "x",
            "--callback-url",
            "http://h/cb",
        )
        self.assertEqual(code, 2)
        self.assertEqual(self.one_error_line(), "scheduler0: spec: expected 5 fields (HTTP 400)")

    def test_auth_failure_exits_1(self) -> None:
        """A 401 is a failure talking to the node (exit 1), not a usage error."""
        self.node.on("GET", "/api/v1/projects/p-1", (401, error("x-api-key: unknown API key")))
        self.assertEqual(self.run_cli("projects", "get", "p-1"), 1)
        self.assertIn("unknown API key", self.one_error_line())

    def test_every_resource_command_has_help(self) -> None:
        """Each resource command answers --help with the connection options and --config."""
        commands = [("projects", a) for a in ("list", "get", "create", "update", "delete")]
        commands += [
            ("jobs", a)
            for a in (
                "list",
                "get",
                "create",
                "update",
                "delete",
                "run",
                "next",
                "pause",
                "resume",
                "import",
            )
        ]
        commands.append(("executions", "list"))
        for argv in commands:
            self.assertEqual(self.run_cli(*argv, "--help"), 0, argv)
            for option in ("--config PATH", "--endpoint URL", "--api-key", "--json"):
                self.assertIn(option, self.stdout.getvalue(), argv)


class ProjectCommandTests(ResourceCommandTestCase):
    """scheduler0 projects ..."""

    def test_list_table(self) -> None:
        """projects list prints an aligned table with a header."""
        self.node.on("GET", "/api/v1/projects", (200, envelope({"items": [PROJECT], "total": 1})))
        self.assertEqual(self.run_cli("projects", "list"), 0)
        header, row = self.stdout.getvalue().splitlines()
        self.assertEqual(header.split(), ["UUID", "NAME", "DESCRIPTION", "CREATED"])
        self.assertEqual(row.split(), ["p-1", "demo", "d", "2026-01-01T00:00:00.000Z"])
        self.assertEqual(header.index("NAME"), row.index("demo"))

    def test_list_follows_pages_up_to_the_limit(self) -> None:
        """--limit N stops after N items, following next_cursor, and says how many exist."""
        self.node.on(
            "GET",
            "/api/v1/projects",
            (200, envelope({"items": [PROJECT, PROJECT], "total": 9, "next_cursor": "c"})),
            (200, envelope({"items": [PROJECT, PROJECT], "total": 9, "next_cursor": "d"})),
        )
        self.assertEqual(self.run_cli("projects", "list", "--limit", "3", "--json"), 0)
        self.assertEqual(len(json.loads(self.stdout.getvalue())), 3)
        first, second = self.node.calls
        self.assertEqual(first["query"], {"limit": "3"})
        self.assertEqual(second["query"], {"limit": "3", "cursor": "c"})
        self.assertEqual(self.run_cli("projects", "list", "--limit", "1"), 0)
        self.assertIn("showing 1 of 9 projects", self.stderr.getvalue())

    def test_get(self) -> None:
        """projects get prints one field a line."""
        self.node.on("GET", "/api/v1/projects/p-1", (200, envelope(PROJECT)))
        self.assertEqual(self.run_cli("projects", "get", "p-1"), 0)
        self.assertIn("name:        demo", self.stdout.getvalue())

    def test_create_shows_the_signing_secret_once(self) -> None:
        """projects create sends name/description and prints the one-time signing secret."""
        self.node.on(
            "POST", "/api/v1/projects", (201, envelope({**PROJECT, "signing_secret": "sig-123"}))
        )
        self.assertEqual(
            self.run_cli("projects", "create", "--name", "demo", "--description", "d"), 0
        )
        self.assertEqual(self.node.calls[0]["json"], {"name": "demo", "description": "d"})
        self.assertIn("sig-123", self.stdout.getvalue())
        self.assertIn("shown only now", self.stderr.getvalue())

    def test_update(self) -> None:
        """projects update PUTs only the given fields; with none it exits 2."""
        self.node.on("PUT", "/api/v1/projects/p-1", (200, envelope(PROJECT)))
        self.assertEqual(self.run_cli("projects", "update", "p-1", "--name", "new"), 0)
        self.assertEqual(self.node.calls[0]["json"], {"name": "new"})
        self.assertEqual(self.run_cli("projects", "update", "p-1"), 2)

    def test_delete_cascade(self) -> None:
        """projects delete --cascade asks for cascade=true and reports the deleted jobs."""
        self.node.on(
            "DELETE",
            "/api/v1/projects/p-1",
            (200, envelope({"uuid": "p-1", "deleted_jobs": ["a", "b"]})),
        )
        self.assertEqual(self.run_cli("projects", "delete", "p-1", "--cascade"), 0)
        self.assertEqual(self.node.calls[0]["query"], {"cascade": "true"})
        self.assertEqual(self.stdout.getvalue(), "deleted project p-1 and 2 jobs\n")

    def test_delete_conflict(self) -> None:
        """A 409 (the project has jobs) is shown as the API says it, exit 2."""
        self.node.on(
            "DELETE",
            "/api/v1/projects/p-1",
            (409, error("uuid: project has 3 jobs; pass cascade=true")),
        )
        self.assertEqual(self.run_cli("projects", "delete", "p-1"), 2)
        line = self.one_error_line()
        self.assertIn("project has 3 jobs", line)
        self.assertIn("--cascade", line)


class JobCommandTests(ResourceCommandTestCase):
    """scheduler0 jobs ... (import has its own tests)."""

    def test_list_with_filters(self) -> None:
        """jobs list --project --paused filters on the node and shows the job columns."""
        self.node.on("GET", "/api/v1/jobs", (200, envelope({"items": [JOB], "total": 1})))
        self.assertEqual(self.run_cli("jobs", "list", "--project", "p-1", "--paused"), 0)
        self.assertEqual(
            self.node.calls[0]["query"], {"project_uuid": "p-1", "paused": "true", "limit": "50"}
        )
        header, row = self.stdout.getvalue().splitlines()
        self.assertEqual(
            header.split(),
            ["UUID", "NAME", "SPEC", "TZ", "PAUSED", "NEXT", "RUN", "LAST", "STATUS"],
        )
        self.assertIn("0 3 * * *", row)
        self.assertIn("succeeded", row)
        self.assertEqual(self.run_cli("jobs", "list", "--active"), 0)
        self.assertEqual(self.node.calls[1]["query"]["paused"], "false")
        self.assertEqual(self.run_cli("jobs", "list", "--name-prefix", "nightly-"), 0)
        self.assertEqual(self.node.calls[2]["query"]["name_prefix"], "nightly-")

    def test_list_json(self) -> None:
        """--json prints the items as JSON."""
        self.node.on("GET", "/api/v1/jobs", (200, envelope({"items": [JOB], "total": 1})))
        self.assertEqual(self.run_cli("jobs", "list", "--json"), 0)
        self.assertEqual(json.loads(self.stdout.getvalue()), [JOB])

    def test_create(self) -> None:
        """jobs create sends the typed fields (data as JSON, paused as a boolean)."""
        self.node.on("POST", "/api/v1/jobs", (201, envelope(JOB)))
        code = self.run_cli(
            "jobs",
            "create",
            "--project",
            "p-1",
            "--name",
            "n",
            "--spec",
            "@every 1m",
            "--callback-url",
            "http://h/cb",
            "--data",
            '{"a": [1]}',
            "--timezone",
            "Europe/Paris",
            "--paused",
            "--retry-max",
            "3",
            "--timeout-s",
            "2.5",
        )
        self.assertEqual(code, 0, self.stderr.getvalue())
        self.assertEqual(
            self.node.calls[0]["json"],
            {
                "project_uuid": "p-1",
                "name": "n",
                "spec": "@every 1m",
                "callback_url": "http://h/cb",
                "data": {"a": [1]},
                "timezone": "Europe/Paris",
                "paused": True,
                "retry_max": 3,
                "timeout_s": 2.5,
            },
        )
        self.assertIn("uuid:", self.stdout.getvalue())

    def test_create_is_retried_under_one_key(self) -> None:
        """A create that got a 503 is sent again with the same Idempotency-Key."""
        self.node.on("POST", "/api/v1/jobs", (503, error("may still apply")), (201, envelope(JOB)))
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
        )
        self.assertEqual(code, 0, self.stderr.getvalue())
        first, second = (c["headers"]["Idempotency-Key"] for c in self.node.calls)
        self.assertEqual(first, second)
        self.assertEqual(len(self.slept), 1)

    def test_create_bad_data(self) -> None:
        """--data that is not JSON exits 2 before any request."""
        code = self.run_cli(
            "jobs",
            "create",
            "--project",
            "p",
            "--name",
            "n",
            "--spec",
            "@daily",
            "--callback-url",
            "http://h/cb",
            "--data",
            "{nope",
        )
        self.assertEqual(code, 2)
        self.assertIn("--data", self.one_error_line())
        self.assertEqual(self.node.calls, [])

    def test_update(self) -> None:
        """jobs update PATCHes only the given fields; --no-paused sets paused false."""
        self.node.on("PATCH", "/api/v1/jobs/j-1", (200, envelope(JOB)))
        self.assertEqual(
            self.run_cli("jobs", "update", "j-1", "--spec", "@daily", "--no-paused"), 0
        )
        self.assertEqual(self.node.calls[0]["json"], {"spec": "@daily", "paused": False})
        self.assertEqual(self.run_cli("jobs", "update", "j-1"), 2)
        self.assertIn("at least one field", self.one_error_line())

    def test_pause_resume_delete(self) -> None:
        """pause/resume PATCH paused; delete sends DELETE; each prints one line."""
        self.node.on("PATCH", "/api/v1/jobs/j-1", (200, envelope(JOB)))
        self.node.on("DELETE", "/api/v1/jobs/j-1", (200, envelope({"uuid": "j-1"})))
        self.assertEqual(self.run_cli("jobs", "pause", "j-1"), 0)
        self.assertEqual(self.stdout.getvalue(), "paused job j-1\n")
        self.assertEqual(self.run_cli("jobs", "resume", "j-1"), 0)
        self.assertEqual(self.run_cli("jobs", "delete", "j-1"), 0)
        self.assertEqual(self.stdout.getvalue(), "deleted job j-1\n")
        self.assertEqual(
            [(c["method"], c["json"]) for c in self.node.calls],
            [("PATCH", {"paused": True}), ("PATCH", {"paused": False}), ("DELETE", None)],
        )

    def test_run(self) -> None:
        """jobs run POSTs /run and prints the execution."""
        self.node.on(
            "POST",
            "/api/v1/jobs/j-1/run",
            (202, envelope({"execution_id": "e-1", "state": "scheduled"})),
        )
        self.assertEqual(self.run_cli("jobs", "run", "j-1"), 0)
        self.assertIn("execution_id: e-1", self.stdout.getvalue())

    def test_next(self) -> None:
        """jobs next -n 2 shows UTC and local instants in the job's zone."""
        self.node.on(
            "GET",
            "/api/v1/jobs/j-1/next",
            (
                200,
                envelope(
                    {
                        "items": [
                            {
                                "utc": "2026-01-02T02:00:00.000Z",
                                "local": "2026-01-02T03:00:00.000+01:00",
                            }
                        ],
                        "timezone": "Europe/Paris",
                        "paused": True,
                    }
                ),
            ),
        )
        self.assertEqual(self.run_cli("jobs", "next", "j-1", "-n", "2"), 0)
        self.assertEqual(self.node.calls[0]["query"], {"n": "2"})
        lines = self.stdout.getvalue().splitlines()
        self.assertEqual(lines[0].split(), ["UTC", "LOCAL", "(Europe/Paris)"])
        self.assertIn("2026-01-02T03:00:00.000+01:00", lines[1])
        self.assertIn("paused", self.stderr.getvalue())

    def test_not_found(self) -> None:
        """A 404 is the API's message, exit 2."""
        self.node.on("GET", "/api/v1/jobs/nope", (404, error("uuid: no job 'nope'")))
        self.assertEqual(self.run_cli("jobs", "get", "nope"), 2)
        self.assertEqual(self.one_error_line(), "scheduler0: uuid: no job 'nope' (HTTP 404)")


class ExecutionCommandTests(ResourceCommandTestCase):
    """scheduler0 executions list."""

    def test_filters_and_table(self) -> None:
        """Every filter goes to the node; the table shows the execution columns."""
        self.node.on(
            "GET",
            "/api/v1/executions",
            (
                200,
                envelope(
                    {
                        "items": [
                            {
                                "execution_id": "e",
                                "job_uuid": "j-1",
                                "scheduled_at": "2026-01-01T00:00:00.000Z",
                                "state": "failed",
                                "attempts": 3,
                                "node_id": 2,
                                "status_code": 500,
                                "error": "HTTP 500",
                            }
                        ],
                        "total": 1,
                    }
                ),
            ),
        )
        code = self.run_cli(
            "executions",
            "list",
            "--job",
            "j-1",
            "--project",
            "p-1",
            "--state",
            "failed",
            "--since",
            "2026-01-01T00:00:00Z",
            "--until",
            "2026-01-02T00:00:00Z",
            "--limit",
            "10",
        )
        self.assertEqual(code, 0, self.stderr.getvalue())
        self.assertEqual(
            self.node.calls[0]["query"],
            {
                "job_uuid": "j-1",
                "project_uuid": "p-1",
                "state": "failed",
                "since": "2026-01-01T00:00:00Z",
                "until": "2026-01-02T00:00:00Z",
                "limit": "10",
            },
        )
        header, row = self.stdout.getvalue().splitlines()
        self.assertTrue(header.startswith("SCHEDULED"))
        self.assertIn("HTTP 500", row)

    def test_bad_state_is_a_usage_error(self) -> None:
        """--state outside the execution states exits 2."""
        self.assertEqual(self.run_cli("executions", "list", "--state", "nope"), 2)


CREATE_JOB = (
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
)
#: The API's answer to a write it could not confirm (it names the HTTP header).
UNCONFIRMED = error(
    "the cluster did not confirm this write in time (no leader, no quorum, or slower than "
    "RaftApplyTimeout); it may still be applied: retry with the same Idempotency-Key header "
    "to have it applied at most once"
)


class GlobalJsonTests(ResourceCommandTestCase):
    """--json before the command, as after it."""

    def test_json_before_the_command(self) -> None:
        """`scheduler0 --json jobs create ...` prints what `jobs create ... --json` does."""
        self.node.on("POST", "/api/v1/jobs", (201, envelope(JOB)))
        self.assertEqual(self.run_cli("--json", *CREATE_JOB), 0, self.stderr.getvalue())
        before = self.stdout.getvalue()
        self.assertEqual(json.loads(before), JOB)
        self.assertEqual(self.run_cli(*CREATE_JOB, "--json"), 0, self.stderr.getvalue())
        self.assertEqual(self.stdout.getvalue(), before)
        self.node.on("GET", "/api/v1/projects", (200, envelope({"items": [PROJECT], "total": 1})))
        self.assertEqual(self.run_cli("--json", "projects", "list"), 0, self.stderr.getvalue())
        self.assertEqual(json.loads(self.stdout.getvalue()), [PROJECT])

    def test_command_without_json_output_refuses_it(self) -> None:
        """A command without JSON output refuses a leading --json: one line, exit 2."""
        self.assertEqual(self.run_cli("--json", "config", "init"), 2)
        self.assertEqual(
            self.one_error_line(), "scheduler0: --json: `scheduler0 config init` prints no JSON"
        )
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "config.yml")))


class IdempotencyKeyTests(ResourceCommandTestCase):
    """Write commands send one Idempotency-Key, --idempotency-key or their own."""

    def keys(self) -> list[str | None]:
        return [call["headers"].get("Idempotency-Key") for call in self.node.calls]

    def test_unconfirmed_write_is_sent_again_once_under_its_key(self) -> None:
        """A 503 on an update is sent again once with the same key, and says so."""
        self.node.on("PATCH", "/api/v1/jobs/j-1", (503, UNCONFIRMED), (200, envelope(JOB)))
        self.assertEqual(self.run_cli("jobs", "update", "j-1", "--spec", "@hourly"), 0)
        first, second = self.keys()
        self.assertIsNotNone(first)
        self.assertEqual(first, second)
        self.assertIn(
            f"sending it again once, with the same Idempotency-Key {first}", self.stderr.getvalue()
        )

    def test_given_key_is_sent(self) -> None:
        """--idempotency-key KEY is the key of the write; reads carry none."""
        self.node.on("PATCH", "/api/v1/jobs/j-1", (200, envelope(JOB)))
        self.assertEqual(self.run_cli("jobs", "pause", "j-1", "--idempotency-key", "k-1"), 0)
        self.node.on("GET", "/api/v1/jobs/j-1", (200, envelope(JOB)))
        self.assertEqual(self.run_cli("jobs", "get", "j-1"), 0)
        self.assertEqual(self.keys(), ["k-1", None])

    def test_still_unconfirmed_names_the_flag_and_the_key(self) -> None:
        """
        When the write stays unconfirmed, the line tells the CLI user to run
        the command again with --idempotency-key and the key it used, and
        does not speak of an HTTP header.
        """
        self.node.on("POST", "/api/v1/jobs", (503, UNCONFIRMED))
        self.assertEqual(self.run_cli(*CREATE_JOB), 1)
        keys = set(self.keys())
        self.assertEqual(len(keys), 1)
        (key,) = keys
        line = self.stderr.getvalue().splitlines()[-1]
        self.assertIn(f"run the same command again with --idempotency-key {key} ", line)
        self.assertNotIn("header", line)
        self.assertTrue(line.endswith("(HTTP 503)"), line)

    def test_bad_key_is_named_by_its_flag(self) -> None:
        """The node's refusal of a malformed key is one line naming the flag, exit 2."""
        rule = "1 to 128 characters from letters, digits and . _ : -"
        self.node.on(
            "DELETE",
            "/api/v1/jobs/j-1",
            (400, error(f"Idempotency-Key: {rule}", {"Idempotency-Key": rule})),
        )
        self.assertEqual(self.run_cli("jobs", "delete", "j-1", "--idempotency-key", "no spaces"), 2)
        self.assertEqual(self.one_error_line(), f"scheduler0: --idempotency-key: {rule}")
        self.assertEqual(self.keys(), ["no spaces"])


def _created(call_json: list[dict]) -> list[dict]:
    return [{**job, "uuid": f"u-{job['name']}"} for job in call_json]


class ImportTests(ResourceCommandTestCase):
    """scheduler0 jobs import FILE."""

    def setUp(self) -> None:
        super().setUp()
        self.keys: list[str] = []
        # As a node does: a batch under a key already seen is answered as
        # it was the first time, and creates nothing.
        answered: dict[str, list[dict]] = {}
        self.totals: dict[str, int] = {}

        def create(**call: Any) -> tuple[int, Any]:
            key = call["headers"]["Idempotency-Key"]
            self.keys.append(key)
            if key not in answered:
                answered[key] = _created(call["json"])
                for job in call["json"]:
                    project = job["project_uuid"]
                    self.totals[project] = self.totals.get(project, 0) + 1
            return 201, envelope(answered[key])

        def count(**call: Any) -> tuple[int, Any]:
            total = self.totals.get(call["query"]["project_uuid"], 0)
            return 200, envelope({"items": [], "total": total})

        self.node.handlers[("POST", "/api/v1/jobs")] = create
        self.node.handlers[("GET", "/api/v1/jobs")] = count

    def posts(self) -> list[dict]:
        """The import's requests that create jobs (not those that count them)."""
        return [call for call in self.node.calls if call["method"] == "POST"]

    def csv_file(self, rows: int, name: str = "jobs.csv") -> str:
        lines = ["name,spec,callback_url,data,paused,retry_max"]
        lines += [f'job{i},@every 1m,http://h/cb,"{{""i"": {i}}}",false,2' for i in range(rows)]
        return self.write(name, "\n".join(lines) + "\n")

    def test_csv_in_batches(self) -> None:
        """
        A CSV is typed (data JSON, paused boolean, retry_max integer), given
        the --project, and sent in batches with distinct Idempotency-Keys.
        """
        path = self.csv_file(5)
        self.assertEqual(
            self.run_cli("jobs", "import", path, "--project", "p-1", "--batch-size", "2"),
            0,
            self.stderr.getvalue(),
        )
        bodies = [c["json"] for c in self.posts()]
        self.assertEqual([len(b) for b in bodies], [2, 2, 1])
        self.assertEqual(
            bodies[0][1],
            {
                "name": "job1",
                "spec": "@every 1m",
                "callback_url": "http://h/cb",
                "data": {"i": 1},
                "paused": False,
                "retry_max": 2,
                "project_uuid": "p-1",
            },
        )
        self.assertEqual(len(set(self.keys)), 3)
        self.assertIn("created 5 jobs from jobs.csv", self.stdout.getvalue())

    def test_rerun_says_it_created_nothing(self) -> None:
        """
        Importing the same file again creates nothing and says so (it used
        to say "imported 4 jobs"); a file with one row more creates that one.
        """
        self.csv_file(4)
        args = ("jobs", "import", "jobs.csv", "--project", "p-1", "--batch-size", "2")
        self.assertEqual(self.run_cli(*args), 0, self.stderr.getvalue())
        self.assertTrue(self.stdout.getvalue().startswith("created 4 jobs from jobs.csv in "))
        self.assertEqual(self.run_cli(*args), 0, self.stderr.getvalue())
        self.assertEqual(self.totals, {"p-1": 4})
        self.assertIn(
            "created 0 of 4 jobs; the other 4 were created by an earlier run of this import",
            self.stdout.getvalue(),
        )
        self.csv_file(5)
        self.assertEqual(self.run_cli(*args), 0, self.stderr.getvalue())
        self.assertEqual(self.totals, {"p-1": 5})
        self.assertIn("created 1 of 5 jobs; the other 4 were created", self.stdout.getvalue())

    def test_rerun_sends_the_same_keys(self) -> None:
        """Importing the same file again sends the same key for each batch."""
        path = self.csv_file(3)
        self.run_cli("jobs", "import", path, "--project", "p-1", "--batch-size", "2")
        first = list(self.keys)
        self.run_cli("jobs", "import", path, "--project", "p-1", "--batch-size", "2")
        self.assertEqual(self.keys[2:], first)
        self.run_cli("jobs", "import", path, "--project", "p-2", "--batch-size", "2")
        self.assertNotEqual(self.keys[4:], first)

    def test_json_and_yaml(self) -> None:
        """A .json array, a .json {"jobs": [...]} and a .yaml list import alike; --json: uuids."""
        jobs = [
            {"name": "a", "spec": "@daily", "callback_url": "http://h/cb", "project_uuid": "p"},
            {"name": "b", "spec": "@hourly", "callback_url": "http://h/cb", "data": [1]},
        ]
        self.write("a.json", json.dumps(jobs))
        self.write("b.json", json.dumps({"jobs": jobs}))
        self.write("c.yml", yaml.safe_dump(jobs))
        for name in ("a.json", "b.json", "c.yml"):
            self.node.calls.clear()
            self.assertEqual(
                self.run_cli("jobs", "import", name, "--project", "dflt", "--json"),
                0,
                self.stderr.getvalue(),
            )
            self.assertEqual(json.loads(self.stdout.getvalue()), ["u-a", "u-b"])
            (call,) = self.posts()
            self.assertEqual([j["project_uuid"] for j in call["json"]], ["p", "dflt"])
            self.assertEqual(call["json"][1]["data"], [1])

    def test_listed_jobs_import_as_they_are(self) -> None:
        """The read-only fields of `jobs list --json` output are left out of the import."""
        self.write("listed.json", json.dumps([JOB]))
        self.assertEqual(self.run_cli("jobs", "import", "listed.json"), 0, self.stderr.getvalue())
        sent = self.posts()[0]["json"][0]
        self.assertNotIn("uuid", sent)
        self.assertNotIn("next_run_at", sent)
        self.assertEqual(sent["spec"], "0 3 * * *")

    def test_invalid_row_names_row_and_field_and_creates_nothing(self) -> None:
        """One bad row anywhere: one line naming its row and field, exit 2, no request."""
        lines = ["name,spec,callback_url", "a,@daily,http://h/cb", "b,every day,http://h/cb"]
        self.write("bad.csv", "\n".join(lines) + "\n")
        self.assertEqual(self.run_cli("jobs", "import", "bad.csv", "--project", "p"), 2)
        line = self.one_error_line()
        self.assertIn("bad.csv: row 2 (line 3): spec:", line)
        self.assertTrue(line.endswith("; nothing was imported"), line)
        self.assertEqual(self.node.calls, [])

    def test_every_bad_row_is_named(self) -> None:
        """
        Each bad row is one line naming its row and field, bad CSV cells
        included, then how many problems there were; exit 2, no request.
        """
        lines = [
            "name,spec,callback_url,retry_max",
            "a,@daily,http://h/cb,1",
            "b,every day,http://h/cb,1",
            "c,@daily,ftp://h/cb,1",
            "d,@daily,http://h/cb,many",
        ]
        self.write("bad.csv", "\n".join(lines) + "\n")
        self.assertEqual(self.run_cli("jobs", "import", "bad.csv", "--project", "p"), 2)
        printed = self.stderr.getvalue().splitlines()
        self.assertEqual(len(printed), 4, printed)
        self.assertTrue(printed[0].startswith("scheduler0: bad.csv: row 2 (line 3): spec: "))
        self.assertTrue(printed[1].startswith("scheduler0: bad.csv: row 3 (line 4): callback_url"))
        self.assertTrue(printed[2].startswith("scheduler0: bad.csv: row 4 (line 5): retry_max: "))
        self.assertEqual(printed[3], "scheduler0: bad.csv: 3 problems; nothing was imported")
        self.assertEqual(self.node.calls, [])

    def test_many_bad_rows_are_bounded(self) -> None:
        """Past 20 bad rows the rest are counted, not printed."""
        rows = [f"j{i},every day,http://h/cb" for i in range(25)]
        self.write("bad.csv", "\n".join(["name,spec,callback_url", *rows]) + "\n")
        self.assertEqual(self.run_cli("jobs", "import", "bad.csv", "--project", "p"), 2)
        printed = self.stderr.getvalue().splitlines()
        self.assertEqual(len(printed), 21)
        self.assertIn("row 20 (line 21): spec:", printed[19])
        self.assertEqual(
            printed[20],
            "scheduler0: bad.csv: 25 problems, the first 20 shown; nothing was imported",
        )

    def test_missing_project(self) -> None:
        """A row without project_uuid and no --project is named, with the hint."""
        self.csv_file(1)
        self.assertEqual(self.run_cli("jobs", "import", "jobs.csv"), 2)
        self.assertIn(
            "row 1 (line 2): project_uuid: is required (or pass --project UUID)",
            self.one_error_line(),
        )

    def test_file_problems(self) -> None:
        """Unknown columns, bad cells, bad formats, malformed and missing files exit 2."""
        cases = {
            "a.csv": ("name,colour\nx,red\n", "column 'colour' is not a job field"),
            "b.csv": ("name,paused\nx,maybe\n", "row 1 (line 2): paused: must be true or false"),
            "c.csv": ("name,data\nx,{oops\n", "row 1 (line 2): data: must be JSON text"),
            "d.json": ("[1,", "malformed JSON"),
            "e.yaml": ("- a: [\n", "malformed YAML"),
            "f.json": ('{"a": 1}', "expected a list of jobs"),
            "g.txt": ("", "unknown format '.txt'"),
            "h.json": ("[]", "no jobs in it"),
            "i.json": ("[3]", "row 1: must be a job object"),
        }
        for name, (text, expected) in cases.items():
            self.write(name, text)
            self.assertEqual(self.run_cli("jobs", "import", name, "--project", "p"), 2, name)
            self.assertIn(expected, self.one_error_line(), name)
        self.assertEqual(self.run_cli("jobs", "import", "missing.csv"), 2)
        self.assertIn("cannot read it", self.one_error_line())
        self.assertEqual(self.node.calls, [])

    def test_busy_node_is_retried_with_the_same_key(self) -> None:
        """A 503 and a lost connection are retried after back-off with the batch's key."""
        answers: list[Any] = [(503, error("may still apply")), OSError("reset")]
        original = self.node.handlers[("POST", "/api/v1/jobs")]

        def flaky(**call: Any) -> tuple[int, Any]:
            self.keys.append(call["headers"]["Idempotency-Key"])
            if answers:
                answer = answers.pop(0)
                if isinstance(answer, Exception):
                    raise answer
                return answer
            self.keys.pop()
            return original(**call)

        self.node.handlers[("POST", "/api/v1/jobs")] = flaky
        self.csv_file(2)
        self.assertEqual(
            self.run_cli("jobs", "import", "jobs.csv", "--project", "p"), 0, self.stderr.getvalue()
        )
        self.assertEqual(len(self.slept), 2)
        self.assertEqual(len(set(self.keys)), 1)
        self.assertEqual(len(self.keys), 3)

    def test_too_large_batches_shrink_to_the_node_limit(self) -> None:
        """A 413 naming the node's MaxJobsPerRequest makes the batches that size."""
        original = self.node.handlers[("POST", "/api/v1/jobs")]

        def limited(**call: Any) -> tuple[int, Any]:
            if len(call["json"]) > 2:
                return 413, error(
                    "jobs: 5 jobs in one request; at most 2 are allowed", {"jobs": "at most 2 jobs"}
                )
            return original(**call)

        self.node.handlers[("POST", "/api/v1/jobs")] = limited
        self.csv_file(5)
        self.assertEqual(self.run_cli("jobs", "import", "jobs.csv", "--project", "p"), 0)
        self.assertEqual([len(c["json"]) for c in self.posts()], [5, 2, 2, 1])

    def test_failure_midway_says_what_was_imported(self) -> None:
        """A rejected batch stops the import with how many were imported and how to resume."""
        original = self.node.handlers[("POST", "/api/v1/jobs")]

        def second_fails(**call: Any) -> tuple[int, Any]:
            if call["json"][0]["name"] == "job2":
                return 404, error("jobs[0].project_uuid: no project 'p'")
            return original(**call)

        self.node.handlers[("POST", "/api/v1/jobs")] = second_fails
        self.csv_file(4)
        self.assertEqual(
            self.run_cli("jobs", "import", "jobs.csv", "--project", "p", "--batch-size", "2"), 2
        )
        progress, line = self.stderr.getvalue().splitlines()
        self.assertIn("2/4 jobs", progress)
        self.assertIn("no project 'p' (HTTP 404)", line)
        self.assertIn("2 of 4 jobs were imported", line)
        self.assertIn("Run the same command again", line)

    def test_progress_lines_without_a_terminal(self) -> None:
        """Not on a terminal: one progress line per tenth of the file."""
        self.csv_file(20)
        self.assertEqual(
            self.run_cli("jobs", "import", "jobs.csv", "--project", "p", "--batch-size", "1"), 0
        )
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 10)
        self.assertTrue(lines[-1].startswith("[####################] 20/20 jobs"))

    def test_progress_bar_on_a_terminal(self) -> None:
        """On a terminal the bar is redrawn in place with rate and ETA."""
        progress = jobfile.Progress(100_000, _TTY(), lambda: self.now[0])
        self.now[0] += 4
        progress.update(45_000)
        self.assertEqual(
            progress.stream.getvalue(),
            "\r[#########...........] 45,000/100,000 jobs  11,250/s  ETA 5s\x1b[K",
        )
        progress.update(46_000)  # no time passed: not redrawn
        self.assertEqual(progress.stream.getvalue().count("\r"), 1)
        progress.finish()
        self.assertTrue(progress.stream.getvalue().endswith("\n"))


class RealNodeTests(TestCase):
    """The real CLI, as a process, against a real node."""

    timeout = 90

    async def test_commands_against_a_node(self) -> None:
        """
        create/list/update/pause/resume/run/next/delete work end to end, and
        CSV, YAML and JSON files import (a second import creates nothing).
        """
        workdir = os.path.abspath(self.mktemp())
        node = await prepare_single_node(reactor, workdir)
        self.addCleanup(node.kill)
        await node.start()
        headers = await client_headers(node)
        connection = (
            "--config",
            node.config_path,
            "--api-key",
            headers["x-api-key"],
            "--api-secret",
            headers["x-secret-key"],
        )

        async def scheduler0(*args: str, expect: int = 0) -> str:
            out, err, code = await run_cli(workdir, *args, *connection)
            self.assertEqual(code, expect, f"{args}: {err}")
            return out

        project = json.loads(await scheduler0("projects", "create", "--name", "cli", "--json"))
        self.assertTrue(project["signing_secret"])
        job = json.loads(
            await scheduler0(
                "jobs",
                "create",
                "--project",
                project["uuid"],
                "--name",
                "one",
                "--spec",
                "*/5 * * * *",
                "--callback-url",
                "http://127.0.0.1:9/cb",
                "--json",
            )
        )
        listed = await scheduler0("jobs", "list", "--project", project["uuid"])
        self.assertIn(job["uuid"], listed)
        await scheduler0("jobs", "update", job["uuid"], "--spec", "@daily")
        await scheduler0("jobs", "pause", job["uuid"])
        shown = json.loads(await scheduler0("jobs", "get", job["uuid"], "--json"))
        self.assertTrue(shown["paused"])
        await scheduler0("jobs", "resume", job["uuid"])
        self.assertIn("execution_id:", await scheduler0("jobs", "run", job["uuid"]))
        self.assertEqual(
            len((await scheduler0("jobs", "next", job["uuid"], "-n", "3")).splitlines()), 4
        )
        await scheduler0("jobs", "delete", job["uuid"])
        await scheduler0("jobs", "get", job["uuid"], expect=2)
        await scheduler0("executions", "list", "--project", project["uuid"])

        with open(os.path.join(workdir, "jobs.csv"), "w") as f:
            f.write("name,spec,callback_url,paused\n")
            f.writelines(f"c{i},@every 1h,http://127.0.0.1:9/cb,true\n" for i in range(30))
        jobs = [
            {
                "name": f"y{i}",
                "spec": "@hourly",
                "callback_url": "http://127.0.0.1:9/cb",
                "project_uuid": project["uuid"],
            }
            for i in range(3)
        ]
        with open(os.path.join(workdir, "jobs.yaml"), "w") as f:
            yaml.safe_dump(jobs, f)
        with open(os.path.join(workdir, "jobs.json"), "w") as f:
            json.dump({"jobs": [{**j, "name": "j" + j["name"]} for j in jobs]}, f)
        said = [
            await scheduler0(
                "jobs", "import", name, "--project", project["uuid"], "--batch-size", "7"
            )
            for name in ("jobs.csv", "jobs.yaml", "jobs.json", "jobs.csv")
        ]
        self.assertTrue(said[0].startswith("created 30 jobs from jobs.csv"), said[0])
        self.assertTrue(said[3].startswith("created 0 of 30 jobs; the other 30 were"), said[3])
        every = json.loads(
            await scheduler0("jobs", "list", "--project", project["uuid"], "--limit", "0", "--json")
        )
        self.assertEqual(len(every), 36)
        out = await scheduler0("projects", "delete", project["uuid"], expect=2)
        self.assertEqual(out, "")
        await scheduler0("projects", "delete", project["uuid"], "--cascade")
