"""
The job fields of issue 14 (concurrency_policy, coalesce, retry_delay_s,
retry_max_delay_s), a project's notify_url, and the refusals at creation of
jobs that could never run (data too large for a callback, an @at in the
past): through the API, and in the OpenAPI document. (The store's side:
tests/test_state_fields.py.)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs
from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.api.openapi import SCHEMAS, build_openapi
from scheduler0.api.payload import callback_item_bytes, data_problem, payload_cap_bytes
from scheduler0.api.routes import ROUTES
from scheduler0.api.validation import (
    JOB_CHECKS,
    MAX_RETRY_DELAY_S,
    PROJECT_CHECKS,
    at_instant,
    past_at_problem,
)
from scheduler0.delivery import Delivery, job_members_json
from scheduler0.executor.http import _body_size, _encode
from scheduler0.netpolicy import NetworkPolicy
from scheduler0.store.state import CONCURRENCY_POLICIES
from tests.support.api import Defaults, Harness

T0 = "2026-01-01T00:00:00.000Z"
NEW_DEFAULTS = {
    "retry_delay_s": 1.0,
    "retry_max_delay_s": 60.0,
    "concurrency_policy": "allow",
    "coalesce": False,
}
# The Harness clock: 2026-01-02T03:04:05.678Z.
NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def job_body(puuid: str, **fields: Any) -> dict:
    body = {
        "project_uuid": puuid,
        "name": "j",
        "spec": "@every 1m",
        "callback_url": "http://cb.test/hook",
    }
    body.update(fields)
    return body


# -- the API ------------------------------------------------------------------------


class FieldsTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = self.harness()
        self.puuid = self.h.project()["uuid"]

    def harness(self) -> Harness:
        return Harness()

    def assertError(self, response: Any, status: int, field: str) -> dict:
        got, _, body = response
        self.assertEqual(got, status, body)
        self.assertIn(field, body["error"]["fields"], body)
        self.assertIn(field, body["error"]["message"], body)
        return body["error"]

    def create(self, body: Any) -> tuple[int, Any]:
        status, _, answer = self.h.request("POST", "/jobs", body)
        return status, answer


class JobFieldAPITests(FieldsTestCase):
    def test_defaults_in_every_answer(self) -> None:
        """
        A job created without the new fields has their defaults in the
        create answer, GET and the list; the command leaves them out (so an
        earlier release applies it too).
        """
        job = self.h.job(self.puuid)
        self.assertEqual({k: job[k] for k in NEW_DEFAULTS}, NEW_DEFAULTS)
        command = self.h.proposer.proposed[-1]
        self.assertFalse(set(NEW_DEFAULTS) & set(command.args["jobs"][0]))
        got = self.h.request("GET", f"/jobs/{job['uuid']}")[2]["data"]
        listed = self.h.request("GET", "/jobs")[2]["data"]["items"][0]
        for answer in (got, listed):
            self.assertEqual({k: answer[k] for k in NEW_DEFAULTS}, NEW_DEFAULTS)
            self.assertIs(answer["coalesce"], False)

    def test_config_defaults(self) -> None:
        """JobExecutionRetryDelay and JobExecutionRetryMaxDelay are the numbers' defaults."""
        h = Harness(defaults=Defaults(job_execution_retry_delay=2, job_execution_retry_max_delay=9))
        job = h.job(h.project()["uuid"])
        self.assertEqual((job["retry_delay_s"], job["retry_max_delay_s"]), (2.0, 9.0))
        sent = h.proposer.proposed[-1].args["jobs"][0]
        self.assertEqual((sent["retry_delay_s"], sent["retry_max_delay_s"]), (2.0, 9.0))
        self.assertNotIn("coalesce", sent)

    def test_given_values_are_stored_and_answered(self) -> None:
        """Every policy, coalesce and the delays are stored as given (numbers as floats)."""
        for policy in CONCURRENCY_POLICIES:
            job = self.h.job(
                self.puuid,
                concurrency_policy=policy,
                coalesce=True,
                retry_delay_s=0,
                retry_max_delay_s=MAX_RETRY_DELAY_S,
            )
            stored = self.h.stored_job(job["uuid"])
            for answer in (job, stored):
                self.assertEqual(
                    (
                        answer["concurrency_policy"],
                        answer["coalesce"],
                        answer["retry_delay_s"],
                        answer["retry_max_delay_s"],
                    ),
                    (policy, True, 0.0, 86400.0),
                )
        job = self.h.job(self.puuid, retry_delay_s=60, retry_max_delay_s=60)
        self.assertEqual((job["retry_delay_s"], job["retry_max_delay_s"]), (60.0, 60.0))

    def test_bad_values_are_400_naming_the_field_and_store_nothing(self) -> None:
        """Wrong types, unknown policies, out-of-range numbers: 400 naming the field."""
        before = self.h.dump()
        cases = [
            ({"concurrency_policy": "Forbid"}, "concurrency_policy"),
            ({"concurrency_policy": None}, "concurrency_policy"),
            ({"concurrency_policy": 1}, "concurrency_policy"),
            ({"coalesce": "true"}, "coalesce"),
            ({"coalesce": 0}, "coalesce"),
            ({"coalesce": None}, "coalesce"),
            ({"retry_delay_s": -0.5}, "retry_delay_s"),
            ({"retry_delay_s": "1"}, "retry_delay_s"),
            ({"retry_delay_s": False}, "retry_delay_s"),
            ({"retry_delay_s": 86401}, "retry_delay_s"),
            ({"retry_max_delay_s": -1}, "retry_max_delay_s"),
            ({"retry_max_delay_s": [60]}, "retry_max_delay_s"),
            ({"retry_max_delay_s": 1e9}, "retry_max_delay_s"),
        ]
        for fields, field in cases:
            self.assertError(
                self.h.request("POST", "/jobs", job_body(self.puuid, **fields)), 400, field
            )
        error = self.assertError(
            self.h.request("POST", "/jobs", job_body(self.puuid, concurrency_policy="queue")),
            400,
            "concurrency_policy",
        )
        self.assertIn("allow, forbid, replace", error["message"])
        self.assertEqual(self.h.dump(), before)

    def test_max_delay_below_the_delay_is_400_naming_retry_max_delay_s(self) -> None:
        """
        retry_max_delay_s below retry_delay_s, both given or against the
        default, is refused naming retry_max_delay_s (jobs[i]. in an array).
        """
        before = self.h.dump()
        error = self.assertError(
            self.h.request(
                "POST", "/jobs", job_body(self.puuid, retry_delay_s=10, retry_max_delay_s=5)
            ),
            400,
            "retry_max_delay_s",
        )
        self.assertIn("at least retry_delay_s (10)", error["message"])
        error = self.assertError(
            self.h.request("POST", "/jobs", job_body(self.puuid, retry_delay_s=120)),
            400,
            "retry_max_delay_s",
        )
        self.assertIn("is 60, less than retry_delay_s (120)", error["message"])
        self.assertError(
            self.h.request("POST", "/jobs", job_body(self.puuid, retry_max_delay_s=0.5)),
            400,
            "retry_max_delay_s",
        )
        self.assertError(
            self.h.request(
                "POST",
                "/jobs",
                [job_body(self.puuid), job_body(self.puuid, retry_delay_s=3, retry_max_delay_s=2)],
            ),
            400,
            "jobs[1].retry_max_delay_s",
        )
        self.assertEqual(self.h.dump(), before)

    def test_patch_and_put_change_the_fields(self) -> None:
        """
        PATCH and PUT (which is partial, like PATCH) change the new fields;
        fields not given keep their value; a max delay below the stored
        delay is refused and changes nothing.
        """
        job = self.h.job(self.puuid)
        path = f"/jobs/{job['uuid']}"
        status, _, body = self.h.request(
            "PATCH", path, {"concurrency_policy": "forbid", "coalesce": True}
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(
            {k: body["data"][k] for k in NEW_DEFAULTS},
            {**NEW_DEFAULTS, "concurrency_policy": "forbid", "coalesce": True},
        )
        command = self.h.proposer.proposed[-1]
        self.assertEqual(
            command.args["changes"], {"concurrency_policy": "forbid", "coalesce": True}
        )
        status, _, body = self.h.request(
            "PUT", path, {"retry_delay_s": 5, "retry_max_delay_s": 500}
        )
        self.assertEqual(status, 200, body)
        stored = self.h.stored_job(job["uuid"])
        self.assertEqual(
            {k: stored[k] for k in NEW_DEFAULTS},
            {
                "concurrency_policy": "forbid",
                "coalesce": True,
                "retry_delay_s": 5.0,
                "retry_max_delay_s": 500.0,
            },
        )
        before = self.h.dump()
        for method in ("PATCH", "PUT"):
            self.assertError(
                self.h.request(method, path, {"retry_max_delay_s": 4}), 400, "retry_max_delay_s"
            )
            self.assertError(
                self.h.request(method, path, {"retry_delay_s": 501}), 400, "retry_max_delay_s"
            )
            self.assertError(
                self.h.request(method, path, {"concurrency_policy": "x"}), 400, "concurrency_policy"
            )
            self.assertError(self.h.request(method, path, {"coalesce": 1}), 400, "coalesce")
        self.assertEqual(self.h.dump(), before)
        # A PATCH to what is stored changes nothing and proposes nothing.
        count = len(self.h.proposer.proposed)
        self.h.request("PATCH", path, {"coalesce": True, "retry_delay_s": 5})
        self.assertEqual(len(self.h.proposer.proposed), count)

    def test_answers_match_the_document(self) -> None:
        """Job answers with the new fields validate against the document's Job schema."""
        document = build_openapi(ROUTES)
        schema = {"$ref": "#/components/schemas/Job", "components": document["components"]}
        job = self.h.job(self.puuid, concurrency_policy="replace", coalesce=True)
        jsonschema_rs.validate(schema, job)
        jsonschema_rs.validate(schema, self.h.request("GET", f"/jobs/{job['uuid']}")[2]["data"])
        project_schema = {
            "$ref": "#/components/schemas/Project",
            "components": document["components"],
        }
        project = self.h.request("GET", f"/projects/{self.puuid}")[2]["data"]
        jsonschema_rs.validate(project_schema, project)


class ProjectNotifyURLTests(FieldsTestCase):
    def test_create_get_update_and_clear(self) -> None:
        """
        notify_url is set on create, shown in every answer, changed by PUT
        or PATCH (both partial), cleared by null.
        """
        self.assertIsNone(self.h.request("GET", f"/projects/{self.puuid}")[2]["data"]["notify_url"])
        status, _, body = self.h.request(
            "POST", "/projects", {"name": "n", "notify_url": "https://hooks.test/alerts?x=1"}
        )
        self.assertEqual(status, 201, body)
        created = body["data"]
        self.assertEqual(created["notify_url"], "https://hooks.test/alerts?x=1")
        self.assertEqual(
            self.h.proposer.proposed[-1].args["project"]["notify_url"],
            "https://hooks.test/alerts?x=1",
        )
        path = f"/projects/{created['uuid']}"
        self.assertEqual(
            self.h.request("GET", path)[2]["data"]["notify_url"], "https://hooks.test/alerts?x=1"
        )
        listed = self.h.request("GET", "/projects")[2]["data"]["items"]
        self.assertEqual([p["notify_url"] for p in listed], [None, "https://hooks.test/alerts?x=1"])
        status, _, body = self.h.request("PUT", path, {"notify_url": "http://other.test/n"})
        self.assertEqual((status, body["data"]["notify_url"]), (200, "http://other.test/n"))
        self.assertEqual(body["data"]["name"], "n")
        # Changing something else keeps it.
        body = self.h.request("PUT", path, {"description": "d2"})[2]
        self.assertEqual(body["data"]["notify_url"], "http://other.test/n")
        status, _, body = self.h.request("PATCH", path, {"notify_url": "http://third.test/"})
        self.assertEqual((status, body["data"]["notify_url"]), (200, "http://third.test/"))
        status, _, body = self.h.request("PUT", path, {"notify_url": None})
        self.assertEqual((status, body["data"]["notify_url"]), (200, None))
        self.assertIsNone(self.h.stored_project(created["uuid"])["notify_url"])
        # Clearing what is already clear proposes nothing.
        count = len(self.h.proposer.proposed)
        self.h.request("PUT", path, {"notify_url": None})
        self.assertEqual(len(self.h.proposer.proposed), count)

    def test_bad_urls_are_400_naming_notify_url(self) -> None:
        """notify_url is checked as callback_url is; nothing is stored."""
        before = self.h.dump()
        path = f"/projects/{self.puuid}"
        for bad in (
            "ftp://x/",
            "not a url",
            "http://",
            "",
            3,
            ["http://x/"],
            "http://x:0/",
            "http://x/" + "a" * 2048,
        ):
            self.assertError(
                self.h.request("POST", "/projects", {"name": "bad", "notify_url": bad}),
                400,
                "notify_url",
            )
            for method in ("PUT", "PATCH"):
                self.assertError(
                    self.h.request(method, path, {"notify_url": bad}), 400, "notify_url"
                )
        self.assertEqual(self.h.dump(), before)


class NotifyURLPolicyTests(FieldsTestCase):
    def harness(self) -> Harness:
        names = {"evil.test": ["10.1.2.3"], "ok.test": ["192.0.2.1"]}
        policy = NetworkPolicy.from_config((), ("10.0.0.0/8",))
        return Harness(net_policy=policy, resolve=lambda host: succeed(names.get(host, [])))

    def test_denied_networks_are_refused(self) -> None:
        """CallbackDenyNetworks applies to notify_url on create and PUT, as to callbacks."""
        before = self.h.dump()
        for url in ("http://10.0.0.1/n", "http://evil.test/n"):
            error = self.assertError(
                self.h.request("POST", "/projects", {"name": "x", "notify_url": url}),
                400,
                "notify_url",
            )
            self.assertIn("CallbackDenyNetworks", error["message"])
            self.assertError(
                self.h.request("PUT", f"/projects/{self.puuid}", {"notify_url": url}),
                400,
                "notify_url",
            )
        self.assertEqual(self.h.dump(), before)
        status, _, body = self.h.request(
            "PUT", f"/projects/{self.puuid}", {"notify_url": "http://ok.test/n"}
        )
        self.assertEqual(status, 200, body)


# -- refused because they could never run ------------------------------------------


class CallbackItemSizeTests(SynchronousTestCase):
    """L{callback_item_bytes} is the executor's own encoding, counted."""

    def test_equal_to_the_executors_body_of_one_item(self) -> None:
        """
        For names, specs and data with escapes and non-ASCII text, the size
        is the executor's body holding the item at the job's last attempt.
        """
        jobs = [
            {
                "uuid": "u" * 36,
                "project_uuid": "p",
                "name": "n",
                "spec": "@daily",
                "data": None,
                "retry_max": 0,
            },
            {
                "uuid": "00000000-0000-4000-8000-000000000001",
                "project_uuid": "p" * 128,
                "name": 'quote " back \\ tab \t é 😀 \x01',
                "spec": "0 3 * * *",
                "data": {"k": ["é", 1.5, 10**20, None, True, "\u2028"], "z": {}},
                "retry_max": 9,
            },
            {
                "uuid": "x",
                "project_uuid": "y",
                "name": "z",
                "spec": "@every 1s",
                "data": "d" * 5000,
                "retry_max": 1000,
            },
        ]
        for job in jobs:
            delivery = Delivery(
                execution_id="e" * 36,
                job_uuid=job["uuid"],
                project_uuid=job["project_uuid"],
                name=job["name"],
                spec=job["spec"],
                data=job["data"],
                scheduled_at="2026-01-02T03:04:05.678Z",
                callback_url="http://x/",
                timeout_s=1.0,
                retry_max=job["retry_max"],
            )
            last = job["retry_max"] + 1
            expected = _body_size(len(_encode(delivery, last)), 1)
            self.assertEqual(callback_item_bytes(job), expected, job["name"])
            # The scheduler's pre-encoded members give the same bytes.
            delivery.job_json = job_members_json(
                job["uuid"], job["project_uuid"], job["name"], job["spec"], job["data"]
            )
            self.assertEqual(_body_size(len(_encode(delivery, last)), 1), expected)

    def test_the_cap_is_refused_exactly(self) -> None:
        """Data that makes the item one byte over the cap is refused; at the cap it is not."""
        job = {
            "uuid": "u" * 36,
            "project_uuid": "p" * 36,
            "name": "n",
            "spec": "@daily",
            "retry_max": 10,
            "data": "",
        }
        cap = payload_cap_bytes(0.01)
        room = cap - callback_item_bytes(job)
        fits = dict(job, data="é" * (room // 2) + "a" * (room % 2))
        self.assertEqual(callback_item_bytes(fits), cap)
        self.assertIsNone(data_problem(fits, cap))
        over = dict(fits, data=fits["data"] + "a")
        problem = data_problem(over, cap)
        self.assertIn(f"would be {cap + 1:,} bytes", problem)
        self.assertIn("HTTPExecutorPayloadMaxSizeMb", problem)
        # One more retry adds a digit to the last attempt number.
        self.assertIsNotNone(data_problem(dict(fits, retry_max=99), cap))

    def test_data_that_cannot_be_json_is_refused(self) -> None:
        """Infinity (1e400 in a request) and a lone surrogate can never be sent."""
        job = {"uuid": "u", "project_uuid": "p", "name": "n", "spec": "@daily", "retry_max": 1}
        for data in (float("inf"), {"a": [float("nan")]}, "\ud800"):
            self.assertIn("cannot be sent as JSON", data_problem(dict(job, data=data), 10**6))


# A cap of about 10 KiB, so that data too large for it fits in a request.
SMALL_CAP_MB = 0.01


class OversizeDataTests(FieldsTestCase):
    def harness(self) -> Harness:
        return Harness(defaults=Defaults(http_executor_payload_max_size_mb=SMALL_CAP_MB))

    def big(self) -> dict:
        return {"blob": "x" * payload_cap_bytes(SMALL_CAP_MB)}

    def test_create_single_and_array_are_refused_naming_data(self) -> None:
        """Data no callback could carry: 400 naming data (jobs[i].data); nothing stored."""
        before = self.h.dump()
        error = self.assertError(
            self.h.request("POST", "/jobs", job_body(self.puuid, data=self.big())), 400, "data"
        )
        self.assertIn("HTTPExecutorPayloadMaxSizeMb", error["message"])
        self.assertError(
            self.h.request(
                "POST", "/jobs", [job_body(self.puuid), job_body(self.puuid, data=self.big())]
            ),
            400,
            "jobs[1].data",
        )
        raw = json.dumps(job_body(self.puuid)).replace("}", ', "data": [1e400]}').encode()
        self.assertError(self.h.request("POST", "/jobs", raw=raw), 400, "data")
        self.assertEqual(self.h.dump(), before)
        # Data that fits is fine.
        self.assertEqual(self.create(job_body(self.puuid, data={"blob": "x" * 9000}))[0], 201)

    def test_patch_and_put_are_refused_naming_data(self) -> None:
        """
        A change that makes the item too large (new data, or a longer name
        or more retries beside data that fills it) is 400 naming data.
        """
        job = self.h.job(self.puuid, data="")
        path = f"/jobs/{job['uuid']}"
        cap = payload_cap_bytes(SMALL_CAP_MB)
        filling = "x" * (cap - callback_item_bytes(job))
        status, _, body = self.h.request("PATCH", path, {"data": filling})
        self.assertEqual(status, 200, body)
        self.assertEqual(callback_item_bytes(body["data"]), cap)
        before = self.h.dump()
        for method in ("PATCH", "PUT"):
            self.assertError(self.h.request(method, path, {"data": filling + "x"}), 400, "data")
            self.assertError(self.h.request(method, path, {"name": "jj"}), 400, "data")
            self.assertError(self.h.request(method, path, {"retry_max": 100}), 400, "data")
        self.assertEqual(self.h.dump(), before)
        # Other changes to such a job go through.
        # (retry_max 98: the last attempt, 99, has as many digits as 11.)
        status, _, body = self.h.request("PATCH", path, {"paused": True, "retry_max": 98})
        self.assertEqual(status, 200, body)


class PastAtTests(FieldsTestCase):
    def test_helpers(self) -> None:
        """at_instant reads @at specs only; past_at_problem refuses instants before now."""
        self.assertEqual(
            at_instant(" @AT 2026-01-02T05:04:05+02:00"), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        )
        for spec in ("@every 1m", "0 3 * * *", "@daily"):
            self.assertIsNone(at_instant(spec))
            self.assertIsNone(past_at_problem(spec, NOW))
        self.assertIsNone(past_at_problem("@at 2026-01-02T03:04:05.678Z", NOW))
        self.assertIn("is in the past", past_at_problem("@at 2026-01-02T03:04:05.677Z", NOW) or "")
        self.assertIn("is in the past", past_at_problem("@at 0001-01-01T00:00:00Z", NOW) or "")

    def test_create_single_and_array_are_refused_naming_spec(self) -> None:
        """An @at before now: 400 naming spec (jobs[i].spec); nothing stored."""
        before = self.h.dump()
        error = self.assertError(
            self.h.request("POST", "/jobs", job_body(self.puuid, spec="@at 2026-01-02T03:04:05Z")),
            400,
            "spec",
        )
        self.assertIn("@at 2026-01-02T03:04:05.000Z is in the past", error["message"])
        self.assertError(
            self.h.request(
                "POST",
                "/jobs",
                [job_body(self.puuid), job_body(self.puuid, spec="@at 2020-01-01T00:00:00Z")],
            ),
            400,
            "jobs[1].spec",
        )
        self.assertEqual(self.h.dump(), before)
        later = (NOW + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.assertEqual(self.create(job_body(self.puuid, spec=f"@at {later}"))[0], 201)

    def test_patch_and_put_are_refused_naming_spec(self) -> None:
        """
        Changing a spec to a past @at is refused; a job whose @at has
        passed since it was made can still be changed otherwise.
        """
        job = self.h.job(self.puuid, spec="@at 2026-01-02T03:05:00Z")
        path = f"/jobs/{job['uuid']}"
        self.h.clock.advance(120)
        before = self.h.dump()
        for method in ("PATCH", "PUT"):
            self.assertError(
                self.h.request(method, path, {"spec": "@at 2026-01-02T03:05:30Z"}), 400, "spec"
            )
        self.assertEqual(self.h.dump(), before)
        status, _, body = self.h.request("PATCH", path, {"name": "renamed"})
        self.assertEqual((status, body["data"]["name"]), (200, "renamed"))
        status, _, body = self.h.request("PUT", path, {"spec": "@at 2026-01-02T04:00:00Z"})
        self.assertEqual(status, 200, body)


# -- the document ------------------------------------------------------------------


class DocumentTests(SynchronousTestCase):
    def test_writable_fields_are_the_checked_ones(self) -> None:
        """The document's job and project inputs have exactly the fields the API checks."""
        self.assertEqual(set(SCHEMAS["JobInput"]["properties"]), set(JOB_CHECKS))
        self.assertEqual(set(SCHEMAS["JobPatch"]["properties"]), set(JOB_CHECKS))
        self.assertEqual(set(SCHEMAS["ProjectInput"]["properties"]), set(PROJECT_CHECKS))
        self.assertEqual(set(SCHEMAS["ProjectPatch"]["properties"]), set(PROJECT_CHECKS))

    def test_new_fields_have_the_validators_bounds(self) -> None:
        """Enums, types and bounds of the new fields are the validators'."""
        job = SCHEMAS["JobInput"]["properties"]
        self.assertEqual(job["concurrency_policy"]["enum"], ["allow", "forbid", "replace"])
        self.assertEqual(job["coalesce"]["type"], "boolean")
        for name in ("retry_delay_s", "retry_max_delay_s"):
            self.assertEqual(
                (job[name]["type"], job[name]["minimum"], job[name]["maximum"]),
                ("number", 0, MAX_RETRY_DELAY_S),
            )
        notify = SCHEMAS["ProjectInput"]["properties"]["notify_url"]
        callback = job["callback_url"]
        self.assertEqual(notify["type"], ["string", "null"])
        self.assertEqual(
            (notify["pattern"], notify["maxLength"]), (callback["pattern"], callback["maxLength"])
        )
        self.assertIn("notify_url", SCHEMAS["Project"]["required"])
        for name in NEW_DEFAULTS:
            self.assertIn(name, SCHEMAS["Job"]["required"])

    def test_execution_response_body(self) -> None:
        """An execution carries response_body: text or null."""
        execution = SCHEMAS["Execution"]
        self.assertEqual(execution["properties"]["response_body"]["type"], ["string", "null"])
        self.assertIn("response_body", execution["required"])
        record = {
            "execution_id": "e",
            "job_uuid": "00000000-0000-4000-8000-000000000001",
            "project_uuid": None,
            "scheduled_at": T0,
            "state": "failed",
            "attempts": 1,
            "node_id": 1,
            "started_at": T0,
            "finished_at": T0,
            "status_code": 500,
            "error": "HTTP 500",
            "skip_reason": None,
        }
        for body in ({"response_body": "<b>oops</b>"}, {"response_body": None}):
            jsonschema_rs.validate(execution, record | body)
        self.assertFalse(jsonschema_rs.is_valid(execution, record | {"response_body": 3}))
