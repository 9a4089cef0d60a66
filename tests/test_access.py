"""
Tests for issue 19 in the API (the real API over the real store, in
memory): project pause through the API, scoped credentials checked on every
client route of the table, and the audit log.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.api.routes import CLIENT, ROUTES, Route
from scheduler0.api.scope import COMPUTES, LISTING, NO_PROJECT, ROUTE_SCOPES
from scheduler0.store.audit import audit_stamp
from scheduler0.store.commands import Command
from tests.support.api import Defaults, Harness, fired


def set_entry_version(h: Harness, version: int) -> None:
    """Make the harness's cluster write C{version} (as one an older release left)."""

    def write(txn: Any) -> None:
        txn.execute("UPDATE meta SET value = ? WHERE key = 'entry_version'", (version,))

    fired(h.state.pool.runInteraction(write))


class Scoped:
    """A client credential with a scope, made through the admin route."""

    def __init__(self, h: Harness, projects: list[str] | None, role: str | None) -> None:
        body: dict[str, Any] = {}
        if projects is not None:
            body["projects"] = projects
        if role is not None:
            body["role"] = role
        status, _, answer = h.request("POST", "/credentials", body, auth="admin")
        assert status == 201, answer
        self.h = h
        self.created = answer["data"]
        self.headers = {
            "x-api-key": self.created["api_key"],
            "x-secret-key": self.created["api_secret"],
        }

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict, Any]:
        if body is None:
            return self.h.request(method, path, auth="none", headers=self.headers)
        return self.h.request(method, path, body, auth="none", headers=self.headers)


class ProjectPauseAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()

    def test_pause_and_resume_a_project(self) -> None:
        """
        PATCH paused pauses a project (a version-2 command), every read shows
        it, and its jobs keep their own paused flag.
        """
        project = self.h.project("a")
        self.assertIs(project["paused"], False)
        job = self.h.job(project["uuid"], paused=True)
        status, _, body = self.h.request("PATCH", f"/projects/{project['uuid']}", {"paused": True})
        self.assertEqual(status, 200, body)
        self.assertIs(body["data"]["paused"], True)
        command = self.h.proposer.proposed[-1]
        self.assertEqual((command.op, command.version), ("update_project", 2))
        self.assertEqual(command.args["changes"], {"paused": True})
        got = self.h.request("GET", f"/projects/{project['uuid']}")[2]["data"]
        self.assertIs(got["paused"], True)
        listed = self.h.request("GET", "/projects")[2]["data"]["items"]
        self.assertEqual([p["paused"] for p in listed], [True])
        status, _, body = self.h.request("PUT", f"/projects/{project['uuid']}", {"paused": False})
        self.assertIs(body["data"]["paused"], False)
        self.assertIs(self.h.stored_job(job["uuid"])["paused"], True)

    def test_a_project_may_be_created_paused(self) -> None:
        """POST /projects takes paused; the command carries it."""
        status, _, body = self.h.request("POST", "/projects", {"name": "a", "paused": True})
        self.assertEqual(status, 201, body)
        self.assertIs(body["data"]["paused"], True)
        self.assertIs(self.h.stored_project(body["data"]["uuid"])["paused"], True)

    def test_paused_must_be_a_boolean(self) -> None:
        """A paused that is not true or false is a 400 naming it; nothing is stored."""
        project = self.h.project("a")
        before = self.h.dump()
        status, _, body = self.h.request("PATCH", f"/projects/{project['uuid']}", {"paused": 1})
        self.assertEqual(status, 400, body)
        self.assertIn("paused", body["error"]["fields"])
        self.assertEqual(self.h.dump(), before)

    def test_pausing_needs_entry_version_2(self) -> None:
        """
        While the cluster writes entry version 1, pausing answers 409
        entry_version_too_low and changes nothing; creating a project
        leaves paused out of the command (an older release reads it).
        """
        project = self.h.project("a")
        set_entry_version(self.h, 1)
        before = self.h.dump()
        status, _, body = self.h.request("PATCH", f"/projects/{project['uuid']}", {"paused": True})
        self.assertEqual((status, body["error"]["code"]), (409, "entry_version_too_low"))
        self.assertEqual(self.h.dump(), before)
        status, _, body = self.h.request("POST", "/projects", {"name": "b"})
        self.assertEqual(status, 201, body)
        command = self.h.proposer.proposed[-1]
        self.assertNotIn("paused", command.args["project"])
        self.assertEqual(command.version, 1)
        self.assertIsNone(command.audit)


class ScopeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.a = self.h.project("a")["uuid"]
        self.b = self.h.project("b")["uuid"]
        self.job_a = self.h.job(self.a)["uuid"]
        self.job_b = self.h.job(self.b)["uuid"]

    def call(self, who: Scoped, route: Route, job: str, project: str) -> tuple[int, Any]:
        """Call C{route} on the objects of one project: its job or itself."""
        path = route.path.replace("<uuid>", job if "/jobs/" in route.path else project)
        body: Any = None
        if route.handler == "create_jobs":
            body = {
                "project_uuid": project,
                "name": "n",
                "spec": "@every 1m",
                "callback_url": "http://cb.test/x",
            }
        elif route.handler in ("update_job", "update_project"):
            body = {"name": "renamed"}
        elif route.handler == "create_project":
            body = {"name": f"new-{len(self.h.proposer.proposed)}"}
        elif route.handler == "preview_schedule":
            body = {"spec": "@every 1m", "timezone": "UTC"}
        status, _, answer = who.request(route.method, "/api/v1" + path, body)
        return status, answer

    def test_every_client_route_says_how_its_scope_is_checked(self) -> None:
        """The scope table names every client route, so none escapes the check."""
        handlers = {route.handler for route in ROUTES if route.auth == CLIENT}
        self.assertEqual(handlers, set(ROUTE_SCOPES))

    def test_a_read_credential_of_one_project_is_refused_elsewhere(self) -> None:
        """
        On every client route, a credential that may read project A is
        refused 403 (code forbidden, naming its scope) for every write, and
        for every read of project B; listings answer only A's.
        """
        reader = Scoped(self.h, [self.a], "read")
        client_routes = [r for r in ROUTES if r.auth == CLIENT]
        before = self.h.dump()
        for route in client_routes:
            kind = ROUTE_SCOPES[route.handler]
            status, answer = self.call(reader, route, self.job_b, self.b)
            where = f"{route.method} {route.path}: {answer}"
            if (route.method == "GET" and kind in (NO_PROJECT, LISTING)) or kind == COMPUTES:
                # A route that stores nothing (the schedule preview is a
                # POST that only computes) is open to a read credential.
                self.assertEqual(status, 200, where)
                continue
            self.assertEqual(status, 403, where)
            error = answer["error"]
            self.assertEqual(error["code"], "forbidden", where)
            self.assertIn(
                f"this credential may read projects {self.a} (role read)", error["message"]
            )
            self.assertTrue(error["fields"], where)
        self.assertEqual(self.h.dump(), before)

    def test_a_read_credential_reads_its_own_project(self) -> None:
        """The same credential reads project A and its job; writes still answer 403."""
        reader = Scoped(self.h, [self.a], "read")
        for route in ROUTES:
            if route.auth != CLIENT or route.method != "GET":
                continue
            if ROUTE_SCOPES[route.handler] == "all_projects":
                continue
            status, answer = self.call(reader, route, self.job_a, self.a)
            self.assertEqual(status, 200, f"{route.method} {route.path}: {answer}")
        status, _, body = reader.request("PATCH", f"/jobs/{self.job_a}", {"name": "x"})
        self.assertEqual((status, body["error"]["code"]), (403, "forbidden"))
        self.assertIn("this call writes", body["error"]["message"])

    def test_a_write_credential_of_one_project_writes_there_only(self) -> None:
        """A write credential limited to A changes A's jobs; B's and new projects answer 403."""
        writer = Scoped(self.h, [self.a], None)
        status, _, body = writer.request("PATCH", f"/jobs/{self.job_a}", {"name": "x"})
        self.assertEqual(status, 200, body)
        status, _, body = writer.request("PATCH", f"/jobs/{self.job_b}", {"name": "x"})
        self.assertEqual(status, 403, body)
        self.assertIn(f"this call writes project {self.b}", body["error"]["message"])
        status, _, body = writer.request("PATCH", f"/jobs/{self.job_a}", {"project_uuid": self.b})
        self.assertEqual((status, body["error"]["fields"].keys()), (403, {"project_uuid"}))
        status, _, body = writer.request("POST", "/projects", {"name": "c"})
        self.assertEqual(status, 403, body)
        self.assertIn("every project", body["error"]["message"])

    def test_bulk_actions_by_selector_stay_in_the_scope(self) -> None:
        """
        A write credential limited to A may pause by selector in A (naming
        it); naming B, or no project (every project), answers 403 and
        changes nothing.
        """
        writer = Scoped(self.h, [self.a], None)
        before = self.h.dump()
        status, _, body = writer.request("POST", "/jobs/bulk/pause?selector=!x")
        self.assertEqual(status, 403, body)
        self.assertIn("every project", body["error"]["message"])
        status, _, body = writer.request(
            "POST", f"/jobs/bulk/pause?selector=!x&project_uuid={self.b}"
        )
        self.assertEqual(status, 403, body)
        self.assertIn(f"this call writes project {self.b}", body["error"]["message"])
        self.assertEqual(self.h.dump(), before)
        status, _, body = writer.request(
            "POST", f"/jobs/bulk/pause?selector=!x&project_uuid={self.a}"
        )
        self.assertEqual((status, body["data"]["uuids"]), (200, [self.job_a]), body)

    def test_listings_are_narrowed_to_the_scope(self) -> None:
        """Projects, jobs and executions listed by a scoped credential are its projects' only."""
        reader = Scoped(self.h, [self.a], "read")
        self.h.add_execution(execution_id="ea", job_uuid=self.job_a, project_uuid=self.a)
        self.h.add_execution(execution_id="eb", job_uuid=self.job_b, project_uuid=self.b)
        projects = reader.request("GET", "/projects")[2]["data"]
        self.assertEqual(([p["uuid"] for p in projects["items"]], projects["total"]), ([self.a], 1))
        jobs = reader.request("GET", "/jobs")[2]["data"]
        self.assertEqual(([j["uuid"] for j in jobs["items"]], jobs["total"]), ([self.job_a], 1))
        executions = reader.request("GET", "/executions")[2]["data"]
        self.assertEqual([e["execution_id"] for e in executions["items"]], ["ea"])
        status, _, body = reader.request("GET", f"/jobs?project_uuid={self.b}")
        self.assertEqual(status, 403, body)
        status, _, body = reader.request("GET", f"/executions?job_uuid={self.job_b}")
        self.assertEqual(status, 403, body)
        both = Scoped(self.h, [self.a, self.b], "read")
        status, _, body = both.request("GET", "/executions")
        self.assertEqual(status, 403, body)
        self.assertIn("give project_uuid", body["error"]["message"])

    def test_credentials_show_their_scope(self) -> None:
        """Created, read and listed, a credential shows projects and role (old ones: all, write)."""
        scoped = Scoped(self.h, [self.b, self.a], "read")
        self.assertEqual(
            (scoped.created["projects"], scoped.created["role"]), (sorted([self.a, self.b]), "read")
        )
        self.assertEqual(self.h.proposer.proposed[-1].version, 2)
        listed = self.h.request("GET", "/credentials", auth="admin")[2]["data"]["items"]
        scopes = {c["uuid"]: (c["projects"], c["role"]) for c in listed}
        self.assertEqual(scopes[self.h.credential_uuid], (None, "write"))
        self.assertEqual(scopes[scoped.created["uuid"]], (sorted([self.a, self.b]), "read"))

    def test_a_deleted_project_leaves_the_scopes(self) -> None:
        """Deleting a project drops it from every scope that named it; the rest stays."""
        scoped = Scoped(self.h, [self.a, self.b], "read")
        status, _, body = self.h.request("DELETE", f"/projects/{self.b}?cascade=true")
        self.assertEqual(status, 200, body)
        got = self.h.request("GET", f"/credentials/{scoped.created['uuid']}", auth="admin")
        self.assertEqual(got[2]["data"]["projects"], [self.a])
        status, _, body = scoped.request("GET", f"/projects/{self.a}")
        self.assertEqual(status, 200, body)

    def test_bad_scopes_are_refused_naming_the_field(self) -> None:
        """An unknown role, a project that does not exist, an empty list: 4xx naming it."""
        before = self.h.dump()
        cases = [
            ({"role": "admin"}, 400, "role"),
            ({"projects": ["nope"]}, 404, "projects[0]"),
            ({"projects": []}, 400, "projects"),
            ({"projects": [7]}, 400, "projects[0]"),
            ({"scope": "x"}, 400, "scope"),
        ]
        for body, status, field in cases:
            got, _, answer = self.h.request("POST", "/credentials", body, auth="admin")
            self.assertEqual(got, status, answer)
            self.assertIn(field, answer["error"]["fields"])
        self.assertEqual(self.h.dump(), before)

    def test_a_scope_needs_entry_version_2(self) -> None:
        """While the cluster writes entry version 1, a scoped credential answers 409."""
        set_entry_version(self.h, 1)
        status, _, body = self.h.request(
            "POST", "/credentials", {"projects": [self.a]}, auth="admin"
        )
        self.assertEqual((status, body["error"]["code"]), (409, "entry_version_too_low"))


class AuditTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()

    def audit(self, query: str = "") -> dict:
        status, _, body = self.h.request("GET", "/audit" + query, auth="admin")
        assert status == 200, body
        return body["data"]

    def test_every_user_write_is_recorded(self) -> None:
        """
        Who (a credential's uuid and key hint, or admin), what, which
        object, when and through which node, newest first; reads leave none.
        """
        project = self.h.project("a")
        self.h.clock.advance(1)
        job = self.h.job(project["uuid"])
        self.h.request("GET", "/jobs")
        self.h.request("POST", "/credentials", {}, auth="admin")
        items = self.audit()["items"]
        self.assertEqual(
            [(r["op"], r["actor"], r["method"], r["route"], r["via"]) for r in items],
            [
                ("create_credential", "admin", "POST", "/credentials", 1),
                ("create_jobs", self.h.credential_uuid, "POST", "/jobs", 1),
                ("create_project", self.h.credential_uuid, "POST", "/projects", 1),
            ],
        )
        created_jobs, created_project = items[1], items[2]
        self.assertEqual(created_jobs["object_uuids"], [job["uuid"]])
        self.assertEqual(created_project["object_uuid"], project["uuid"])
        self.assertEqual(created_project["at"], project["created_at"])
        self.assertEqual(created_jobs["actor_key"], self.h.key[:4] + "...")
        self.assertEqual({r["outcome"] for r in items}, {"applied"})
        self.assertNotIn(self.h.secret, repr(items))

    def test_a_bulk_action_names_the_jobs_it_changed(self) -> None:
        """A bulk pause by selector is recorded with the jobs it paused, found once applied."""
        project = self.h.project("a")
        jobs = [self.h.job(project["uuid"]) for _ in range(2)]
        status, _, body = self.h.request("POST", "/jobs/bulk/pause?selector=!x")
        self.assertEqual(status, 200, body)
        record = self.audit("?op=bulk_jobs")["items"][0]
        self.assertEqual(
            (record["object_type"], sorted(record["object_uuids"]), record["object_count"]),
            ("job", sorted(job["uuid"] for job in jobs), 2),
        )
        self.assertEqual(self.audit(f"?object={jobs[0]['uuid']}")["items"][0]["op"], "bulk_jobs")

    def test_filters_and_pages(self) -> None:
        """actor, object, op, via, since and until filter; the cursor walks the rest."""
        project = self.h.project("a")
        for n in range(5):
            self.h.clock.advance(1)
            self.h.request("PATCH", f"/projects/{project['uuid']}", {"description": f"d{n}"})
        everything = self.audit()
        self.assertEqual(everything["total"], 6)
        seqs = [r["seq"] for r in everything["items"]]
        self.assertEqual(seqs, sorted(seqs, reverse=True))
        self.assertEqual(self.audit("?op=update_project")["total"], 5)
        self.assertEqual(self.audit(f"?object={project['uuid']}")["total"], 6)
        self.assertEqual(self.audit("?actor=admin")["total"], 0)
        self.assertEqual(self.audit(f"?actor={self.h.credential_uuid}")["total"], 6)
        self.assertEqual(self.audit("?via=2")["total"], 0)
        third = everything["items"][2]["at"]
        self.assertEqual(self.audit(f"?since={third}")["total"], 3)
        self.assertEqual(self.audit(f"?until={third}")["total"], 3)
        first = self.audit("?limit=4")
        second = self.audit(f"?limit=4&cursor={first['next_cursor']}")
        self.assertEqual([r["seq"] for r in first["items"] + second["items"]], seqs)
        self.assertIsNone(second["next_cursor"])
        status, _, body = self.h.request("GET", "/audit")
        self.assertEqual(status, 401, body)

    def test_the_log_keeps_the_newest_records(self) -> None:
        """With AuditLogMaxEntries 3 only the three newest records stay, on every apply."""
        h = Harness(defaults=Defaults(audit_log_max_entries=3))
        project = h.project("a")
        for n in range(4):
            h.request("PATCH", f"/projects/{project['uuid']}", {"description": f"d{n}"})
        status, _, body = h.request("GET", "/audit", auth="admin")
        items = body["data"]["items"]
        self.assertEqual(len(items), 3)
        self.assertEqual(body["data"]["total"], 3)
        self.assertEqual({r["op"] for r in items}, {"update_project"})
        self.assertEqual(h.proposer.proposed[-1].audit["keep"], 3)

    def test_a_write_refused_by_the_state_machine_is_recorded(self) -> None:
        """A command refused at apply leaves a record with outcome refused and its code."""
        stamp = audit_stamp(
            at="2026-01-02T03:04:05.678Z",
            actor="admin",
            via=1,
            method="PATCH",
            route="/jobs/<uuid>",
            keep=10,
        )
        command = Command(
            "update_job",
            {"uuid": "nope", "changes": {"name": "x"}, "updated_at": "2026-01-02T03:04:05.678Z"},
            version=2,
            audit=stamp,
        )
        result = fired(self.h.proposer.propose(command))
        self.assertEqual(result.code, "not_found")
        (record,) = self.audit()["items"]
        self.assertEqual(
            (record["op"], record["object_uuid"], record["outcome"], record["code"]),
            ("update_job", "nope", "refused", "not_found"),
        )

    def test_a_large_create_names_the_first_jobs_and_the_count(self) -> None:
        """create_jobs of many jobs keeps its record small: ten uuids and the count."""
        project = self.h.project("a")
        jobs = [
            {
                "project_uuid": project["uuid"],
                "name": f"j{n}",
                "spec": "@every 1m",
                "callback_url": "http://cb.test/x",
            }
            for n in range(25)
        ]
        status, _, body = self.h.request("POST", "/jobs", jobs)
        self.assertEqual(status, 201, body)
        record = self.audit("?op=create_jobs")["items"][0]
        self.assertEqual(record["object_count"], 25)
        self.assertEqual(record["object_uuids"], [j["uuid"] for j in body["data"][:10]])

    def test_no_record_while_the_cluster_writes_version_1(self) -> None:
        """In a mixed upgrade writes carry no audit metadata (version 1) and leave no record."""
        set_entry_version(self.h, 1)
        self.h.project("a")
        command = self.h.proposer.proposed[-1]
        self.assertEqual((command.version, command.audit), (1, None))
        self.assertEqual(self.audit()["total"], 0)

    def test_internal_commands_leave_no_record(self) -> None:
        """A node's own commands (a first credential, a hash upgrade) are not user writes."""
        fired(self.h.api.create_credential())
        self.assertEqual(self.audit()["total"], 0)
