"""
The CLI commands of issue 19 against a fake node: pausing and resuming a
project, creating a scoped credential, and reading the audit log; a
refusal of the node is one line and a non-zero exit.
"""

from __future__ import annotations

import json

from tests.support.cli import PROJECT, ResourceCommandTestCase, envelope, error

CREDENTIAL = {
    "uuid": "c-1",
    "api_key": "k",
    "api_secret": "s",
    "created_at": "2026-01-01T00:00:00.000Z",
    "projects": ["p-1"],
    "role": "read",
}
RECORD = {
    "seq": 7,
    "at": "2026-01-01T00:00:00.000Z",
    "actor": "admin",
    "actor_key": None,
    "via": 2,
    "method": "PATCH",
    "route": "/projects/<uuid>",
    "op": "update_project",
    "object_type": "project",
    "object_uuid": "p-1",
    "object_uuids": ["p-1"],
    "object_count": 1,
    "outcome": "applied",
    "code": None,
}


class AccessCommandTests(ResourceCommandTestCase):
    def test_pause_and_resume_a_project(self) -> None:
        """projects pause/resume send paused true/false for the project."""
        self.node.on("PATCH", "/api/v1/projects/p-1", (200, envelope({**PROJECT, "paused": True})))
        self.assertEqual(self.run_cli("projects", "pause", "p-1"), 0)
        self.assertEqual(self.run_cli("projects", "resume", "p-1"), 0)
        self.assertEqual(
            [c["json"] for c in self.node.calls], [{"paused": True}, {"paused": False}]
        )
        self.assertIn("paused", self.stdout.getvalue())

    def test_a_project_may_be_created_paused(self) -> None:
        """projects create --paused sends paused true."""
        self.node.on("POST", "/api/v1/projects", (201, envelope(PROJECT)))
        self.assertEqual(self.run_cli("projects", "create", "--name", "x", "--paused"), 0)
        self.assertIs(self.node.calls[0]["json"]["paused"], True)

    def test_create_a_scoped_credential(self) -> None:
        """credentials create --project (repeated) --role sends the scope."""
        self.node.on("POST", "/api/v1/credentials", (201, envelope(CREDENTIAL)))
        argv = ["credentials", "create", "--project", "p-1", "--project", "p-2", "--role", "read"]
        self.assertEqual(self.run_cli(*argv, "--json"), 0)
        self.assertEqual(self.node.calls[0]["json"], {"projects": ["p-1", "p-2"], "role": "read"})
        self.assertEqual(json.loads(self.stdout.getvalue())["role"], "read")
        self.assertEqual(self.run_cli("credentials", "create"), 0)
        self.assertEqual(self.node.calls[1]["json"], {})

    def test_a_role_outside_the_choices_is_a_usage_error(self) -> None:
        """--role takes read or write only; nothing is sent."""
        self.assertEqual(self.run_cli("credentials", "create", "--role", "admin"), 2)
        self.assertEqual(self.node.calls, [])

    def test_audit_filters_go_in_the_query(self) -> None:
        """audit sends its filters and prints a table of the records."""
        page = {"items": [RECORD], "total": 1, "limit": 50, "offset": 0, "next_cursor": None}
        self.node.on("GET", "/api/v1/audit", (200, envelope(page)))
        code = self.run_cli(
            "audit", "--actor", "admin", "--via", "2", "--since", "2026-01-01T00:00:00Z"
        )
        self.assertEqual(code, 0, self.stderr.getvalue())
        query = self.node.calls[0]["query"]
        self.assertEqual(
            (query["actor"], query["via"], query["since"]), ("admin", "2", "2026-01-01T00:00:00Z")
        )
        lines = self.stdout.getvalue().splitlines()
        self.assertTrue(lines[0].startswith("SEQ"))
        self.assertIn("update_project", lines[1])

    def test_a_scope_refusal_is_one_line(self) -> None:
        """A 403 of the node is its message on one line, exit 1."""
        message = "this credential may read projects p-1 (role read); this call writes (PATCH)"
        self.node.on("PATCH", "/api/v1/projects/p-1", (403, error(message, {"role": message})))
        self.assertEqual(self.run_cli("projects", "pause", "p-1"), 1)
        self.assertIn("role read", self.one_error_line())
