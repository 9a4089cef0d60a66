"""
The resource commands of the CLI in memory: a fake node answering the
command's HTTP calls, the bodies it answers with, and a test case that runs
a command against it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.cli import main as cli
from scheduler0.cli import resources

ENDPOINT = "http://node.test:9091"
PROJECT = {
    "uuid": "p-1",
    "name": "demo",
    "description": "d",
    "created_at": "2026-01-01T00:00:00.000Z",
}
JOB = {
    "uuid": "j-1",
    "project_uuid": "p-1",
    "name": "nightly",
    "spec": "0 3 * * *",
    "callback_url": "http://h/cb",
    "timezone": "UTC",
    "paused": False,
    "next_run_at": "2026-01-02T03:00:00.000Z",
    "last_status": "succeeded",
}


def envelope(data: Any) -> dict:
    return {"success": True, "data": data}


def error(message: str, fields: dict | None = None) -> dict:
    return {
        "success": False,
        "data": None,
        "error": {"code": "x", "message": message, "fields": fields or {}},
    }


class FakeNode:
    """
    The command's injected HTTP function: answers by (method, path) from
    handlers or a script, and records every request.
    """

    def __init__(self) -> None:
        self.handlers: dict[tuple[str, str], Callable[..., tuple[int, Any]]] = {}
        self.calls: list[dict[str, Any]] = []

    def on(self, method: str, path: str, *answers: Any) -> None:
        """Answer C{method path} with these (status, body) pairs in turn (the last repeats)."""
        queue = list(answers)

        def handler(**_request: Any) -> tuple[int, Any]:
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            if isinstance(answer, Exception):
                raise answer
            return answer

        self.handlers[(method, path)] = handler

    def __call__(
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
        call = {
            "method": method,
            "url": url,
            "path": parts.path,
            "query": dict(parse_qsl(parts.query)),
            "json": json,
            "headers": dict(headers or {}),
            "auth": auth,
        }
        self.calls.append(call)
        handler = self.handlers.get((method, parts.path))
        if handler is None:
            raise AssertionError(f"unexpected {method} {url}")
        return handler(**call)


class ResourceCommandTestCase(SynchronousTestCase):
    """Runs a command in a fresh directory against a L{FakeNode}."""

    def setUp(self) -> None:
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)
        self.environ = {
            "SCHEDULER0_ENDPOINT": ENDPOINT,
            "SCHEDULER0_API_KEY": "key",
            "SCHEDULER0_API_SECRET": "secret",
        }
        self.node = FakeNode()
        self.slept: list[float] = []
        self.now = [100.0]
        self.patch(resources, "sleep", self.slept.append)
        self.patch(resources, "monotonic", lambda: self.now[0])

    def run_cli(self, *argv: str, stderr: io.StringIO | None = None) -> int:
        self.stdout = io.StringIO()
        self.stderr = stderr if stderr is not None else io.StringIO()
        return cli.main(
            list(argv),
            stdin=io.StringIO(""),
            stdout=self.stdout,
            stderr=self.stderr,
            environ=self.environ,
            cwd=self.cwd,
            http=self.node,
        )

    def one_error_line(self) -> str:
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, self.stderr.getvalue())
        self.assertNotIn("Traceback", lines[0])
        return lines[0]

    def write(self, name: str, text: str) -> str:
        with open(os.path.join(self.cwd, name), "w") as f:
            f.write(text)
        return name
