"""
Tests for the HTTP API (SPEC §5), driven in memory through StubTreq.
"""

from __future__ import annotations

import json
import re
from io import BytesIO

from twisted.internet.defer import CancelledError, fail, succeed
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from scheduler0.api.errors import APIError
from scheduler0.api.limits import RateLimiter
from scheduler0.api.request import Call, Principal
from scheduler0.api.routes import PREFIXES, ROUTES
from scheduler0.api.validation import encode_cursor
from scheduler0.errors import StoreUnavailable
from scheduler0.netpolicy import NetworkPolicy
from scheduler0.store.commands import Result
from tests.support.api import Admin, Harness, basic, fired


def job_body(puuid: str, **fields) -> dict:
    body = {
        "project_uuid": puuid,
        "name": "j",
        "spec": "@every 1m",
        "callback_url": "http://cb.test/hook",
    }
    body.update(fields)
    return body


class APITestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()

    def assertError(
        self, response, status: int, field: str | None = None, code: str | None = None
    ) -> dict:
        got_status, headers, body = response
        self.assertEqual(got_status, status, body)
        self.assertEqual(headers.get("content-type"), "application/json")
        self.assertIs(body["success"], False)
        self.assertIsNone(body["data"])
        error = body["error"]
        self.assertIsInstance(error["message"], str)
        if field is not None:
            self.assertIn(field, error["fields"], error)
            self.assertIn(field, error["message"], error)
        if code is not None:
            self.assertEqual(error["code"], code)
        return error

    def snapshot(self):
        return self.h.dump(), len(self.h.proposer.proposed)


class SeedClientTests(APITestCase):
    def test_seed_client_flow(self) -> None:
        """
        The seed's Node.js client calls work unprefixed: POST /projects then POST /jobs; data.uuid
        is the job id.
        """
        status, _, body = self.h.request(
            "POST", "/projects", {"name": "sample project", "description": "my calendar project"}
        )
        self.assertEqual(status, 201)
        self.assertIs(body["success"], True)
        project_uuid = body["data"]["uuid"]
        status, headers, body = self.h.request(
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
        self.assertEqual(headers["content-type"], "application/json")
        job = body["data"]
        self.assertEqual(self.h.stored_job(job["uuid"])["project_uuid"], project_uuid)


class RoutingTests(APITestCase):
    def test_every_route_is_served_under_both_prefixes(self) -> None:
        """
        Each route of the table answers under /api/v1 and without a prefix (never a routing
        404/405).
        """
        for route in ROUTES:
            path = route.path.replace("<uuid>", "missing")
            for prefix in PREFIXES:
                status, _, body = self.h.request(route.method, prefix + path, auth="admin")
                self.assertNotEqual(status, 405, (route, prefix))
                if status == 404:
                    self.assertNotEqual(body["error"]["message"], "no such route", (route, prefix))

    def test_unknown_route_is_404_envelope(self) -> None:
        """An unknown path answers 404 with the JSON error envelope."""
        for path in ("/nope", "/api/v1/nope", "/api/v2/jobs", "/jobs/a/b/c"):
            self.assertError(self.h.request("GET", path), 404, code="not_found")

    def test_wrong_method_is_405_envelope(self) -> None:
        """
        A known path with a wrong method answers 405 with an Allow header and the JSON envelope.
        """
        for path in ("/projects", "/api/v1/projects"):
            response = self.h.request("PATCH", path, {})
            self.assertError(response, 405, code="method_not_allowed")
            self.assertEqual(response[1]["allow"], "GET, HEAD, POST")

    def test_healthcheck_is_anonymous(self) -> None:
        """GET /healthcheck needs no credentials and returns health() data."""
        health = {"node_id": 1, "role": "leader", "ready": True, "reasons": []}
        for prefix in PREFIXES:
            status, _, body = self.h.request("GET", prefix + "/healthcheck", auth="none")
            self.assertEqual((status, body), (200, {"success": True, "data": health}))


def _validator(document: dict, schema: dict):
    """A validator of C{schema}, whose $refs name component schemas of C{document}."""
    import jsonschema_rs

    return jsonschema_rs.validator_for({**schema, "components": document["components"]})


class HealthTests(SynchronousTestCase):
    """GET /healthcheck answers 200 only while the node is ready; GET /livez always."""

    ready = {
        "node_id": 2,
        "version": "1.0",
        "role": "follower",
        "leader_id": 1,
        "leader_address": "http://127.0.0.1:9091",
        "term": 3,
        "commit_index": 10,
        "applied_index": 10,
        "members": [
            {
                "node_id": 1,
                "address": "http://127.0.0.1:9091",
                "raft_address": "127.0.0.1:7071",
                "role": "leader",
                "voter": True,
                "connected": True,
                "reachable": True,
                "last_contact": None,
            },
            {
                "node_id": 3,
                "address": "http://127.0.0.1:9093",
                "raft_address": "127.0.0.1:7073",
                "role": "unreachable",
                "voter": True,
                "connected": False,
                "reachable": False,
                "last_contact": None,
            },
        ],
        "lease_valid": True,
        "scheduling_paused": False,
        "pause_reason": None,
        "ready": True,
        "reasons": [],
    }
    unready = {
        **ready,
        "leader_id": None,
        "leader_address": None,
        "lease_valid": False,
        "ready": False,
        "reasons": [
            {"code": "no_leader", "message": "no leader is known"},
            {"code": "lease_lapsed", "message": "this node's lease lapsed 1.0 s ago"},
        ],
    }

    def setUp(self) -> None:
        self.health = dict(self.ready)
        self.h = Harness(health=lambda: self.health)

    def test_a_ready_node_answers_200_with_its_health(self) -> None:
        """Ready: 200, success, the health data with ready true and no reasons."""
        status, headers, body = self.h.request("GET", "/healthcheck", auth="none")
        self.assertEqual((status, body), (200, {"success": True, "data": self.ready}))
        self.assertNotIn("retry-after", headers)

    def test_a_node_that_is_not_ready_answers_503_with_the_same_body_and_why(self) -> None:
        """
        Not ready: 503 with Retry-After, the error envelope (code not_ready,
        a message naming every reason) and, as data, the whole health.
        """
        self.health = self.unready
        for prefix in PREFIXES:
            status, headers, body = self.h.request("GET", prefix + "/healthcheck", auth="none")
            self.assertEqual(status, 503)
            self.assertEqual(headers["retry-after"], "1")
            self.assertEqual(headers["content-type"], "application/json")
            self.assertIs(body["success"], False)
            self.assertEqual(body["data"], self.unready)
            error = body["error"]
            self.assertEqual((error["code"], error["fields"]), ("not_ready", {}))
            self.assertIn("no_leader: no leader is known", error["message"])
            self.assertIn("lease_lapsed: this node's lease lapsed", error["message"])

    def test_both_bodies_match_the_openapi_document(self) -> None:
        """The 200 and the 503 bodies are what the document says the route answers."""
        document = self.h.request("GET", "/openapi.json")[2]
        operation = document["paths"]["/healthcheck"]["get"]
        self.assertEqual(operation["responses"]["503"]["headers"]["Retry-After"]["required"], True)
        for health, code in ((self.ready, "200"), (self.unready, "503")):
            self.health = health
            body = self.h.request("GET", "/healthcheck", auth="none")[2]
            schema = operation["responses"][code]["content"]["application/json"]["schema"]
            errors = [str(e) for e in _validator(document, schema).iter_errors(body)]
            self.assertEqual(errors, [], code)

    def test_livez_answers_200_without_credentials_or_reads(self) -> None:
        """GET /livez is anonymous and answers 200 even while the node is not ready."""
        self.health = self.unready

        def no_reads() -> dict:
            raise AssertionError("GET /livez must not build the health check")

        h = Harness(health=no_reads)
        before = len(h.proposer.proposed)
        for prefix in PREFIXES:
            status, _, body = h.request("GET", prefix + "/livez", auth="none")
            self.assertEqual(
                (status, body), (200, {"success": True, "data": {"live": True, "node_id": 1}})
            )
        self.assertEqual(len(h.proposer.proposed), before)
        document = h.request("GET", "/openapi.json")[2]
        operation = document["paths"]["/livez"]["get"]
        self.assertEqual(operation["security"], [])
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        self.assertTrue(_validator(document, schema).is_valid(body))


class AuthTests(APITestCase):
    def test_missing_credentials_401(self) -> None:
        """No credentials: 401; the Basic challenge is sent on admin routes only."""
        status, headers, body = self.h.request("GET", "/projects", auth="none")
        self.assertEqual(status, 401)
        self.assertNotIn("www-authenticate", headers)
        status, headers, body = self.h.request("GET", "/credentials", auth="none")
        self.assertEqual(status, 401)
        self.assertEqual(headers["www-authenticate"], 'Basic realm="scheduler0"')

    def test_wrong_key_or_secret_401(self) -> None:
        """An unknown key, a wrong secret or a missing secret header is 401."""
        for headers in (
            {"x-api-key": "nope", "x-secret-key": self.h.secret},
            {"x-api-key": self.h.key, "x-secret-key": "wrong"},
            {"x-api-key": self.h.key},
            {"x-secret-key": self.h.secret},
            {b"x-api-key": b"\xff\xfe", b"x-secret-key": b"abc"},
        ):
            self.assertError(self.h.request("GET", "/projects", auth="none", headers=headers), 401)

    def test_archived_credential_401(self) -> None:
        """An archived credential is rejected, even right after it was accepted (and cached)."""
        self.assertEqual(self.h.request("GET", "/projects")[0], 200)
        self.h.request("DELETE", f"/credentials/{self.h.credential_uuid}", auth="admin")
        error = self.assertError(self.h.request("GET", "/projects"), 401)
        self.assertIn("archived", error["message"])

    def test_verified_credential_is_not_read_again(self) -> None:
        """
        After its first use a credential is checked from memory: no store
        read and no hash per request; a wrong secret for the same key still
        goes to the store and is refused.
        """
        reads = []
        store = self.h.state

        class Counting:
            def __getattr__(self, name):
                return getattr(store, name)

            def get_credential_by_key(self, api_key):
                reads.append(api_key)
                return store.get_credential_by_key(api_key)

        self.h.api.auth.state = Counting()
        self.assertEqual(self.h.request("GET", "/projects")[0], 200)
        first_reads, first_hashes = len(reads), self.h.verifications
        for _ in range(5):
            self.assertEqual(self.h.request("GET", "/projects")[0], 200)
        self.assertEqual((len(reads), self.h.verifications), (first_reads, first_hashes))
        wrong = {"x-api-key": self.h.key, "x-secret-key": self.h.secret + "x"}
        self.assertError(self.h.request("GET", "/projects", auth="none", headers=wrong), 401)
        self.assertEqual(len(reads), first_reads + 1)

    def test_request_rate_per_credential(self) -> None:
        """
        Past its burst a credential gets 429 with Retry-After, naming
        x-api-key; another credential is not slowed; tokens come back in time.
        """
        self.h.api.auth.rate_limiter = RateLimiter(self.h.clock, rate=1, burst=3)
        for _ in range(3):
            self.assertEqual(self.h.request("GET", "/projects")[0], 200)
        status, headers, body = self.h.request("GET", "/projects")
        error = self.assertError((status, headers, body), 429, "x-api-key")
        self.assertEqual(error["code"], "rate_limited")
        self.assertEqual(headers["retry-after"], "1")
        self.assertEqual(self.h.request("GET", "/projects", auth="admin")[0], 200)
        self.assertEqual(self.h.request("GET", "/healthcheck", auth="none")[0], 200)
        self.h.clock.advance(1)
        self.assertEqual(self.h.request("GET", "/projects")[0], 200)

    def test_client_on_admin_route_401(self) -> None:
        """
        Client credentials on an admin route get 401 with the Basic
        challenge: the route's only scheme is admin Basic auth.
        """
        for method, path in (
            ("GET", "/credentials"),
            ("POST", "/credentials"),
            ("DELETE", "/credentials/cred-1"),
        ):
            self.assertError(self.h.request(method, path), 401, code="unauthorized")
        response = self.h.request(
            "GET", "/credentials", auth="none", headers={"x-api-key": "k", "x-secret-key": "s"}
        )
        self.assertError(response, 401)
        self.assertEqual(response[1]["www-authenticate"], 'Basic realm="scheduler0"')

    def test_admin_everywhere(self) -> None:
        """Admin Basic auth works on client routes and admin routes."""
        self.assertEqual(self.h.request("GET", "/projects", auth="admin")[0], 200)
        self.assertEqual(self.h.request("GET", "/credentials", auth="admin")[0], 200)

    def test_wrong_basic_401(self) -> None:
        """Wrong admin password, wrong user, or a malformed Authorization header is 401."""
        for headers in (
            basic(password="nope"),
            basic(user="root"),
            {"Authorization": "Basic !!!"},
            {"Authorization": "Bearer abc"},
            {b"Authorization": b"Basic \xff"},
        ):
            response = self.h.request("GET", "/credentials", auth="none", headers=headers)
            self.assertError(response, 401)
            self.assertIn("www-authenticate", response[1])
            self.assertError(self.h.request("GET", "/projects", auth="none", headers=headers), 401)

    def test_empty_admin_password_disables_basic(self) -> None:
        """With no admin password configured, Basic auth never succeeds."""
        h = Harness(admin=Admin(password=""))
        self.assertEqual(
            h.request("GET", "/credentials", auth="none", headers=basic(password=""))[0], 401
        )

    def test_legacy_hash_is_verified_once_then_upgraded(self) -> None:
        """
        A pbkdf2 hash from before keyed hashes is verified once; later
        requests reuse the verification, and the hash is replaced by the
        keyed one, so wrong secrets are then refused without pbkdf2.
        """
        self.h = Harness(legacy_hashes=True)
        stored = fired(self.h.state.get_credential_by_key(self.h.key))["api_secret_hash"]
        self.assertTrue(stored.startswith("$pbkdf2-sha256$"))
        for _ in range(3):
            self.assertEqual(self.h.request("GET", "/projects")[0], 200)
        self.assertEqual(self.h.verifications, 1)
        upgraded = fired(self.h.state.get_credential_by_key(self.h.key))["api_secret_hash"]
        self.assertTrue(upgraded.startswith("hmac-sha256$"))
        for _ in range(2):
            self.h.request(
                "GET",
                "/projects",
                auth="none",
                headers={"x-api-key": self.h.key, "x-secret-key": "bad"},
            )
        self.assertEqual(self.h.verifications, 1)

    def test_verification_may_be_asynchronous(self) -> None:
        """A verify function that answers later (a thread, on a node) is awaited."""
        from twisted.internet.defer import Deferred

        pending: list[Deferred] = []

        def verify_later(secret: str, hashed: str) -> Deferred:
            d: Deferred = Deferred()
            pending.append(d)
            return d

        self.h = Harness(legacy_hashes=True)
        self.h.api.auth.verify_secret = verify_later
        self.h.api.auth.upgrade_hash = None
        response = self.h.treq.get("http://node/projects", headers=self.h.client_headers)
        self.assertNoResult(response)
        pending.pop().callback(True)
        self.h.treq.flush()
        self.assertEqual(self.successResultOf(response).code, 200)
        denied = self.h.treq.get(
            "http://node/projects", headers={"x-api-key": self.h.key, "x-secret-key": "wrong"}
        )
        pending.pop().callback(False)
        self.h.treq.flush()
        self.assertEqual(self.successResultOf(denied).code, 401)

    def test_openapi_requires_auth(self) -> None:
        """/openapi.json is not anonymous."""
        self.assertError(self.h.request("GET", "/openapi.json", auth="none"), 401)


class ProjectTests(APITestCase):
    def test_create_get_list(self) -> None:
        """A created project has a uuid and timestamps fixed by the API, and can be read back."""
        status, _, body = self.h.request(
            "POST", "/api/v1/projects", {"name": "a", "description": "x"}
        )
        self.assertEqual(status, 201)
        project = body["data"]
        self.assertEqual(project["created_at"], "2026-01-02T03:04:05.678Z")
        # The signing secret is in this answer only, never in a later read.
        secret = project.pop("signing_secret")
        command = self.h.proposer.proposed[-1]
        self.assertEqual(command.op, "create_project")
        # (Without a notify_url the command leaves it out: an earlier release applies it too.)
        self.assertEqual(
            command.args["project"], {k: v for k, v in project.items() if k != "notify_url"}
        )
        self.assertIsNone(project["notify_url"])
        self.assertEqual(command.args["signing_secret"], secret)
        self.assertTrue(command.request_id)
        self.assertEqual(self.h.request("GET", f"/projects/{project['uuid']}")[2]["data"], project)
        listed = self.h.request("GET", "/projects")[2]["data"]
        self.assertEqual(
            listed, {"items": [project], "total": 1, "limit": 50, "offset": 0, "next_cursor": None}
        )

    def test_rotate_signing_secret(self) -> None:
        """
        Rotation proposes a new secret and an end to the old one's grace
        (default from config, or grace_s); the answer shows the new secret.
        """
        p = self.h.project("a")
        status, _, body = self.h.request(
            "POST", f"/projects/{p['uuid']}/signing-secret", {"grace_s": 60}
        )
        self.assertEqual(status, 200, body)
        rotated = body["data"]
        self.assertNotEqual(rotated["signing_secret"], p["signing_secret"])
        self.assertEqual(rotated["previous_expires_at"], "2026-01-02T03:05:05.678Z")
        command = self.h.proposer.proposed[-1]
        self.assertEqual(command.op, "rotate_signing_secret")
        self.assertEqual(
            command.args,
            {
                "project_uuid": p["uuid"],
                "secret": rotated["signing_secret"],
                "at": "2026-01-02T03:04:05.678Z",
                "expires_at": "2026-01-02T03:05:05.678Z",
            },
        )
        status, _, body = self.h.request("POST", f"/api/v1/projects/{p['uuid']}/signing-secret")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["data"]["previous_expires_at"], "2026-01-03T03:04:05.678Z")

    def test_bad_rotations_are_refused(self) -> None:
        """A bad grace_s, an unknown field or an unknown project is a 4xx that proposes nothing."""
        p = self.h.project("a")
        count = len(self.h.proposer.proposed)
        url = f"/projects/{p['uuid']}/signing-secret"
        for grace in ("60", -1, True, 10**9):
            self.assertError(self.h.request("POST", url, {"grace_s": grace}), 400, "grace_s")
        self.assertError(self.h.request("POST", url, {"grace": 1}), 400, "grace")
        self.assertError(
            self.h.request("POST", "/projects/00000000-0000-4000-8000-00000000ffff/signing-secret"),
            404,
            "uuid",
        )
        self.assertEqual(len(self.h.proposer.proposed), count)

    def test_description_defaults_to_empty(self) -> None:
        """description is optional."""
        status, _, body = self.h.request("POST", "/projects", {"name": "a"})
        self.assertEqual((status, body["data"]["description"]), (201, ""))

    def test_duplicate_name_409(self) -> None:
        """Project names are unique."""
        self.h.project("a")
        before = self.snapshot()
        self.assertError(self.h.request("POST", "/projects", {"name": "a"}), 409, "name")
        self.assertEqual(self.snapshot(), before)

    def test_bad_project_bodies(self) -> None:
        """
        Missing, wrong-typed, unknown and read-only fields are 400 naming the field; nothing is
        stored.
        """
        before = self.snapshot()
        cases = [
            ({}, "name"),
            ({"name": ""}, "name"),
            ({"name": 5}, "name"),
            ({"name": "a", "description": 5}, "description"),
            ({"name": "a", "colour": "red"}, "colour"),
            ({"name": "a", "uuid": "x"}, "uuid"),
            ({"name": "a", "created_at": "x"}, "created_at"),
            ({"name": "a" * 300}, "name"),
        ]
        for payload, field in cases:
            self.assertError(self.h.request("POST", "/projects", payload), 400, field)
        self.assertError(self.h.request("POST", "/projects", ["x"]), 400, "body")
        self.assertEqual(self.snapshot(), before)

    def test_update_project(self) -> None:
        """
        PUT changes name/description and updated_at; a rename onto another project's name is 409.
        """
        a = self.h.project("a")
        self.h.project("b")
        self.h.clock.advance(5)
        status, _, body = self.h.request("PUT", f"/projects/{a['uuid']}", {"description": "new"})
        self.assertEqual(status, 200)
        self.assertEqual(body["data"]["description"], "new")
        self.assertEqual(body["data"]["updated_at"], "2026-01-02T03:04:10.678Z")
        self.assertEqual(self.h.stored_project(a["uuid"])["description"], "new")
        before = self.snapshot()
        self.assertError(
            self.h.request("PUT", f"/projects/{a['uuid']}", {"name": "b"}), 409, "name"
        )
        self.assertError(
            self.h.request("PUT", f"/projects/{a['uuid']}", {"uuid": "x"}), 400, "uuid"
        )
        self.assertError(self.h.request("PUT", "/projects/missing", {"name": "c"}), 404, "uuid")
        self.assertEqual(self.snapshot(), before)

    def test_update_project_without_changes_proposes_nothing(self) -> None:
        """A PUT that changes nothing answers the project and proposes no command."""
        a = self.h.project("a")
        count = len(self.h.proposer.proposed)
        del a["signing_secret"]
        status, _, body = self.h.request("PUT", f"/projects/{a['uuid']}", {"name": "a"})
        self.assertEqual((status, body["data"]), (200, a))
        self.assertEqual(len(self.h.proposer.proposed), count)

    def test_delete_project(self) -> None:
        """
        DELETE is 409 while the project has jobs, unless cascade=true, which deletes the jobs too.
        """
        p = self.h.project()
        job = self.h.job(p["uuid"])
        before = self.snapshot()
        self.assertError(self.h.request("DELETE", f"/projects/{p['uuid']}"), 409, "cascade")
        self.assertError(
            self.h.request("DELETE", f"/projects/{p['uuid']}?cascade=maybe"), 400, "cascade"
        )
        self.assertEqual(self.snapshot(), before)
        status, _, body = self.h.request("DELETE", f"/projects/{p['uuid']}?cascade=true")
        self.assertEqual(status, 200)
        self.assertEqual(body["data"], {"uuid": p["uuid"], "deleted_jobs": [job["uuid"]]})
        self.assertIsNone(self.h.stored_project(p["uuid"]))
        self.assertEqual(self.h.count_jobs(), 0)
        self.assertError(self.h.request("DELETE", f"/projects/{p['uuid']}"), 404, "uuid")

    def test_delete_empty_project(self) -> None:
        """A project without jobs is deleted without cascade."""
        p = self.h.project()
        self.assertEqual(self.h.request("DELETE", f"/projects/{p['uuid']}")[0], 200)
        self.assertError(self.h.request("GET", f"/projects/{p['uuid']}"), 404, "uuid")


class PaginationTests(APITestCase):
    def test_pages_and_cursor(self) -> None:
        """
        limit/offset page through a list; next_cursor continues where the page ended and is null at
        the end.
        """
        names = [f"p{i}" for i in range(5)]
        for name in names:
            self.h.project(name)
            self.h.clock.advance(1)
        page = self.h.request("GET", "/projects?limit=2")[2]["data"]
        self.assertEqual([p["name"] for p in page["items"]], ["p0", "p1"])
        self.assertEqual((page["total"], page["limit"], page["offset"]), (5, 2, 0))
        seen = [p["name"] for p in page["items"]]
        while page["next_cursor"]:
            page = self.h.request("GET", f"/projects?limit=2&cursor={page['next_cursor']}")[2][
                "data"
            ]
            seen += [p["name"] for p in page["items"]]
        self.assertEqual(seen, names)
        page = self.h.request("GET", "/projects?offset=4")[2]["data"]
        self.assertEqual(([p["name"] for p in page["items"]], page["next_cursor"]), (["p4"], None))

    def test_cursor_with_the_default_offset(self) -> None:
        """
        offset=0, its default, beside a cursor is the same as leaving it out;
        any other offset beside a cursor is refused naming cursor.
        """
        for name in ("p0", "p1", "p2"):
            self.h.project(name)
            self.h.clock.advance(1)
        cursor = self.h.request("GET", "/projects?limit=2")[2]["data"]["next_cursor"]
        status, _, body = self.h.request("GET", f"/projects?limit=2&offset=0&cursor={cursor}")
        self.assertEqual(status, 200, body)
        self.assertEqual([p["name"] for p in body["data"]["items"]], ["p2"])
        status, _, body = self.h.request("GET", f"/projects?limit=2&offset=1&cursor={cursor}")
        self.assertEqual(status, 400, body)
        self.assertIn("cursor", body["error"]["fields"])

    def test_job_cursor_follows_the_index(self) -> None:
        """
        A job list's next_cursor holds the last job's position: following it
        gives every job once, in order, with filters, even when jobs already
        seen are deleted between pages (an offset would skip one then).
        """
        project = self.h.project("keyset")
        other = self.h.project("other")
        made = []
        for i in range(7):
            made.append(self.h.job(project["uuid"], name=f"j{i}")["uuid"])
            self.h.job(other["uuid"], name=f"o{i}")
            if i % 2:
                self.h.clock.advance(1)  # some share created_at: uuid breaks the tie
        url = f"/jobs?project_uuid={project['uuid']}&limit=3"
        page = self.h.request("GET", url)[2]["data"]
        seen = [j["uuid"] for j in page["items"]]
        offsets = [page["offset"]]
        deleted = 0
        while page["next_cursor"]:
            self.h.job(other["uuid"], name="meanwhile")
            status = self.h.request("DELETE", f"/jobs/{made[deleted]}")[0]
            self.assertEqual(status, 200)
            deleted += 1
            page = self.h.request("GET", f"{url}&cursor={page['next_cursor']}")[2]["data"]
            seen += [j["uuid"] for j in page["items"]]
            offsets.append(page["offset"])
            self.assertEqual(page["total"], 7 - deleted)
        self.assertEqual(seen, made)
        self.assertEqual(offsets, [0, 3, 6])

    def test_forged_job_cursors_are_refused(self) -> None:
        """A cursor with a malformed position is 400 naming cursor."""
        import base64

        for raw in (b"k:3|yesterday|abc", b"k:3|2026-01-02T03:04:05.678Z|", b"k:x|a|b", b"z:1"):
            token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            self.assertError(self.h.request("GET", f"/jobs?cursor={token}"), 400, "cursor")

    def test_bad_paging_parameters(self) -> None:
        """
        Out-of-range or malformed limit/offset/cursor, both offset and cursor, or unknown parameters
        are 400.
        """
        cases = [
            ("limit=1001", "limit"),
            ("limit=0", "limit"),
            ("limit=x", "limit"),
            ("offset=-1", "offset"),
            ("offset=1.5", "offset"),
            ("cursor=%%%", "cursor"),
            ("cursor=bm9wZQ", "cursor"),
            (f"cursor={encode_cursor(2)}&offset=1", "cursor"),
            ("limit=1&limit=2", "limit"),
            ("colour=red", "colour"),
        ]
        for query, field in cases:
            self.assertError(self.h.request("GET", f"/projects?{query}"), 400, field)
        self.assertEqual(self.h.request("GET", "/projects?limit=1000")[0], 200)


class JobCreateTests(APITestCase):
    def setUp(self) -> None:
        super().setUp()
        self.project = self.h.project()
        self.puuid = self.project["uuid"]

    def test_defaults_applied(self) -> None:
        """Absent optional fields take the documented defaults (config for the numeric ones)."""
        job = self.h.job(self.puuid)
        self.assertEqual(
            {
                k: job[k]
                for k in (
                    "data",
                    "timezone",
                    "execution_type",
                    "paused",
                    "catch_up_window_s",
                    "timeout_s",
                    "retry_max",
                )
            },
            {
                "data": None,
                "timezone": "UTC",
                "execution_type": "http",
                "paused": False,
                "catch_up_window_s": 60.0,
                "timeout_s": 30.0,
                "retry_max": 10,
            },
        )
        self.assertEqual(job["created_at"], "2026-01-02T03:04:05.678Z")
        self.assertEqual(job["anchor_at"], "2026-01-02T03:04:05.000Z")
        self.assertEqual(
            (job["next_run_at"], job["last_run_at"], job["last_status"]),
            ("2030-01-01T00:00:00.000Z", None, None),
        )
        stored = self.h.stored_job(job["uuid"])
        self.assertNotIn("next_run_at", stored)
        self.assertEqual(stored["anchor_at"], job["anchor_at"])

    def test_all_fields(self) -> None:
        """Every writable field is stored as given."""
        job = self.h.job(
            self.puuid,
            data={"a": [1, 2]},
            timezone="Europe/Berlin",
            execution_type="http",
            paused=True,
            catch_up_window_s=0,
            timeout_s=1.5,
            retry_max=0,
            spec="30 2 * * *",
            callback_url="https://example.com:8443/cb?x=1",
        )
        stored = self.h.stored_job(job["uuid"])
        self.assertEqual(stored["data"], {"a": [1, 2]})
        self.assertEqual(
            (
                stored["timezone"],
                stored["paused"],
                stored["catch_up_window_s"],
                stored["timeout_s"],
                stored["retry_max"],
            ),
            ("Europe/Berlin", True, 0.0, 1.5, 0),
        )
        self.assertIsNone(job["next_run_at"])

    def test_array_creates_all(self) -> None:
        """An array body creates every job in one create_jobs command and answers the list."""
        status, _, body = self.h.request(
            "POST", "/jobs", [job_body(self.puuid, name=f"j{i}") for i in range(3)]
        )
        self.assertEqual(status, 201)
        self.assertEqual([j["name"] for j in body["data"]], ["j0", "j1", "j2"])
        self.assertEqual(self.h.count_jobs(), 3)
        self.assertEqual(self.h.proposer.proposed[-1].op, "create_jobs")
        self.assertEqual(len(self.h.proposer.proposed[-1].args["jobs"]), 3)

    def test_array_is_atomic(self) -> None:
        """One bad element rejects the whole array, naming jobs[i].field; nothing is stored."""
        before = self.snapshot()
        payload = [
            job_body(self.puuid),
            job_body(self.puuid, spec="not a spec"),
            job_body(self.puuid, retry_max=-1),
        ]
        error = self.assertError(self.h.request("POST", "/jobs", payload), 400, "jobs[1].spec")
        self.assertIn("jobs[2].retry_max", error["fields"])
        self.assertEqual(self.snapshot(), before)
        payload = [job_body(self.puuid), job_body("no-such-project")]
        self.assertError(self.h.request("POST", "/jobs", payload), 404, "jobs[1].project_uuid")
        self.assertError(
            self.h.request("POST", "/jobs", [job_body(self.puuid), "x"]), 400, "jobs[1]"
        )
        self.assertEqual(self.snapshot(), before)

    def test_array_bounds(self) -> None:
        """An empty array is 400 and more than 10,000 jobs is 413, both naming jobs."""
        before = self.snapshot()
        self.assertError(self.h.request("POST", "/jobs", []), 400, "jobs")
        self.assertError(self.h.request("POST", "/jobs", [{}] * 10_001), 413, "jobs")
        self.assertEqual(self.snapshot(), before)

    def test_deeply_nested_body_is_400_before_parsing(self) -> None:
        """A body nested deeper than MaxJSONDepth is 400 naming body; nothing changes."""
        before = self.snapshot()
        deep = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        error = self.assertError(self.h.request("POST", "/jobs", raw=deep), 400, "body")
        self.assertIn("deeper than 32", error["message"])
        self.assertEqual(self.snapshot(), before)
        nested = job_body(self.puuid, data=[[[["ok"]]]])
        self.assertEqual(self.h.request("POST", "/jobs", nested)[0], 201)

    def test_null_body_is_400_on_every_route_with_a_body(self) -> None:
        """A literal JSON null is a bad body (400 naming body), never a 500 or a default."""
        job = self.h.job(self.puuid)
        before = self.snapshot()
        for route in ROUTES:
            if route.body is None:
                continue
            uuid = job["uuid"] if "/jobs" in route.path else self.puuid
            path = route.path.replace("<uuid>", uuid)
            response = self.h.request(route.method, path, raw=b"null", auth="admin")
            self.assertError(response, 400, "body")
        self.assertEqual(self.snapshot(), before)

    def test_integral_number_is_an_integer(self) -> None:
        """retry_max 3.0 is the integer 3 (JSON has one number type); 3.5 is refused."""
        status, _, body = self.h.request("POST", "/jobs", job_body(self.puuid, retry_max=3.0))
        self.assertEqual((status, body["data"]["retry_max"]), (201, 3))
        self.assertIsInstance(body["data"]["retry_max"], int)
        self.assertError(
            self.h.request("POST", "/jobs", job_body(self.puuid, retry_max=3.5)), 400, "retry_max"
        )

    def test_array_limit_follows_config(self) -> None:
        """MaxJobsPerRequest lowers the array limit; the error names it."""
        self.h.api.job_routes.max_jobs_per_request = 3
        payload = [job_body(self.puuid, name=f"j{i}") for i in range(4)]
        before = self.snapshot()
        error = self.assertError(self.h.request("POST", "/jobs", payload), 413, "jobs")
        self.assertIn("at most 3", error["message"])
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.h.request("POST", "/jobs", payload[:3])[0], 201)

    def test_ten_thousand_jobs_in_one_request(self) -> None:
        """The largest allowed array, 10,000 jobs, is created in one command."""
        payload = [job_body(self.puuid, name=f"j{i}") for i in range(10_000)]
        status, _, body = self.h.request("POST", "/jobs", payload)
        self.assertEqual(status, 201)
        self.assertEqual(len(body["data"]), 10_000)
        self.assertEqual(len({job["uuid"] for job in body["data"]}), 10_000)
        self.assertEqual(self.h.count_jobs(), 10_000)
        self.assertEqual([c.op for c in self.h.proposer.proposed[-1:]], ["create_jobs"])

    def test_a_large_array_lets_the_reactor_breathe_while_it_is_checked_and_shown(self) -> None:
        """
        Checking the fields, checking the jobs made of them, and presenting
        1,200 jobs hands control back every 500 jobs (two pauses each), so
        heartbeats and firing are not held up for the whole array; the
        answer is the same.
        """
        pauses: list[int] = []
        self.h.api.job_routes.breathe = lambda: pauses.append(1)
        payload = [job_body(self.puuid, name=f"j{i}") for i in range(1_200)]
        status, _, body = self.h.request("POST", "/jobs", payload)
        self.assertEqual((status, len(body["data"])), (201, 1_200))
        self.assertEqual(len(pauses), 6)

    def test_unknown_project_404(self) -> None:
        """A job for a project that does not exist is 404 naming project_uuid."""
        before = self.snapshot()
        self.assertError(self.h.request("POST", "/jobs", job_body("nope")), 404, "project_uuid")
        self.assertEqual(self.snapshot(), before)

    def test_bad_fields(self) -> None:
        """
        Every kind of bad field value is 400 naming the field; nothing reaches the state machine.
        """
        before = self.snapshot()
        cases = [
            ({"name": ""}, "name"),
            ({"name": 3}, "name"),
            ({"spec": "bogus"}, "spec"),
            ({"spec": "@every 0s"}, "spec"),
            ({"spec": 5}, "spec"),
            ({"timezone": "Mars/Base"}, "timezone"),
            ({"timezone": None}, "timezone"),
            ({"callback_url": "ftp://cb.test/x"}, "callback_url"),
            ({"callback_url": "http://"}, "callback_url"),
            ({"callback_url": "/relative"}, "callback_url"),
            ({"callback_url": "http://a b/"}, "callback_url"),
            ({"callback_url": "http://cb.test:99999/"}, "callback_url"),
            ({"callback_url": ["http://cb.test"]}, "callback_url"),
            ({"execution_type": "shell"}, "execution_type"),
            ({"paused": "yes"}, "paused"),
            ({"paused": 1}, "paused"),
            ({"catch_up_window_s": -1}, "catch_up_window_s"),
            ({"catch_up_window_s": "5"}, "catch_up_window_s"),
            ({"catch_up_window_s": True}, "catch_up_window_s"),
            ({"timeout_s": 0}, "timeout_s"),
            ({"timeout_s": 1e12}, "timeout_s"),
            ({"retry_max": 1.5}, "retry_max"),
            ({"retry_max": -1}, "retry_max"),
            ({"retry_max": True}, "retry_max"),
            ({"project_uuid": 7}, "project_uuid"),
            ({"colour": "red"}, "colour"),
        ]
        for fields, field in cases:
            self.assertError(
                self.h.request("POST", "/jobs", job_body(self.puuid, **fields)), 400, field
            )
        for missing in ("project_uuid", "name", "spec", "callback_url"):
            payload = job_body(self.puuid)
            del payload[missing]
            self.assertError(self.h.request("POST", "/jobs", payload), 400, missing)
        self.assertEqual(self.snapshot(), before)

    def test_spec_error_message_is_passed_on(self) -> None:
        """A bad spec's error carries the schedule module's explanation."""
        error = self.assertError(
            self.h.request("POST", "/jobs", job_body(self.puuid, spec="@dayly")), 400, "spec"
        )
        self.assertIn("dayly", error["fields"]["spec"])

    def test_read_only_fields_rejected(self) -> None:
        """Setting a read-only field is 400 naming it."""
        before = self.snapshot()
        for field in (
            "uuid",
            "created_at",
            "updated_at",
            "next_run_at",
            "last_run_at",
            "last_status",
            "anchor_at",
        ):
            error = self.assertError(
                self.h.request("POST", "/jobs", job_body(self.puuid, **{field: "x"})), 400, field
            )
            self.assertIn("read-only", error["fields"][field])
        self.assertEqual(self.snapshot(), before)

    def test_bad_bodies(self) -> None:
        """Malformed JSON, NaN, non-object bodies, wrong or missing content type are 400/415."""
        before = self.snapshot()
        self.assertError(self.h.request("POST", "/jobs", raw=b"{nope"), 400, "body")
        self.assertError(self.h.request("POST", "/jobs", raw=b"\xff\xfe"), 400, "body")
        self.assertError(self.h.request("POST", "/jobs", raw=b"[" * 100_000), 400, "body")
        nan = json.dumps(job_body(self.puuid)).replace('"j"', "NaN").encode()
        self.assertError(self.h.request("POST", "/jobs", raw=nan), 400, "body")
        self.assertError(self.h.request("POST", "/jobs", raw=b""), 400, "body")
        for body in ("x", 5, None, True):
            self.assertError(self.h.request("POST", "/jobs", body), 400, "body")
        self.assertError(
            self.h.request("POST", "/jobs", job_body(self.puuid), content_type="text/plain"),
            415,
            "content-type",
        )
        self.assertError(
            self.h.request("POST", "/jobs", job_body(self.puuid), content_type=None),
            415,
            "content-type",
        )
        latin = self.h.request(
            "POST",
            "/jobs",
            job_body(self.puuid),
            headers={b"Content-Type": b"application/json\xff"},
        )
        self.assertError(latin, 400, "content-type")
        form = self.h.request(
            "POST", "/jobs", raw=b"a=b", content_type="application/x-www-form-urlencoded"
        )
        self.assertError(form, 415, "content-type")
        self.assertEqual(self.snapshot(), before)
        ok = self.h.request(
            "POST", "/jobs", job_body(self.puuid), content_type="application/json; charset=utf-8"
        )
        self.assertEqual(ok[0], 201)

    def test_oversized_body_413(self) -> None:
        """A body over max_body_bytes is 413 naming body, before it is parsed."""
        h = Harness(max_body_bytes=1000)
        project = h.project()
        before = h.dump()
        payload = job_body(project["uuid"], data="x" * 2000)
        self.assertError(h.request("POST", "/jobs", payload), 413, "body")
        self.assertError(h.request("POST", "/jobs", raw=b"{" * 2000), 413, "body")
        self.assertEqual(h.dump(), before)

    def test_read_size_is_checked_without_content_length(self) -> None:
        """Without a Content-Length, the bytes actually read are held to the limit."""
        request = DummyRequest([b"jobs"])
        request.content = BytesIO(b"[" + b"1," * 600 + b"1]")
        request.requestHeaders.setRawHeaders(b"content-type", [b"application/json"])
        call = Call(request, Principal("client"), {}, {}, 1000)
        error = self.assertRaises(APIError, call.json_body)
        self.assertEqual((error.status, list(error.fields)), (413, ["body"]))
        call = Call(request, Principal("client"), {}, {}, 2000)
        self.assertEqual(len(call.json_body()), 601)


class JobReadUpdateTests(APITestCase):
    def setUp(self) -> None:
        super().setUp()
        self.project = self.h.project()
        self.puuid = self.project["uuid"]
        self.job = self.h.job(self.puuid)

    def test_get_and_history_fields(self) -> None:
        """
        GET shows last_run_at/last_status from the newest execution and next_run_at from the
        scheduler.
        """
        for minute, state in ((5, "failed"), (6, "succeeded")):
            self.h.add_execution(
                execution_id=f"e{minute}",
                job_uuid=self.job["uuid"],
                project_uuid=self.puuid,
                scheduled_at=f"2026-01-02T03:0{minute}:00.000Z",
                state=state,
                started_at=f"2026-01-02T03:0{minute}:00.0{minute}0Z",
            )
        for prefix in PREFIXES:
            data = self.h.request("GET", f"{prefix}/jobs/{self.job['uuid']}")[2]["data"]
            self.assertEqual(
                (data["last_run_at"], data["last_status"], data["next_run_at"]),
                ("2026-01-02T03:06:00.060Z", "succeeded", "2030-01-01T00:00:00.000Z"),
            )
        self.assertError(self.h.request("GET", "/jobs/missing"), 404, "uuid")

    def test_list_filters(self) -> None:
        """GET /jobs filters by project_uuid and paused; an unknown project filter is 404."""
        other = self.h.project("other")
        paused = self.h.job(other["uuid"], paused=True)

        def uuids(query):
            status, _, body = self.h.request("GET", f"/jobs{query}")
            self.assertEqual(status, 200, body)
            return [j["uuid"] for j in body["data"]["items"]]

        self.assertEqual(uuids(""), [self.job["uuid"], paused["uuid"]])
        self.assertEqual(uuids(f"?project_uuid={other['uuid']}"), [paused["uuid"]])
        self.assertEqual(uuids("?paused=true"), [paused["uuid"]])
        self.assertEqual(uuids("?paused=false"), [self.job["uuid"]])
        self.assertError(self.h.request("GET", "/jobs?paused=maybe"), 400, "paused")
        self.assertError(self.h.request("GET", "/jobs?project_uuid=nope"), 404, "project_uuid")

    def test_patch_fields(self) -> None:
        """
        PATCH changes only the given fields and updated_at; the anchor stays when spec and timezone
        stay.
        """
        self.h.clock.advance(10)
        status, _, body = self.h.request(
            "PATCH", f"/jobs/{self.job['uuid']}", {"name": "renamed", "paused": True}
        )
        self.assertEqual(status, 200, body)
        data = body["data"]
        self.assertEqual(
            (data["name"], data["paused"], data["spec"]), ("renamed", True, "@every 1m")
        )
        self.assertEqual(data["updated_at"], "2026-01-02T03:04:15.678Z")
        self.assertEqual(data["anchor_at"], self.job["anchor_at"])
        command = self.h.proposer.proposed[-1]
        self.assertEqual(
            (command.op, dict(command.args)),
            (
                "update_job",
                {
                    "uuid": self.job["uuid"],
                    "changes": {"name": "renamed", "paused": True},
                    "updated_at": "2026-01-02T03:04:15.678Z",
                },
            ),
        )

    def test_spec_or_timezone_change_reanchors(self) -> None:
        """
        A spec or timezone change sets anchor_at to the update instant truncated to the second.
        """
        self.h.clock.advance(10)
        data = self.h.request("PUT", f"/jobs/{self.job['uuid']}", {"spec": "@every 90s"})[2]["data"]
        self.assertEqual(data["anchor_at"], "2026-01-02T03:04:15.000Z")
        self.assertEqual(
            self.h.stored_job(self.job["uuid"])["anchor_at"], "2026-01-02T03:04:15.000Z"
        )
        self.h.clock.advance(10)
        data = self.h.request("PATCH", f"/jobs/{self.job['uuid']}", {"timezone": "Asia/Tokyo"})[2][
            "data"
        ]
        self.assertEqual(data["anchor_at"], "2026-01-02T03:04:25.000Z")

    def test_stamps_and_anchors_follow_the_cluster_time(self) -> None:
        """
        In a cluster a job's created_at, updated_at and anchor_at come from
        the leader's clock as this node knows it (cluster_time), not from its
        own clock, which may be off.
        """
        leader_clock = [self.h.clock.seconds() - 300.0]
        h = Harness(cluster_time=lambda: leader_clock[0])
        project = h.project()
        job = h.job(project["uuid"])
        self.assertEqual(job["created_at"], "2026-01-02T02:59:05.678Z")
        self.assertEqual(job["anchor_at"], "2026-01-02T02:59:05.000Z")
        leader_clock[0] += 10
        data = h.request("PATCH", f"/jobs/{job['uuid']}", {"spec": "@every 90s"})[2]["data"]
        self.assertEqual(data["anchor_at"], "2026-01-02T02:59:15.000Z")
        self.assertEqual(data["updated_at"], "2026-01-02T02:59:15.678Z")

    def test_patch_without_changes_proposes_nothing(self) -> None:
        """A PATCH whose values equal the stored ones answers the job and proposes nothing."""
        count = len(self.h.proposer.proposed)
        status, _, body = self.h.request(
            "PATCH", f"/jobs/{self.job['uuid']}", {"spec": "@every 1m", "timeout_s": 30}
        )
        self.assertEqual(status, 200)
        self.assertEqual(body["data"]["updated_at"], self.job["updated_at"])
        self.assertEqual(len(self.h.proposer.proposed), count)

    def test_bad_updates(self) -> None:
        """
        Bad values, read-only or unknown fields, unknown jobs and projects are rejected; nothing
        changes.
        """
        before = self.snapshot()
        path = f"/jobs/{self.job['uuid']}"
        for method in ("PATCH", "PUT"):
            self.assertError(self.h.request(method, path, {"spec": "bogus"}), 400, "spec")
            self.assertError(self.h.request(method, path, {"uuid": "x"}), 400, "uuid")
            self.assertError(self.h.request(method, path, {"colour": 1}), 400, "colour")
            self.assertError(self.h.request(method, path, [1]), 400, "body")
            self.assertError(
                self.h.request(method, path, {"project_uuid": "nope"}), 404, "project_uuid"
            )
            self.assertError(self.h.request(method, "/jobs/missing", {"name": "x"}), 404, "uuid")
            self.assertError(self.h.request(method, path, raw=b"{"), 400, "body")
        self.assertEqual(self.snapshot(), before)

    def test_delete_job(self) -> None:
        """DELETE removes the job; it is 404 afterwards."""
        status, _, body = self.h.request("DELETE", f"/api/v1/jobs/{self.job['uuid']}")
        self.assertEqual((status, body["data"]), (200, {"uuid": self.job["uuid"]}))
        self.assertEqual(self.h.count_jobs(), 0)
        self.assertError(self.h.request("DELETE", f"/jobs/{self.job['uuid']}"), 404, "uuid")

    def test_run_now(self) -> None:
        """
        POST /jobs/{uuid}/run hands the job to the scheduler and answers 202 with its execution.
        """
        status, _, body = self.h.request("POST", f"/jobs/{self.job['uuid']}/run")
        self.assertEqual(status, 202, body)
        self.assertEqual(body["data"]["job_uuid"], self.job["uuid"])
        self.assertEqual([j["uuid"] for j in self.h.scheduler.ran], [self.job["uuid"]])
        self.assertError(self.h.request("POST", "/jobs/missing/run"), 404, "uuid")

    def test_next_runs_every(self) -> None:
        """/next lists @every slots counted from the anchor, in UTC and in the job's zone."""
        self.h.scheduler.next_text = "2026-01-02T03:05:05.000Z"
        self.h.request("PATCH", f"/jobs/{self.job['uuid']}", {"timezone": "America/New_York"})
        data = self.h.request("GET", f"/jobs/{self.job['uuid']}/next?n=3")[2]["data"]
        self.assertEqual(
            data["items"],
            [
                {"utc": "2026-01-02T03:05:05.000Z", "local": "2026-01-01T22:05:05.000-05:00"},
                {"utc": "2026-01-02T03:06:05.000Z", "local": "2026-01-01T22:06:05.000-05:00"},
                {"utc": "2026-01-02T03:07:05.000Z", "local": "2026-01-01T22:07:05.000-05:00"},
            ],
        )
        self.assertEqual((data["timezone"], data["paused"]), ("America/New_York", False))
        self.assertEqual(
            len(self.h.request("GET", f"/jobs/{self.job['uuid']}/next")[2]["data"]["items"]), 10
        )

    def test_next_runs_cron_in_zone(self) -> None:
        """/next evaluates cron specs in the job's zone."""
        self.h.scheduler.next_text = "2026-01-02T11:00:00.000Z"
        job = self.h.job(self.puuid, spec="0 12 * * *", timezone="Europe/Berlin")
        items = self.h.request("GET", f"/jobs/{job['uuid']}/next?n=2")[2]["data"]["items"]
        self.assertEqual(
            items,
            [
                {"utc": "2026-01-02T11:00:00.000Z", "local": "2026-01-02T12:00:00.000+01:00"},
                {"utc": "2026-01-03T11:00:00.000Z", "local": "2026-01-03T12:00:00.000+01:00"},
            ],
        )

    def test_next_runs_start_at_the_schedulers_next_slot(self) -> None:
        """
        After the wall clock stepped back, /next starts at the slot the
        scheduler fires next, not at instants already sent again.
        """
        # The clock went back: the scheduler sent every slot up to 03:06:05.
        self.h.scheduler.next_text = "2026-01-02T03:07:05.000Z"
        items = self.h.request("GET", f"/jobs/{self.job['uuid']}/next?n=2")[2]["data"]["items"]
        self.assertEqual(
            [item["utc"] for item in items],
            ["2026-01-02T03:07:05.000Z", "2026-01-02T03:08:05.000Z"],
        )

    def test_next_runs_at_the_end_of_time(self) -> None:
        """A slot that no local date can show (past 9999 in the job's zone) ends the list."""
        job = self.h.job(self.puuid, spec="@at 9999-12-31T23:59:59Z", timezone="Asia/Kolkata")
        status, _, body = self.h.request("GET", f"/jobs/{job['uuid']}/next")
        self.assertEqual((status, body["data"]["items"]), (200, []))

    def test_next_runs_one_shot_past(self) -> None:
        """An @at that has passed since the job was made has no next runs."""
        job = self.h.job(self.puuid, spec="@at 2026-01-02T03:05:00Z")
        self.h.clock.advance(60)
        self.assertEqual(self.h.request("GET", f"/jobs/{job['uuid']}/next")[2]["data"]["items"], [])

    def test_next_runs_bad_n(self) -> None:
        """n outside 1..100 or not an integer is 400 naming n; an unknown job is 404."""
        for n in ("0", "101", "x", ""):
            self.assertError(
                self.h.request("GET", f"/jobs/{self.job['uuid']}/next?n={n}"), 400, "n"
            )
        self.assertError(self.h.request("GET", "/jobs/missing/next"), 404, "uuid")


class ExecutionTests(APITestCase):
    def setUp(self) -> None:
        super().setUp()
        self.project = self.h.project()
        self.job = self.h.job(self.project["uuid"])
        for i in range(6):
            self.h.add_execution(
                execution_id=f"e{i}",
                job_uuid=self.job["uuid"] if i % 2 else "other",
                project_uuid=self.project["uuid"],
                scheduled_at=f"2026-01-02T03:0{i}:00.000Z",
                state="succeeded" if i % 3 else "failed",
            )

    def test_query_filters_passed_through(self) -> None:
        """
        Filters are checked, instants normalised to UTC milliseconds, and handed to the execution
        log.
        """
        status, _, body = self.h.request(
            "GET",
            "/executions?job_uuid=j&project_uuid=p&state=failed&since=2026-01-02T04:00:00%2B01:00&until=2026-01-03T00:00:00Z",
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(
            self.h.executions.queries[-1],
            {
                "job_uuid": "j",
                "project_uuid": "p",
                "state": "failed",
                "since": "2026-01-02T03:00:00.000Z",
                "until": "2026-01-03T00:00:00.000Z",
            },
        )

    def test_listing_and_paging(self) -> None:
        """GET /executions pages newest first; /jobs/{uuid}/executions only shows that job."""
        page = self.h.request("GET", "/executions?limit=4")[2]["data"]
        self.assertEqual([e["execution_id"] for e in page["items"]], ["e5", "e4", "e3", "e2"])
        self.assertEqual(page["total"], 6)
        page = self.h.request("GET", f"/executions?cursor={page['next_cursor']}")[2]["data"]
        self.assertEqual([e["execution_id"] for e in page["items"]], ["e1", "e0"])
        # node_id is an integer, as the document says (the column stores text).
        self.assertEqual({type(e["node_id"]) for e in page["items"]}, {int})
        page = self.h.request("GET", f"/api/v1/jobs/{self.job['uuid']}/executions?state=succeeded")[
            2
        ]["data"]
        self.assertEqual([e["execution_id"] for e in page["items"]], ["e5", "e1"])
        self.assertError(self.h.request("GET", "/jobs/missing/executions"), 404, "uuid")

    def test_bad_filters(self) -> None:
        """
        Unknown states, bad instants, until before since and unknown parameters are 400 naming them.
        """
        for query, field in (
            ("state=done", "state"),
            ("since=yesterday", "since"),
            ("until=2026-01-02T03:00:00", "until"),
            ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
            ("job=x", "job"),
        ):
            self.assertError(self.h.request("GET", f"/executions?{query}"), 400, field)
            self.assertError(
                self.h.request("GET", f"/jobs/{self.job['uuid']}/executions?{query}"), 400, field
            )


class CredentialTests(APITestCase):
    def test_create_use_archive(self) -> None:
        """
        A new credential's secret is shown once, stored only hashed, works at once, and stops
        working when archived.
        """
        status, _, body = self.h.request("POST", "/credentials", auth="admin")
        self.assertEqual(status, 201, body)
        created = body["data"]
        self.assertEqual(
            set(created), {"uuid", "api_key", "api_secret", "created_at", "projects", "role"}
        )
        self.assertEqual((created["projects"], created["role"]), (None, "write"))
        self.assertNotIn(created["api_secret"], self.h.dump())
        self.assertNotIn("api_secret", self.h.proposer.proposed[-1].args["credential"])
        headers = {"x-api-key": created["api_key"], "x-secret-key": created["api_secret"]}
        self.assertEqual(self.h.request("GET", "/projects", auth="none", headers=headers)[0], 200)

        listed = self.h.request("GET", "/credentials", auth="admin")[2]["data"]
        self.assertEqual(listed["total"], 2)
        for item in listed["items"]:
            self.assertNotIn("api_secret_hash", item)
            self.assertNotIn("api_secret", item)
        got = self.h.request("GET", f"/credentials/{created['uuid']}", auth="admin")[2]["data"]
        self.assertEqual((got["api_key"], got["archived_at"]), (created["api_key"], None))

        self.h.clock.advance(1)
        status, _, body = self.h.request("DELETE", f"/credentials/{created['uuid']}", auth="admin")
        self.assertEqual((status, body["data"]["archived_at"]), (200, "2026-01-02T03:04:06.678Z"))
        self.assertEqual(self.h.request("GET", "/projects", auth="none", headers=headers)[0], 401)
        count = len(self.h.proposer.proposed)
        self.assertEqual(
            self.h.request("DELETE", f"/credentials/{created['uuid']}", auth="admin")[0], 200
        )
        self.assertEqual(len(self.h.proposer.proposed), count)

    def test_create_accepts_empty_object(self) -> None:
        """POST /credentials with {} works; with fields it is 400 naming the field."""
        self.assertEqual(self.h.request("POST", "/credentials", {}, auth="admin")[0], 201)
        before = self.snapshot()
        self.assertError(
            self.h.request("POST", "/credentials", {"name": "x"}, auth="admin"), 400, "name"
        )
        self.assertEqual(self.snapshot(), before)

    def test_unknown_credential_404(self) -> None:
        """Unknown credential uuids are 404."""
        self.assertError(self.h.request("GET", "/credentials/nope", auth="admin"), 404, "uuid")
        self.assertError(self.h.request("DELETE", "/credentials/nope", auth="admin"), 404, "uuid")


class FailureTests(APITestCase):
    def test_store_unavailable_503(self) -> None:
        """When the proposal cannot commit, writes answer 503 with Retry-After: 1."""
        self.h.proposer.unavailable = True
        response = self.h.request("POST", "/projects", {"name": "a"})
        self.assertError(response, 503, code="unavailable")
        self.assertEqual(response[1]["retry-after"], "1")

    def test_a_write_that_may_have_been_applied_says_so(self) -> None:
        """
        A write the cluster did not confirm answers 503 saying it may still
        be applied and that the same Idempotency-Key makes a retry safe; a
        read only says to retry.
        """
        self.h.proposer.unavailable = True
        status, _, body = self.h.request("POST", "/projects", {"name": "a"})
        self.assertEqual(status, 503)
        self.assertIn("may still be applied", body["error"]["message"])
        self.assertIn("Idempotency-Key", body["error"]["message"])

    def test_a_write_retried_with_its_idempotency_key_is_applied_once(self) -> None:
        """
        The same POST /jobs sent twice with one Idempotency-Key creates its
        jobs once and answers the retry with the first answer; another body
        under that key is another request.
        """
        project = self.h.project()
        body = [
            {
                "project_uuid": project["uuid"],
                "name": f"job {n}",
                "spec": "@every 1m",
                "callback_url": "http://cb.test/hook",
            }
            for n in range(3)
        ]
        key = {"Idempotency-Key": "batch-0001"}
        first = self.h.request("POST", "/jobs", body, headers=key)
        before = self.h.count_jobs()
        again = self.h.request("POST", "/jobs", body, headers=key)
        self.assertEqual((first[0], again[0]), (201, 201))
        self.assertEqual(
            [j["uuid"] for j in again[2]["data"]], [j["uuid"] for j in first[2]["data"]]
        )
        self.assertEqual(self.h.count_jobs(), before)
        other = self.h.request("POST", "/jobs", body[:1], headers=key)
        self.assertEqual(other[0], 201)
        self.assertEqual(self.h.count_jobs(), before + 1)

    def test_a_malformed_idempotency_key_is_refused_naming_the_header(self) -> None:
        """A key with spaces or over 128 characters: 400 naming Idempotency-Key, nothing stored."""
        before = self.h.dump()
        for key in ("has space", "x" * 129, ""):
            self.assertError(
                self.h.request(
                    "POST", "/projects", {"name": "a"}, headers={"Idempotency-Key": key}
                ),
                400,
                "Idempotency-Key",
            )
        self.assertEqual(self.h.dump(), before)

    def test_state_machine_rejection_mapped(self) -> None:
        """
        A state machine result of conflict/not_found/invalid becomes 409/404/400 naming its field.
        """
        for code, status in (("conflict", 409), ("not_found", 404), ("invalid", 400)):
            self.h.proposer.rejection = Result.failure(code, "said no", "name")
            self.assertError(
                self.h.request("POST", "/projects", {"name": f"n-{code}"}), status, "name", code
            )

    def test_unexpected_error_500_logged_without_secrets(self) -> None:
        """An unexpected exception is a 500 envelope and is logged, without the secret headers."""
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        project = self.h.project()
        job = self.h.job(project["uuid"])
        self.h.scheduler.run_error = RuntimeError("kaput")
        self.assertError(self.h.request("POST", f"/jobs/{job['uuid']}/run"), 500, code="internal")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertNotIn(self.h.secret, repr(events))

    def test_a_client_that_went_away_is_not_an_error(self) -> None:
        """
        An answer cancelled because its client went away (a read that waited
        past the client's timeout) is not logged as an error.
        """
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        project = self.h.project()
        job = self.h.job(project["uuid"])
        self.h.scheduler.run_error = CancelledError()
        self.h.request("POST", f"/jobs/{job['uuid']}/run")
        self.assertEqual(self.flushLoggedErrors(CancelledError), [])
        self.assertFalse([e for e in events if e.get("log_level") == LogLevel.critical], events)


class OpenAPITests(APITestCase):
    def test_document_matches_url_map(self) -> None:
        """
        Every Klein rule is in the document and every documented operation is a Klein rule, under
        both prefixes.
        """
        status, _, body = self.h.request("GET", "/api/v1/openapi.json")
        self.assertEqual(status, 200)
        self.assertEqual(body["openapi"], "3.1.0")
        documented = {
            (path, method.upper()) for path, ops in body["paths"].items() for method in ops
        }
        served: dict[str, set] = {prefix: set() for prefix in PREFIXES}
        beside: set[str] = set()
        for rule in self.h.api.app.url_map.iter_rules():
            prefix = "/api/v1" if rule.rule.startswith("/api/v1/") else ""
            path = rule.rule[len(prefix) :]
            if path.startswith("/ui") or path in ("/metrics", "/"):
                # The dashboard's files (and / pointing to them) and the
                # Prometheus text are served beside the JSON API the document
                # describes.
                beside.add(rule.rule)
                continue
            path = re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", path)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                served[prefix].add((path, method))
        for prefix in PREFIXES:
            self.assertEqual(served[prefix], documented, prefix)
        self.assertEqual(
            beside,
            {"/", "/ui", "/ui/", "/ui/<path:__rest__>", "/metrics", "/api/v1/metrics"},
        )
        self.assertIn("/cluster/members/{node_id}", body["paths"])
        self.assertEqual([s["url"] for s in body["servers"]], ["/api/v1", "/"])

    def test_document_schemas_resolve(self) -> None:
        """Every $ref in the document names a component schema."""
        body = self.h.request("GET", "/openapi.json")[2]
        refs = set()

        def walk(node):
            if isinstance(node, dict):
                if "$ref" in node:
                    refs.add(node["$ref"].rsplit("/", 1)[-1])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(body)
        self.assertTrue(refs)
        self.assertLessEqual(refs, set(body["components"]["schemas"]))


class ConsistencyTests(SynchronousTestCase):
    def test_read_barrier_before_linearizable_reads(self) -> None:
        """
        GETs of replicated state wait for the read barrier unless
        ?consistency=stale; writes and the health check do not.
        """
        barriers: list = []
        h = Harness(read_barrier=lambda: barriers.append(1))
        project = h.project()
        self.assertEqual(barriers, [])
        self.assertEqual(h.request("GET", f"/projects/{project['uuid']}")[0], 200)
        self.assertEqual(h.request("GET", "/jobs?consistency=linearizable")[0], 200)
        self.assertEqual(len(barriers), 2)
        self.assertEqual(h.request("GET", "/jobs?consistency=stale")[0], 200)
        self.assertEqual(h.request("GET", "/healthcheck", auth="none")[0], 200)
        self.assertEqual(len(barriers), 2)
        status, _, body = h.request("GET", "/jobs?consistency=eventual")
        self.assertEqual((status, list(body["error"]["fields"])), (400, ["consistency"]))

    def test_barrier_failure_is_503(self) -> None:
        """A read barrier that cannot reach a quorum answers 503 with Retry-After."""
        h = Harness(read_barrier=lambda: fail(StoreUnavailable("no quorum")))
        status, headers, _ = h.request("GET", "/projects")
        self.assertEqual((status, headers.get("retry-after")), (503, "1"))


class ProgrammaticTests(SynchronousTestCase):
    def test_create_credential_directly(self) -> None:
        """
        create_credential() (used by a new node) stores a hashed credential
        and returns its secret.
        """
        h = Harness()
        created = self.successResultOf(h.api.create_credential())
        self.assertEqual(set(created), {"uuid", "api_key", "api_secret", "created_at"})
        self.assertNotIn(created["api_secret"], h.dump())
        self.assertIn(created["api_key"], h.dump())
        headers = {"x-api-key": created["api_key"], "x-secret-key": created["api_secret"]}
        self.assertEqual(h.request("GET", "/projects", auth="none", headers=headers)[0], 200)


class CallbackPolicyTests(SynchronousTestCase):
    """CallbackAllowNetworks/CallbackDenyNetworks at job create and update."""

    def setUp(self) -> None:
        self.lookups: list[str] = []
        names = {"cb.test": ["192.0.2.10"], "evil.test": ["10.1.2.3"]}

        def resolve(host: str):
            self.lookups.append(host)
            return succeed(names.get(host, []))

        policy = NetworkPolicy.from_config((), ("10.0.0.0/8", "169.254.169.254"))
        self.h = Harness(net_policy=policy, resolve=resolve)
        self.puuid = self.h.project()["uuid"]

    def assertRefused(self, response, field: str) -> None:
        status, _, body = response
        self.assertEqual(status, 400, body)
        self.assertIn(field, body["error"]["fields"])
        self.assertIn("CallbackDenyNetworks", body["error"]["message"])

    def test_denied_address_is_refused(self) -> None:
        """A URL whose host is a denied address is 400 naming callback_url; nothing is stored."""
        before = self.h.dump()
        self.assertRefused(
            self.h.request("POST", "/jobs", job_body(self.puuid, callback_url="http://10.0.0.5/x")),
            "callback_url",
        )
        self.assertRefused(
            self.h.request(
                "POST",
                "/jobs",
                [
                    job_body(self.puuid),
                    job_body(self.puuid, callback_url="http://169.254.169.254/latest"),
                ],
            ),
            "jobs[1].callback_url",
        )
        self.assertEqual(self.h.dump(), before)

    def test_name_resolving_to_denied_address_is_refused(self) -> None:
        """A DNS name is judged by the addresses it resolves to."""
        before = self.h.dump()
        self.assertRefused(
            self.h.request("POST", "/jobs", job_body(self.puuid, callback_url="http://evil.test/")),
            "callback_url",
        )
        self.assertEqual(self.h.dump(), before)
        self.assertIn("evil.test", self.lookups)
        self.assertEqual(self.h.request("POST", "/jobs", job_body(self.puuid))[0], 201)

    def test_update_to_denied_address_is_refused(self) -> None:
        """Changing callback_url to a denied target is refused and the job keeps its URL."""
        job = self.h.job(self.puuid)
        before = self.h.dump()
        self.assertRefused(
            self.h.request("PATCH", f"/jobs/{job['uuid']}", {"callback_url": "http://evil.test/"}),
            "callback_url",
        )
        self.assertEqual(self.h.dump(), before)
        status, _, body = self.h.request(
            "PATCH", f"/jobs/{job['uuid']}", {"callback_url": "http://cb.test/other"}
        )
        self.assertEqual((status, body["data"]["callback_url"]), (200, "http://cb.test/other"))


class UUIDTests(SynchronousTestCase):
    def test_new_ids_are_time_ordered_version_7(self) -> None:
        """New ids are UUIDv7: unique, led by the creation millisecond, so they sort by time."""
        import time
        import uuid

        from scheduler0.api.app import _default_uuid

        made = [_default_uuid() for _ in range(1000)]
        self.assertEqual(len(set(made)), 1000)
        self.assertEqual({uuid.UUID(u).version for u in made}, {7})
        self.assertEqual({uuid.UUID(u).variant for u in made}, {uuid.RFC_4122})
        # The leading 48 bits are the creation millisecond: never decreasing.
        millis = [int(u.replace("-", "")[:12], 16) for u in made]
        self.assertEqual(millis, sorted(millis))
        self.assertLess(abs(millis[-1] / 1000 - time.time()), 5)
