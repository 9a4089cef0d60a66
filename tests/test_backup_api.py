"""
C{GET /backup} in memory: admin only, a file (not the envelope) consistent at
the applied index it names, made after the read barrier, one at a time, and
declared as a file in the OpenAPI document.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.api.openapi import build_openapi
from scheduler0.store.backup import Backups, read_header, restore_backup
from tests.support.api import Admin, Harness, fired

NOW = "2026-01-02T03:04:05.678Z"


class BackupRouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.scratch = os.path.abspath(self.mktemp())
        os.makedirs(self.scratch)
        self.barriers = 0

        def barrier() -> Deferred:
            self.barriers += 1
            return succeed(None)

        self.harness = Harness(read_barrier=barrier)
        self.backups = Backups(
            self.harness.state, lambda fn, *args: succeed(fn(*args)), self.scratch, lambda: NOW
        )
        self.harness.api.backup_routes.backups = self.backups

    def download(self, path: str = "/backup", auth: str = "admin") -> tuple[int, dict, Any]:
        return self.harness.request("GET", path, auth=auth)

    def test_an_admin_gets_a_file_consistent_at_the_applied_index(self) -> None:
        """
        The answer is the backup file itself: its header names the applied
        index when it was asked for (after the read barrier), and it restores
        to the same jobs.
        """
        project = self.harness.project()
        jobs = [self.harness.job(project["uuid"], name=f"j{n}") for n in range(3)]
        applied = fired(self.harness.state.applied_index())
        before = self.barriers
        status, headers, body = self.download()
        self.assertEqual(status, 200, body)
        self.assertEqual(self.barriers, before + 1)
        self.assertEqual(headers["content-type"], "application/octet-stream")
        self.assertIsInstance(body, bytes)
        header = read_header(io.BytesIO(body), "answer")
        self.assertEqual((header["index"], header["jobs"], header["projects"]), (applied, 3, 1))
        self.assertEqual(json.loads(headers["x-scheduler0-backup"]), header)
        # Sent and removed from the data directory.
        self.assertEqual(os.listdir(self.scratch), [])
        path = os.path.join(self.scratch, "backup.s0")
        with open(path, "wb") as f:
            f.write(body)
        restore_backup(path, os.path.join(self.scratch, "data"), Admin().secret_key)
        self.assertEqual(os.listdir(os.path.join(self.scratch, "data")), ["state.db"])
        restored = sorted(self.restored_jobs(os.path.join(self.scratch, "data", "state.db")))
        self.assertEqual(restored, sorted(job["uuid"] for job in jobs))

    def restored_jobs(self, path: str) -> list[str]:
        connection = sqlite3.connect(path)
        try:
            return [row[0] for row in connection.execute("SELECT uuid FROM jobs")]
        finally:
            connection.close()

    def test_stale_skips_the_read_barrier(self) -> None:
        """With consistency=stale the copy is of this node's state, without a barrier."""
        before = self.barriers
        status, _, _ = self.download("/backup?consistency=stale")
        self.assertEqual(status, 200)
        self.assertEqual(self.barriers, before)

    def test_a_client_credential_gets_401(self) -> None:
        """A client key on this admin route answers 401 as the other admin routes do."""
        status, headers, body = self.download(auth="client")
        self.assertEqual(status, 401, body)
        self.assertIn("basic", headers.get("www-authenticate", "").lower())
        self.assertFalse(body["success"])
        self.assertEqual(os.listdir(self.scratch), [])

    def test_no_credentials_get_401(self) -> None:
        status, _, body = self.download(auth="none")
        self.assertEqual(status, 401, body)

    def test_one_backup_at_a_time(self) -> None:
        """While a backup is made, another request answers 503 with Retry-After."""
        # Held here: a coroutine waiting on an unreferenced Deferred would be
        # collected (ending the backup) before the request is made.
        blocked: Deferred = Deferred()
        self.backups.run_blocking = lambda fn, *args: blocked
        making = self.backups.make()
        self.assertTrue(self.backups.busy)
        status, headers, body = self.download()
        self.assertEqual(status, 503, body)
        self.assertEqual(body["error"]["code"], "backup_in_progress")
        self.assertIn("retry-after", headers)
        self.assertNoResult(making)
        self.assertTrue(self.backups.busy)

    def test_a_node_without_backups_answers_404(self) -> None:
        self.harness.api.backup_routes.backups = None
        status, _, body = self.download()
        self.assertEqual(status, 404, body)

    def test_the_document_declares_a_file(self) -> None:
        """The OpenAPI document declares the 200 as application/octet-stream, admin only."""
        operation = build_openapi()["paths"]["/backup"]["get"]
        self.assertEqual(
            list(operation["responses"]["200"]["content"]), ["application/octet-stream"]
        )
        self.assertEqual(operation["security"], [{"adminBasic": []}])
