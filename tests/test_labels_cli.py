"""
Labels and selectors on the command line: C{--label} on jobs create and
update, C{--selector} on jobs list and on jobs pause/resume/delete (which
repeat while the node says more remain), and labels in jobs import files.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.cli import ResourceCommandTestCase, envelope

JOB = {"uuid": "j-1", "name": "n", "spec": "@daily", "labels": {"team": "a"}}


class LabelCommandTests(ResourceCommandTestCase):
    def test_create_and_update_labels(self) -> None:
        """--label k=v (repeatable) becomes the job's labels; a bad one is a usage error."""
        self.node.on("POST", "/api/v1/jobs", (201, envelope(JOB)))
        self.node.on("PATCH", "/api/v1/jobs/j-1", (200, envelope(JOB)))
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
            "--label",
            "team=billing",
            "--label",
            "example.com/tier=",
        )
        self.assertEqual(code, 0, self.stderr.getvalue())
        self.assertEqual(
            self.node.calls[0]["json"]["labels"], {"team": "billing", "example.com/tier": ""}
        )
        self.assertEqual(self.run_cli("jobs", "update", "j-1", "--label", "team=ops"), 0)
        self.assertEqual(self.node.calls[1]["json"], {"labels": {"team": "ops"}})
        self.assertEqual(self.run_cli("jobs", "update", "j-1", "--label", "team"), 2)
        self.assertIn("--label", self.one_error_line())
        self.assertEqual(len(self.node.calls), 2)

    def test_list_by_selector(self) -> None:
        """jobs list --selector passes the selector to the node."""
        self.node.on("GET", "/api/v1/jobs", (200, envelope({"items": [JOB], "total": 1})))
        self.assertEqual(self.run_cli("jobs", "list", "--selector", "team=a,!legacy"), 0)
        self.assertEqual(self.node.calls[0]["query"]["selector"], "team=a,!legacy")

    def test_bulk_by_selector_repeats_while_more(self) -> None:
        """
        jobs pause --selector sends the bulk request again while more remain,
        each under its own Idempotency-Key, and says how many it changed.
        """
        first = {"action": "pause", "selector": "team=a", "count": 2, "uuids": ["a", "b"]}
        last = {**first, "count": 1, "uuids": ["c"], "more": False}
        self.node.on("POST", "/api/v1/jobs/bulk/pause", (200, envelope({**first, "more": True})))
        self.node.handlers[("POST", "/api/v1/jobs/bulk/pause")] = _answers(
            [(200, envelope({**first, "more": True})), (200, envelope(last))]
        )
        code = self.run_cli("jobs", "pause", "--selector", "team=a", "--project", "p")
        self.assertEqual(code, 0, self.stderr.getvalue())
        self.assertEqual(self.stdout.getvalue(), "paused 3 jobs selected by team=a\n")
        self.assertEqual(
            [c["query"] for c in self.node.calls], [{"selector": "team=a", "project_uuid": "p"}] * 2
        )
        keys = [c["headers"]["Idempotency-Key"] for c in self.node.calls]
        self.assertEqual(len(set(keys)), 2)
        self.node.on(
            "POST",
            "/api/v1/jobs/bulk/delete",
            (200, envelope({**last, "action": "delete", "uuids": ["x"]})),
        )
        self.assertEqual(self.run_cli("jobs", "delete", "--selector", "team=a", "--json"), 0)
        self.assertEqual(json.loads(self.stdout.getvalue()), {"count": 1, "uuids": ["x"]})
        self.node.on(
            "POST", "/api/v1/jobs/bulk/resume", (200, envelope({**last, "action": "resume"}))
        )
        self.assertEqual(self.run_cli("jobs", "resume", "--selector", "team=a"), 0)

    def test_bulk_usage_errors(self) -> None:
        """A uuid and a selector, neither, or --project without --selector: exit 2, no request."""
        for argv in (
            ("jobs", "pause"),
            ("jobs", "resume", "j-1", "--selector", "a"),
            ("jobs", "delete", "j-1", "--project", "p"),
        ):
            self.assertEqual(self.run_cli(*argv), 2, argv)
            self.one_error_line()
        self.assertEqual(self.node.calls, [])


def _answers(queue: list) -> Any:
    def handler(**_call: Any) -> tuple[int, Any]:
        return queue.pop(0)

    return handler


class LabelImportTests(ResourceCommandTestCase):
    def setUp(self) -> None:
        super().setUp()

        def create(**call: Any) -> tuple[int, Any]:
            made = [{**job, "uuid": f"u-{job['name']}"} for job in call["json"]]
            return 201, envelope(made)

        def count(**call: Any) -> tuple[int, Any]:
            # The import counts the project's jobs before and after.
            return 200, envelope({"items": [], "total": 0})

        self.node.handlers[("POST", "/api/v1/jobs")] = create
        self.node.handlers[("GET", "/api/v1/jobs")] = count

    def posts(self) -> list[dict]:
        """The import's requests that create jobs (not those that count them)."""
        return [call for call in self.node.calls if call["method"] == "POST"]

    def test_csv_labels(self) -> None:
        """A CSV labels cell is key=value pairs or a JSON object."""
        path = self.write(
            "jobs.csv",
            "name,spec,callback_url,labels\n"
            'a,@daily,http://h/cb,"team=billing,env=prod"\n'
            'b,@daily,http://h/cb,"{""team"": ""ops""}"\n'
            "c,@daily,http://h/cb,\n",
        )
        self.assertEqual(
            self.run_cli("jobs", "import", path, "--project", "p"), 0, self.stderr.getvalue()
        )
        sent = self.posts()[0]["json"]
        self.assertEqual(
            [job.get("labels") for job in sent],
            [{"team": "billing", "env": "prod"}, {"team": "ops"}, None],
        )

    def test_yaml_labels_and_bad_ones(self) -> None:
        """Labels in a YAML file import; a bad one names its row and label, and nothing is sent."""
        self.write(
            "good.yaml",
            "- {name: a, spec: '@daily', callback_url: 'http://h/cb', labels: {team: x}}\n",
        )
        self.assertEqual(self.run_cli("jobs", "import", "good.yaml", "--project", "p"), 0)
        self.assertEqual(self.posts()[0]["json"][0]["labels"], {"team": "x"})
        self.node.calls.clear()
        self.write(
            "bad.yaml",
            "- {name: a, spec: '@daily', callback_url: 'http://h/cb', labels: {team: 3}}\n",
        )
        self.assertEqual(self.run_cli("jobs", "import", "bad.yaml", "--project", "p"), 2)
        self.assertIn("row 1: labels.team:", self.one_error_line())
        self.write("bad.csv", "name,spec,callback_url,labels\na,@daily,http://h/cb,team\n")
        self.assertEqual(self.run_cli("jobs", "import", "bad.csv", "--project", "p"), 2)
        self.assertIn("labels:", self.one_error_line())
        self.assertEqual(self.node.calls, [])


class BulkLoopTests(ResourceCommandTestCase):
    def test_an_answer_seen_before_ends_the_rounds(self) -> None:
        """
        A round whose jobs were all changed before (an answer replayed under
        a key) ends the command even when it says more, instead of looping.
        """
        same = {"action": "pause", "selector": "a", "count": 1, "uuids": ["x"], "more": True}
        self.node.on("POST", "/api/v1/jobs/bulk/pause", (200, envelope(same)))
        self.assertEqual(self.run_cli("jobs", "pause", "--selector", "a"), 0)
        self.assertEqual(len(self.node.calls), 2)
        self.assertEqual(self.stdout.getvalue(), "paused 1 job selected by a\n")
