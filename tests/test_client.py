"""
Tests for the Python client, L{scheduler0.client}: request building and
error mapping in memory, both transports with fakes, and both clients
against a real node.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError as TwistedConnectionRefused
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource

from harness.process import (
    PEER_PASSWORD,
    PEER_USERNAME,
    client_headers,
    prepare_single_node,
)
from scheduler0.client import APIError, AsyncClient, Client, NodeUnreachable, Request
from scheduler0.client.operations import Operations, parse_response, retry_delay

ENDPOINT = "http://node:9091"
JOB = {"project_uuid": "p1", "name": "n", "spec": "@every 1m", "callback_url": "http://h/cb"}


def ok(data: Any, status: int = 200) -> tuple[int, dict, bytes]:
    return status, {}, json.dumps({"success": True, "data": data}).encode()


def failed(
    status: int,
    message: str,
    fields: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict, bytes]:
    body = {
        "success": False,
        "data": None,
        "error": {"code": "x", "message": message, "fields": dict(fields or {})},
    }
    return status, dict(headers or {}), json.dumps(body).encode()


class FakeTransport:
    """Answers the sync client's requests from a script and records them."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        self.requests.append(
            {
                "method": method,
                "url": url,
                "headers": dict(headers),
                "body": None if body is None else json.loads(body),
            }
        )
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class RequestBuildingTests(SynchronousTestCase):
    """Each operation describes one request; both clients send exactly that."""

    def build(self, name: str, *args: Any, **kwargs: Any) -> Request:
        return getattr(Operations, name).build(*args, **kwargs)

    def test_every_operation_builds_its_route(self) -> None:
        """Every operation names the method and path of its route in the API's table."""
        from scheduler0.api.routes import ROUTES

        served = {(r.method, r.openapi_path) for r in ROUTES}
        cases = {
            "health": (),
            "live": (),
            "openapi": (),
            "create_project": ("a",),
            "list_projects": (),
            "get_project": ("u",),
            "update_project": ("u",),
            "delete_project": ("u",),
            "rotate_signing_secret": ("u",),
            "create_job": (JOB,),
            "create_many": ([JOB],),
            "list_jobs": (),
            "get_job": ("u",),
            "update_job": ("u", {"name": "x"}),
            "pause_job": ("u",),
            "resume_job": ("u",),
            "delete_job": ("u",),
            "pause_jobs": ("team=x",),
            "resume_jobs": ("team=x",),
            "delete_jobs": ("team=x",),
            "run_job": ("u",),
            "next_runs": ("u",),
            "preview_schedule": ("@hourly",),
            "list_executions": (),
            "job_executions": ("u",),
            "execution_summary": (),
            "cluster_status": (),
            "add_member": (2, "http://h:1", "h:2"),
            "remove_member": (2,),
            "create_credential": (),
            "seal_signing_secrets": (),
            "list_credentials": (),
            "get_credential": ("u",),
            "archive_credential": ("u",),
            "list_audit": (),
        }
        covered = set()
        for name, args in cases.items():
            request = self.build(name, *args)
            path = request.path.replace("/u", "/{uuid}").replace("/2", "/{node_id}")
            self.assertIn((request.method, path), served, name)
            covered.add((request.method, path))
        # Every route but PUT /jobs/{uuid} and PATCH /projects/{uuid} (the
        # other method does the same) and GET /backup (a file, not a JSON
        # answer: `scheduler0 backup` streams it to disk) has an operation.
        self.assertEqual(
            served - covered,
            {("PUT", "/jobs/{uuid}"), ("PATCH", "/projects/{uuid}"), ("GET", "/backup")},
        )

    def test_list_filters_go_in_the_query(self) -> None:
        """Filters that are given become query parameters; booleans are true/false."""
        request = self.build("list_jobs", project_uuid="p", paused=False, limit=5)
        self.assertEqual(
            request.url(ENDPOINT), ENDPOINT + "/api/v1/jobs?project_uuid=p&paused=false&limit=5"
        )
        request = self.build("list_executions", state="failed", since="2026-01-01T00:00:00Z")
        self.assertEqual(dict(request.query), {"state": "failed", "since": "2026-01-01T00:00:00Z"})
        self.assertEqual(
            self.build("delete_project", "u", cascade=True).query, (("cascade", "true"),)
        )
        self.assertEqual(self.build("delete_project", "u").query, ())

    def test_endpoint_with_prefix_is_not_doubled(self) -> None:
        """An endpoint given with /api/v1 (and a trailing slash) gets no second prefix."""
        request = self.build("get_job", "a b/c")
        self.assertEqual(request.url(ENDPOINT + "/api/v1/"), ENDPOINT + "/api/v1/jobs/a%20b%2Fc")

    def test_next_page_replaces_offset_with_cursor(self) -> None:
        """The next page keeps the filters and swaps offset/cursor for the new cursor."""
        request = self.build("list_jobs", paused=True, offset=3).next_page("CUR")
        self.assertEqual(request.query, (("paused", "true"), ("cursor", "CUR")))

    def test_pause_and_resume_patch_paused(self) -> None:
        """pause_job and resume_job are PATCHes of the paused field."""
        self.assertEqual(self.build("pause_job", "u").body, {"paused": True})
        self.assertEqual(self.build("resume_job", "u").method, "PATCH")
        self.assertEqual(self.build("resume_job", "u").body, {"paused": False})

    def test_create_many_always_has_an_idempotency_key(self) -> None:
        """An array create carries an Idempotency-Key: the given one, else a fresh one."""
        given = self.build("create_many", [JOB], idempotency_key="k-1")
        self.assertEqual(given.headers({})["Idempotency-Key"], "k-1")
        first, second = self.build("create_many", [JOB]), self.build("create_many", [JOB])
        self.assertTrue(first.idempotency_key)
        self.assertNotEqual(first.idempotency_key, second.idempotency_key)
        self.assertEqual(first.body, [JOB])

    def test_selector_and_bulk_requests(self) -> None:
        """
        list_jobs takes a selector; the bulk calls POST /jobs/<action> with the
        selector (and project) in the query, always under an Idempotency-Key.
        """
        request = self.build("list_jobs", selector="team=billing,env!=prod")
        self.assertEqual(dict(request.query), {"selector": "team=billing,env!=prod"})
        request = self.build("pause_jobs", "team=a", project_uuid="p")
        self.assertEqual((request.method, request.path), ("POST", "/jobs/bulk/pause"))
        self.assertEqual(request.query, (("selector", "team=a"), ("project_uuid", "p")))
        self.assertTrue(request.idempotency_key)
        self.assertTrue(request.may_retry)
        self.assertEqual(self.build("delete_jobs", "a", idempotency_key="k").idempotency_key, "k")
        self.assertEqual(self.build("resume_jobs", "a").path, "/jobs/bulk/resume")

    def test_auth_headers(self) -> None:
        """A key pair is sent as x-api-key/x-secret-key, admin credentials as HTTP Basic."""
        transport = FakeTransport(ok({}), ok({}))
        Client(ENDPOINT, "key", "secret", transport=transport).cluster_status()
        Client(ENDPOINT, username="admin", password="pw", transport=transport).cluster_status()
        keyed, basic = (r["headers"] for r in transport.requests)
        self.assertEqual((keyed["x-api-key"], keyed["x-secret-key"]), ("key", "secret"))
        token = base64.b64encode(b"admin:pw").decode()
        self.assertEqual(basic["Authorization"], f"Basic {token}")
        self.assertNotIn("x-api-key", basic)

    def test_half_credentials_are_refused(self) -> None:
        """A key without its secret (or a user without a password) is a ValueError."""
        self.assertRaises(ValueError, Client, ENDPOINT, "key")
        self.assertRaises(ValueError, Client, ENDPOINT, username="admin")
        self.assertRaises(ValueError, Client, ENDPOINT, "k", "s", username="a", password="p")

    def test_repr_hides_secrets(self) -> None:
        """The client's repr names the endpoint and nothing secret."""
        self.assertNotIn("secret", repr(Client(ENDPOINT, "key", "secret")))


class ErrorMappingTests(SynchronousTestCase):
    """Answers become data or one APIError class."""

    request = Request("GET", "/jobs")

    def test_success_answers_data(self) -> None:
        """A 2xx envelope answers its data."""
        status, headers, raw = ok({"a": 1})
        self.assertEqual(parse_response(self.request, status, headers, raw), {"a": 1})

    def test_error_envelope_becomes_api_error(self) -> None:
        """An error envelope raises APIError with the status, code, message and fields."""
        status, headers, raw = failed(400, "spec: bad", {"spec": "bad"})
        error = self.assertRaises(APIError, parse_response, self.request, status, headers, raw)
        self.assertEqual(
            (error.status, error.code, error.message, error.fields),
            (400, "x", "spec: bad", {"spec": "bad"}),
        )
        self.assertEqual(str(error), "400 spec: bad")

    def test_retry_after_is_read(self) -> None:
        """Retry-After of a 429/503 is on the error (any header case)."""
        status, headers, raw = failed(429, "slow down", headers={"retry-after": "3"})
        error = self.assertRaises(APIError, parse_response, self.request, status, headers, raw)
        self.assertEqual(error.retry_after, 3.0)

    def test_an_unready_health_check_keeps_its_data(self) -> None:
        """A 503 from the health check is an APIError that still carries the health data."""
        health = {"node_id": 2, "ready": False, "reasons": [{"code": "no_leader", "message": "m"}]}
        raw = json.dumps(
            {
                "success": False,
                "data": health,
                "error": {"code": "not_ready", "message": "not ready", "fields": {}},
            }
        ).encode()
        request = Operations.health.build()
        error = self.assertRaises(APIError, parse_response, request, 503, {}, raw)
        self.assertEqual((error.status, error.code, error.data), (503, "not_ready", health))
        status, headers, raw = failed(400, "spec: bad", {"spec": "bad"})
        error = self.assertRaises(APIError, parse_response, self.request, status, headers, raw)
        self.assertIsNone(error.data)

    def test_non_json_answer_is_an_api_error(self) -> None:
        """A proxy's HTML error page is an APIError with code bad_response, not a crash."""
        error = self.assertRaises(APIError, parse_response, self.request, 502, {}, b"<html>bad")
        self.assertEqual((error.status, error.code), (502, "bad_response"))
        self.assertIn("<html>bad", error.message)

    def test_openapi_has_no_envelope(self) -> None:
        """The OpenAPI document is returned as served."""
        request = Operations.openapi.build()
        self.assertEqual(
            parse_response(request, 200, {}, b'{"openapi":"3.1.0"}'), {"openapi": "3.1.0"}
        )

    def test_retry_policy(self) -> None:
        """
        Reads are retried after 429/503/no answer; a write only under an
        Idempotency-Key (a 503 may still apply), except 429, which was not
        applied; other errors never.
        """
        read, write = Request("GET", "/jobs"), Request("POST", "/jobs", body={})
        keyed = Request("POST", "/jobs", body=[], idempotency_key="k")
        busy, limited = APIError(503, "unavailable", "m"), APIError(429, "rate", "m")
        gone = NodeUnreachable(ENDPOINT, "refused")
        self.assertIsNotNone(retry_delay(read, busy, 0))
        self.assertIsNotNone(retry_delay(read, gone, 0))
        self.assertIsNone(retry_delay(write, busy, 0))
        self.assertIsNone(retry_delay(write, gone, 0))
        self.assertIsNotNone(retry_delay(write, limited, 0))
        self.assertIsNotNone(retry_delay(keyed, busy, 0))
        self.assertIsNone(retry_delay(read, APIError(404, "not_found", "m"), 0))
        self.assertLess(retry_delay(read, busy, 0), retry_delay(read, busy, 3))
        limited.retry_after = 4
        self.assertEqual(retry_delay(read, limited, 0), 4)


class SyncClientTests(SynchronousTestCase):
    """The blocking client with a fake transport."""

    def test_connection_failure_names_the_endpoint(self) -> None:
        """No answer raises NodeUnreachable, a ConnectionError naming the endpoint."""
        client = Client(ENDPOINT, transport=FakeTransport(ConnectionRefusedError(111, "x")))
        error = self.assertRaises(ConnectionError, client.health)
        self.assertIsInstance(error, NodeUnreachable)
        self.assertIn(ENDPOINT, str(error))
        self.assertIn("refused", str(error))

    def test_retries_reuse_the_idempotency_key(self) -> None:
        """create_many after a 503 and a lost connection is sent again with the same key."""
        transport = FakeTransport(
            failed(503, "busy", headers={"Retry-After": "1"}), TimeoutError(), ok([{"uuid": "j"}])
        )
        slept: list[float] = []
        client = Client(ENDPOINT, "k", "s", retries=3, transport=transport, sleep=slept.append)
        self.assertEqual(client.create_many([JOB]), [{"uuid": "j"}])
        keys = {r["headers"]["Idempotency-Key"] for r in transport.requests}
        self.assertEqual(len(transport.requests), 3)
        self.assertEqual(len(keys), 1)
        self.assertEqual(len(slept), 2)

    def test_unkeyed_write_is_not_retried(self) -> None:
        """A single create that got a 503 raises it: sending it again could apply it twice."""
        transport = FakeTransport(failed(503, "busy"), ok({}))
        client = Client(ENDPOINT, "k", "s", retries=3, transport=transport, sleep=lambda s: None)
        error = self.assertRaises(APIError, client.create_job, JOB)
        self.assertEqual(error.status, 503)
        self.assertEqual(len(transport.requests), 1)

    def test_retries_give_up(self) -> None:
        """After `retries` more tries the last error is raised."""
        transport = FakeTransport(*[failed(503, "busy")] * 3)
        client = Client(ENDPOINT, retries=2, transport=transport, sleep=lambda s: None)
        self.assertRaises(APIError, client.list_jobs)
        self.assertEqual(len(transport.requests), 3)

    def test_iteration_follows_cursors(self) -> None:
        """iter_jobs walks every page through next_cursor, keeping the filters."""
        transport = FakeTransport(
            ok({"items": [1, 2], "next_cursor": "c1"}), ok({"items": [3], "next_cursor": None})
        )
        client = Client(ENDPOINT, "k", "s", transport=transport)
        self.assertEqual(list(client.iter_jobs(project_uuid="p", limit=2)), [1, 2, 3])
        self.assertEqual(
            transport.requests[1]["url"], ENDPOINT + "/api/v1/jobs?project_uuid=p&limit=2&cursor=c1"
        )

    def test_body_and_method(self) -> None:
        """update_job sends a PATCH with the changes as JSON."""
        transport = FakeTransport(ok({"uuid": "u"}))
        Client(ENDPOINT, "k", "s", transport=transport).update_job("u", {"spec": "@daily"})
        (request,) = transport.requests
        self.assertEqual((request["method"], request["body"]), ("PATCH", {"spec": "@daily"}))
        self.assertEqual(request["headers"]["Content-Type"], "application/json")


class _Recorder(Resource):
    """A web resource answering from a script, for StubTreq."""

    isLeaf = True

    def __init__(self, *answers: tuple[int, dict, bytes]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.seen: list[tuple[bytes, bytes, bytes | None, bytes]] = []

    def render(self, request: Any) -> bytes:
        self.seen.append(
            (
                request.method,
                request.uri,
                request.getHeader(b"idempotency-key"),
                request.content.read(),
            )
        )
        status, headers, raw = self.answers.pop(0)
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode())
        return raw


class AsyncClientTests(SynchronousTestCase):
    """The Deferred client on a stub treq."""

    def client(self, resource: Resource, **kwargs: Any) -> AsyncClient:
        self.clock = Clock()
        return AsyncClient(
            ENDPOINT, "k", "s", reactor=self.clock, http=StubTreq(resource), **kwargs
        )

    def test_answers_data(self) -> None:
        """A method's Deferred fires with the answer's data, sent as the operation says."""
        resource = _Recorder(ok({"uuid": "j"}, 201))
        result = self.successResultOf(self.client(resource).create_job(JOB))
        self.assertEqual(result, {"uuid": "j"})
        method, uri, _key, body = resource.seen[0]
        self.assertEqual((method, uri), (b"POST", b"/api/v1/jobs"))
        self.assertEqual(json.loads(body), JOB)

    def test_error_answer_fails_with_api_error(self) -> None:
        """An error envelope fails the Deferred with the same APIError as the sync client."""
        resource = _Recorder(failed(404, "uuid: no job", {"uuid": "no job"}))
        error = self.failureResultOf(self.client(resource).get_job("x"), APIError).value
        self.assertEqual((error.status, error.fields), (404, {"uuid": "no job"}))

    def test_retry_waits_on_the_reactor(self) -> None:
        """A retried 503 waits Retry-After on the injected clock, then succeeds."""
        resource = _Recorder(failed(503, "busy", headers={"Retry-After": "2"}), ok([{"uuid": "j"}]))
        d = self.client(resource, retries=1).create_many([JOB], idempotency_key="key-1")
        self.assertNoResult(d)
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(d), [{"uuid": "j"}])
        self.assertEqual([seen[2] for seen in resource.seen], [b"key-1", b"key-1"])

    def test_connection_failure(self) -> None:
        """A refused connection fails with NodeUnreachable naming the endpoint."""

        class Refusing:
            def request(self, *args: Any, **kwargs: Any) -> Deferred:
                return fail(TwistedConnectionRefused())

        client = AsyncClient(ENDPOINT, reactor=Clock(), http=Refusing())
        error = self.failureResultOf(client.health(), NodeUnreachable).value
        self.assertIn(ENDPOINT, str(error))

    def test_iteration(self) -> None:
        """iter_executions is an async iterator over every page."""
        resource = _Recorder(
            ok({"items": [1], "next_cursor": "c"}), ok({"items": [2], "next_cursor": None})
        )
        client = self.client(resource)

        async def collect() -> list:
            return [item async for item in client.iter_executions(state="failed")]

        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(collect())), [1, 2])
        self.assertEqual(resource.seen[1][1], b"/api/v1/executions?state=failed&cursor=c")


class RealNodeTests(TestCase):
    """Both clients against a real twistd node."""

    timeout = 60

    async def start_node(self) -> tuple[Any, dict[str, str]]:
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(node.kill)
        await node.start()
        return node, await client_headers(node)

    async def test_sync_client(self) -> None:
        """
        The blocking client creates, lists (every page), changes, runs and
        deletes projects and jobs, and reports errors with the API's fields.
        """
        node, headers = await self.start_node()
        client = Client(node.url, headers["x-api-key"], headers["x-secret-key"])
        self.assertEqual(client.health()["role"], "leader")
        project = client.create_project("sync", "from the client")
        self.assertTrue(project["signing_secret"])
        jobs = client.create_many(
            [
                {
                    **JOB,
                    "project_uuid": project["uuid"],
                    "name": f"j{i}",
                    "callback_url": "http://127.0.0.1:9/cb",
                    "paused": True,
                }
                for i in range(5)
            ]
        )
        self.assertEqual(len(jobs), 5)
        listed = list(client.iter_jobs(project_uuid=project["uuid"], limit=2))
        self.assertEqual(sorted(j["uuid"] for j in listed), sorted(j["uuid"] for j in jobs))
        job = jobs[0]["uuid"]
        self.assertFalse(client.resume_job(job)["paused"])
        self.assertTrue(client.pause_job(job)["paused"])
        self.assertEqual(client.update_job(job, {"spec": "@daily"})["spec"], "@daily")
        self.assertEqual(len(client.next_runs(job, 3)["items"]), 3)
        self.assertEqual(client.run_job(job)["job_uuid"], job)
        self.assertIsInstance(client.list_executions(job_uuid=job)["items"], list)
        self.assertIsInstance(client.job_executions(job)["items"], list)
        error = self.assertRaises(APIError, client.update_job, job, {"spec": "nonsense"})
        self.assertEqual((error.status, list(error.fields)), (400, ["spec"]))
        error = self.assertRaises(APIError, client.delete_project, project["uuid"])
        self.assertEqual(error.status, 409)
        deleted = client.delete_project(project["uuid"], cascade=True)
        self.assertEqual(len(deleted["deleted_jobs"]), 5)
        self.assertEqual(self.assertRaises(APIError, client.get_job, job).status, 404)
        self.assertIn("/jobs", client.openapi()["paths"])
        # Admin-only calls with the admin credentials.
        admin = Client(node.url, username=PEER_USERNAME, password=PEER_PASSWORD)
        credential = admin.create_credential()
        self.assertIn(credential["uuid"], [c["uuid"] for c in admin.iter_credentials()])
        self.assertTrue(admin.archive_credential(credential["uuid"])["archived_at"])
        self.assertEqual(self.assertRaises(APIError, client.create_credential).status, 401)
        self.assertIn("members", admin.cluster_status())

    async def test_async_client(self) -> None:
        """The Deferred client does the same through treq."""
        node, headers = await self.start_node()
        from harness.process import http_client

        client = AsyncClient(
            node.url,
            headers["x-api-key"],
            headers["x-secret-key"],
            reactor=reactor,
            http=http_client(reactor),
        )
        project = await client.create_project("async")
        job = await client.create_job(
            {**JOB, "project_uuid": project["uuid"], "callback_url": "http://127.0.0.1:9/cb"}
        )
        again = await client.create_many(
            [{**JOB, "project_uuid": project["uuid"], "callback_url": "http://127.0.0.1:9/cb"}] * 3,
            idempotency_key="same-batch",
        )
        repeated = await client.create_many(
            [{**JOB, "project_uuid": project["uuid"], "callback_url": "http://127.0.0.1:9/cb"}] * 3,
            idempotency_key="same-batch",
        )
        self.assertEqual([j["uuid"] for j in again], [j["uuid"] for j in repeated])
        seen = [j["uuid"] async for j in client.iter_jobs(project_uuid=project["uuid"], limit=1)]
        self.assertEqual(len(seen), 4)
        self.assertTrue((await client.pause_job(job["uuid"]))["paused"])
        self.assertEqual((await client.get_job(job["uuid"]))["paused"], True)
        await client.delete_job(job["uuid"])
        try:
            await client.get_job(job["uuid"])
        except APIError as error:
            self.assertEqual(error.status, 404)
        else:
            self.fail("a deleted job was found")
        self.assertEqual((await client.cluster_status())["members"][0]["node_id"], 1)
