"""
Job labels and selectors through the HTTP API, in memory over the real
store: labels on create and PATCH (and the entry version they are written
with), errors naming the label, GET /jobs?selector=, the bulk pause, resume
and delete by selector, and the 409 while the cluster writes entry version 1.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.api import jobs as jobs_api
from scheduler0.store.commands import Op
from tests.support.api import Harness, fired


class LabelsAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.project = self.h.project()["uuid"]
        self.other = self.h.project("other")["uuid"]

    def create(self, labels: dict | None, **fields: Any) -> dict:
        body = {"project_uuid": self.project, **fields}
        if labels is not None:
            body["labels"] = labels
        return self.h.job(body.pop("project_uuid"), **body)

    def listed(self, query: str) -> tuple[int, Any]:
        status, _, body = self.h.request("GET", "/jobs?" + query)
        return status, body

    def uuids(self, query: str) -> list[str]:
        status, body = self.listed(query)
        self.assertEqual(status, 200, body)
        return [job["uuid"] for job in body["data"]["items"]]

    def write_version_one(self) -> None:
        """The state of a cluster that still writes entry version 1 (an older member)."""

        def set_one(txn: Any) -> None:
            txn.execute("UPDATE meta SET value = 1 WHERE key = 'entry_version'")

        fired(self.h.state.pool.runInteraction(set_one))

    def test_labels_round_trip_and_versions(self) -> None:
        """
        A job's labels are answered everywhere the job is. Here the cluster
        writes entry version 2, so every user write is of version 2 (it
        carries its audit record); that a job without labels is written as
        version 1 while the cluster writes 1 is
        L{test_version_one_refuses_labels}.
        """
        labelled = self.create({"team": "billing", "example.com/tier": ""})
        plain = self.create(None)
        self.assertEqual(labelled["labels"], {"team": "billing", "example.com/tier": ""})
        self.assertEqual(plain["labels"], {})
        created = [c for c in self.h.proposer.proposed if c.op == Op.CREATE_JOBS]
        self.assertEqual([c.version for c in created], [2, 2])
        self.assertEqual(
            ["labels" in c.args["jobs"][0] for c in created],
            [True, False],
        )
        status, _, body = self.h.request("GET", f"/jobs/{labelled['uuid']}")
        self.assertEqual(body["data"]["labels"], labelled["labels"])
        status, _, body = self.h.request(
            "PATCH", f"/jobs/{plain['uuid']}", {"labels": {"team": "ops"}}
        )
        self.assertEqual((status, body["data"]["labels"]), (200, {"team": "ops"}))
        self.assertEqual(self.h.proposer.proposed[-1].version, 2)
        status, _, body = self.h.request("PUT", f"/jobs/{plain['uuid']}", {"name": "renamed"})
        self.assertEqual((status, body["data"]["labels"]), (200, {"team": "ops"}))
        self.assertEqual(self.h.proposer.proposed[-1].version, 2)

    def test_bad_labels_name_the_field(self) -> None:
        """A bad label answers 400 naming jobs[i].labels.<key>; nothing is stored."""
        before = self.h.dump()
        good = {"project_uuid": self.project, "name": "j", "spec": "@every 1m"}
        good["callback_url"] = "http://cb.test/x"
        status, _, body = self.h.request(
            "POST", "/jobs", [good, {**good, "labels": {"team": "a b"}}]
        )
        self.assertEqual(status, 400)
        self.assertEqual(list(body["error"]["fields"]), ["jobs[1].labels.team"])
        status, _, body = self.h.request("POST", "/jobs", {**good, "labels": ["team"]})
        self.assertEqual((status, list(body["error"]["fields"])), (400, ["labels"]))
        many = {f"k{i}": "v" for i in range(65)}
        status, _, body = self.h.request("POST", "/jobs", {**good, "labels": many})
        self.assertEqual((status, list(body["error"]["fields"])), (400, ["labels"]))
        self.assertEqual(self.h.dump(), before)

    def test_list_by_selector(self) -> None:
        """GET /jobs?selector= selects by labels, with project, paused and pages."""
        a = self.create({"team": "billing", "env": "prod"})["uuid"]
        b = self.create({"team": "billing", "env": "dev"}, paused=True)["uuid"]
        c = self.create({"team": "ops"})["uuid"]
        d = self.h.job(self.other, labels={"team": "billing"})["uuid"]
        self.assertEqual(self.uuids("selector=team%3Dbilling"), [a, b, d])
        self.assertEqual(self.uuids("selector=team=billing,env!=prod"), [b, d])
        self.assertEqual(self.uuids("selector=!env"), [c, d])
        self.assertEqual(self.uuids(f"selector=team&project_uuid={self.project}"), [a, b, c])
        self.assertEqual(self.uuids("selector=team=billing&paused=true"), [b])
        status, body = self.listed("selector=team=billing&limit=2")
        self.assertEqual((body["data"]["total"], len(body["data"]["items"])), (3, 2))
        cursor = body["data"]["next_cursor"]
        self.assertEqual(self.uuids(f"selector=team=billing&limit=2&cursor={cursor}"), [d])

    def test_bad_selector_is_400_naming_it(self) -> None:
        """A malformed selector answers 400 naming selector and the term."""
        for query in ("selector=team=a%20b", "selector=a,,b", "selector=", "selector=-x"):
            status, body = self.listed(query)
            self.assertEqual(status, 400, query)
            self.assertEqual(list(body["error"]["fields"]), ["selector"], query)
        status, body = self.listed("selector=team,-x")
        self.assertIn("'-x'", body["error"]["fields"]["selector"])

    def test_bulk_pause_resume_delete(self) -> None:
        """The bulk routes change the jobs the selector selects, and answer which."""
        a = self.create({"team": "billing"})["uuid"]
        b = self.create({"team": "billing"}, paused=True)["uuid"]
        c = self.create({"team": "ops"})["uuid"]
        status, _, body = self.h.request("POST", "/jobs/bulk/pause?selector=team=billing")
        self.assertEqual(status, 200, body)
        self.assertEqual(
            body["data"],
            {
                "action": "pause",
                "selector": "team=billing",
                "count": 1,
                "uuids": [a],
                "more": False,
            },
        )
        self.assertEqual(self.h.proposer.proposed[-1].version, 2)
        self.assertTrue(self.h.stored_job(a)["paused"])
        self.assertFalse(self.h.stored_job(c)["paused"])
        status, _, body = self.h.request("POST", "/jobs/bulk/resume?selector=team==billing")
        self.assertEqual(body["data"]["uuids"], [a, b])
        self.assertFalse(self.h.stored_job(b)["paused"])
        status, _, body = self.h.request(
            "POST", f"/jobs/bulk/delete?selector=team&project_uuid={self.project}"
        )
        self.assertEqual((status, body["data"]["count"]), (200, 3))
        self.assertIsNone(self.h.stored_job(c))

    def test_bulk_bound(self) -> None:
        """One request changes at most BULK_LIMIT jobs and says more remain."""
        self.patch(jobs_api, "BULK_LIMIT", 2)
        for _ in range(3):
            self.create({"team": "x"})
        _, _, body = self.h.request("POST", "/jobs/bulk/pause?selector=team=x")
        self.assertEqual((body["data"]["count"], body["data"]["more"]), (2, True))
        _, _, body = self.h.request("POST", "/jobs/bulk/pause?selector=team=x")
        self.assertEqual((body["data"]["count"], body["data"]["more"]), (1, False))

    def test_bulk_refusals(self) -> None:
        """No selector, a bad one or an unknown project: 4xx naming it, nothing proposed."""
        self.create({"team": "x"})
        self.h.proposer.proposed.clear()
        before = self.h.dump()
        for path, status, field in (
            ("/jobs/bulk/pause", 400, "selector"),
            ("/jobs/bulk/resume?selector=", 400, "selector"),
            ("/jobs/bulk/delete?selector=a%20b", 400, "selector"),
            ("/jobs/bulk/delete?selector=team&project_uuid=nope", 404, "project_uuid"),
        ):
            got, _, body = self.h.request("POST", path)
            self.assertEqual((got, list(body["error"]["fields"])), (status, [field]), path)
        self.assertEqual(self.h.proposer.proposed, [])
        self.assertEqual(self.h.dump(), before)

    def test_version_one_refuses_labels(self) -> None:
        """
        While the cluster writes entry version 1, labels and bulk actions
        answer 409 entry_version_too_low and store nothing; plain writes and
        selector reads still work.
        """
        job = self.create(None)
        self.write_version_one()
        before = self.h.dump()
        good = {"project_uuid": self.project, "name": "j", "spec": "@every 1m"}
        good["callback_url"] = "http://cb.test/x"
        for method, path, body in (
            ("POST", "/jobs", {**good, "labels": {"team": "x"}}),
            ("PATCH", f"/jobs/{job['uuid']}", {"labels": {"team": "x"}}),
            ("POST", "/jobs/bulk/pause?selector=team", None),
        ):
            if body is None:
                status, _, answer = self.h.request(method, path)
            else:
                status, _, answer = self.h.request(method, path, body)
            self.assertEqual(status, 409, path)
            self.assertEqual(answer["error"]["code"], "entry_version_too_low")
            self.assertIn("labels", answer["error"]["fields"])
        self.assertEqual(self.h.dump(), before)
        self.assertEqual(self.uuids("selector=!team"), [job["uuid"]])
        self.create({})
        self.assertEqual(self.h.proposer.proposed[-1].version, 1)

    def test_idempotency_key_names_the_selector(self) -> None:
        """
        A bulk request again under its Idempotency-Key answers as the first
        and changes nothing more; the same key with another selector is
        another request.
        """
        a = self.create({"team": "a"})["uuid"]
        b = self.create({"team": "b"})["uuid"]
        self.patch(jobs_api, "BULK_LIMIT", 1)
        c = self.create({"team": "a"})["uuid"]
        key = {"Idempotency-Key": "bulk-1"}
        _, _, first = self.h.request("POST", "/jobs/bulk/pause?selector=team=a", headers=key)
        _, _, again = self.h.request("POST", "/jobs/bulk/pause?selector=team=a", headers=key)
        self.assertEqual(first["data"], again["data"])
        self.assertEqual(first["data"]["uuids"], [a])
        self.assertFalse(self.h.stored_job(c)["paused"])
        _, _, other = self.h.request("POST", "/jobs/bulk/pause?selector=team=b", headers=key)
        self.assertEqual(other["data"]["uuids"], [b])


class LabelsDocumentTests(SynchronousTestCase):
    """The OpenAPI document states the labels, the selector and the bulk routes."""

    def test_document(self) -> None:
        from scheduler0.api.openapi import build_openapi
        from scheduler0.labels import KEY_PATTERN, SELECTOR_PATTERN, VALUE_PATTERN

        document = build_openapi()
        schemas = document["components"]["schemas"]
        labels = schemas["Job"]["properties"]["labels"]
        self.assertIn("labels", schemas["Job"]["required"])
        self.assertEqual(labels["propertyNames"]["pattern"], KEY_PATTERN)
        self.assertEqual(labels["additionalProperties"]["pattern"], VALUE_PATTERN)
        self.assertEqual(labels["maxProperties"], 64)
        listed = {p["name"]: p for p in document["paths"]["/jobs"]["get"]["parameters"]}
        self.assertEqual(listed["selector"]["schema"]["pattern"], SELECTOR_PATTERN)
        self.assertFalse(listed["selector"]["required"])
        for action in ("pause", "resume", "delete"):
            operation = document["paths"][f"/jobs/bulk/{action}"]["post"]
            params = {p["name"]: p for p in operation["parameters"]}
            self.assertTrue(params["selector"]["required"], action)
            self.assertFalse(params["project_uuid"]["required"], action)
