"""
End-to-end scenarios of the HTTP API over the real store (StateStore,
CommandLog, LocalProposer, ExecutionStore on the synchronous SQLite pool):
what a request leaves in the tables, read back through the store itself.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from tests.support.api import Harness, fired


class RealStoreAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()

    def test_seed_flow_and_read_back(self) -> None:
        """The seed client's two calls create rows the API reads back through SQL."""
        status, _, body = self.h.request(
            "POST", "/projects", {"name": "sample project", "description": "my calendar project"}
        )
        self.assertEqual(status, 201, body)
        project_uuid = body["data"]["uuid"]
        status, _, body = self.h.request(
            "POST",
            "/jobs",
            {
                "name": "sample project",
                "spec": "@every 1m",
                "project_uuid": project_uuid,
                "callback_url": "http://localhost:3000/callback",
            },
        )
        self.assertEqual(status, 201, body)
        job = body["data"]
        stored = fired(self.h.state.get_job(job["uuid"]))
        self.assertEqual(stored["project_uuid"], project_uuid)
        self.assertEqual(stored["anchor_at"], "2026-01-02T03:04:05.000Z")
        got = self.h.request("GET", f"/api/v1/jobs/{job['uuid']}")[2]["data"]
        for key in ("uuid", "name", "spec", "callback_url", "data", "paused", "retry_max"):
            self.assertEqual(got[key], job[key], key)

    def test_rejected_requests_change_nothing(self) -> None:
        """Bad requests of every kind leave the stored state exactly as it was."""
        project = self.h.project("a")
        job = self.h.job(project["uuid"])
        before = self.h.dump()
        good = {
            "project_uuid": project["uuid"],
            "name": "j",
            "spec": "@every 1m",
            "callback_url": "http://cb.test/",
        }
        bad_requests = [
            ("POST", "/projects", {"name": "a"}, 409),
            ("POST", "/projects", {"name": ""}, 400),
            ("POST", "/jobs", [good, dict(good, spec="nope")], 400),
            ("POST", "/jobs", [good, dict(good, project_uuid="missing")], 404),
            ("POST", "/jobs", dict(good, uuid="x"), 400),
            ("PATCH", f"/jobs/{job['uuid']}", {"timezone": "Mars/Base"}, 400),
            ("PUT", f"/jobs/{job['uuid']}", {"callback_url": "gopher://x"}, 400),
            ("DELETE", f"/projects/{project['uuid']}", None, 409),
            ("DELETE", "/jobs/missing", None, 404),
        ]
        for method, path, payload, status in bad_requests:
            if payload is None:
                response = self.h.request(method, path)
            else:
                response = self.h.request(method, path, payload)
            self.assertEqual(response[0], status, (method, path, response[2]))
            self.assertEqual(self.h.dump(), before, (method, path))

    def test_job_lifecycle(self) -> None:
        """Create, patch (re-anchoring on a spec change), list and delete go through SQL."""
        project = self.h.project()
        created = self.h.request(
            "POST",
            "/jobs",
            [
                {
                    "project_uuid": project["uuid"],
                    "name": f"j{i}",
                    "spec": "*/5 * * * *",
                    "callback_url": "http://cb.test/",
                    "data": {"i": i},
                }
                for i in range(3)
            ],
        )
        self.assertEqual(created[0], 201, created[2])
        jobs = created[2]["data"]
        self.h.clock.advance(61.5)
        patched = self.h.request("PATCH", f"/jobs/{jobs[0]['uuid']}", {"spec": "@every 90s"})
        self.assertEqual(patched[0], 200, patched[2])
        stored = fired(self.h.state.get_job(jobs[0]["uuid"]))
        self.assertEqual(
            (stored["spec"], stored["anchor_at"], stored["data"]),
            ("@every 90s", "2026-01-02T03:05:07.000Z", {"i": 0}),
        )
        listed = self.h.request("GET", f"/jobs?project_uuid={project['uuid']}&limit=2")[2]["data"]
        self.assertEqual((len(listed["items"]), listed["total"]), (2, 3))
        self.assertEqual(self.h.request("DELETE", f"/jobs/{jobs[1]['uuid']}")[0], 200)
        self.assertIsNone(fired(self.h.state.get_job(jobs[1]["uuid"])))
        deleted = self.h.request("DELETE", f"/projects/{project['uuid']}?cascade=true")
        self.assertEqual(deleted[0], 200, deleted[2])
        self.assertEqual(fired(self.h.state.count_jobs(project["uuid"])), 0)

    def test_credentials_through_the_store(self) -> None:
        """
        A credential created by the API authenticates, is listed without its
        hash, and archiving it locks it out.
        """
        created = self.h.request("POST", "/credentials", auth="admin")[2]["data"]
        headers = {"x-api-key": created["api_key"], "x-secret-key": created["api_secret"]}
        self.assertEqual(self.h.request("GET", "/projects", auth="none", headers=headers)[0], 200)
        listed = self.h.request("GET", "/credentials", auth="admin")[2]["data"]
        self.assertEqual(listed["total"], 2)
        self.assertNotIn("api_secret_hash", json.dumps(listed))
        self.assertEqual(
            self.h.request("DELETE", f"/credentials/{created['uuid']}", auth="admin")[0], 200
        )
        self.assertEqual(self.h.request("GET", "/projects", auth="none", headers=headers)[0], 401)

    def test_executions_from_the_log(self) -> None:
        """/executions and job fields read the real execution log."""
        project = self.h.project()
        job = self.h.job(project["uuid"])
        for minute, state in ((5, "failed"), (6, "succeeded")):
            self.h.executions.inner.record(
                {
                    "execution_id": f"e{minute}",
                    "job_uuid": job["uuid"],
                    "project_uuid": project["uuid"],
                    "scheduled_at": f"2026-01-02T03:0{minute}:00.000Z",
                    "state": state,
                    "attempts": 1,
                    "node_id": 1,
                    "started_at": f"2026-01-02T03:0{minute}:00.005Z",
                    "finished_at": f"2026-01-02T03:0{minute}:00.050Z",
                    "status_code": 200 if state == "succeeded" else 500,
                    "error": None,
                    "skip_reason": None,
                }
            )
        self.h.clock.advance(0)
        page = self.h.request("GET", f"/jobs/{job['uuid']}/executions")[2]["data"]
        self.assertEqual([e["execution_id"] for e in page["items"]], ["e6", "e5"])
        page = self.h.request("GET", "/executions?state=failed")[2]["data"]
        self.assertEqual([e["execution_id"] for e in page["items"]], ["e5"])
        got = self.h.request("GET", f"/jobs/{job['uuid']}")[2]["data"]
        self.assertEqual(
            (got["last_status"], got["last_run_at"]), ("succeeded", "2026-01-02T03:06:00.005Z")
        )
