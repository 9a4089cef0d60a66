"""
The dashboard with the fields of issue 14, in headless Chromium against a
canned API: a job's overlap policy, coalescing and retry delays, a project's
notify URL, and the answer a failed attempt got (untrusted text, shown as
text only).
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from harness.browser import CHROMIUM, CHROMIUM_PACKAGE, Browser, chromium_available
from scheduler0.ui import dashboard_resource
from tests.support.dashboard import SIGN_IN_SHOWN, artifacts_dir

PROJECT_UUID = "11111111-1111-4111-8111-111111111111"
JOB_UUID = "22222222-2222-4222-8222-222222222222"
NOTIFY_URL = "https://alerts.test/scheduler0?team=<ops>"
# What a failing callback answered: markup that must stay text.
ANSWER = '<b id="injected">down</b><img src=x onerror="window.pwned=1"> & more'
STAMP = "2026-01-02T03:04:05.000Z"


def _execution(number: int, state: str, **fields: Any) -> dict:
    record = {
        "execution_id": f"e-{number}",
        "job_uuid": JOB_UUID,
        "project_uuid": PROJECT_UUID,
        "scheduled_at": f"2026-01-02T03:04:{number:02d}.000Z",
        "state": state,
        "attempts": 1,
        "node_id": 1,
        "started_at": f"2026-01-02T03:04:{number:02d}.005Z",
        "finished_at": f"2026-01-02T03:04:{number:02d}.010Z",
        "status_code": 503 if state == "failed" else 200,
        "error": "HTTP 503" if state == "failed" else None,
        "skip_reason": None,
    }
    record.update(fields)
    return record


# Newest first, as the API lists them: a failure with an answer, one
# without, a success whose (unexpected) answer is not shown.
EXECUTIONS = [
    _execution(3, "failed", response_body=ANSWER),
    _execution(2, "failed", response_body=None),
    _execution(1, "succeeded", response_body="fine"),
]
JOB = {
    "uuid": JOB_UUID,
    "project_uuid": PROJECT_UUID,
    "name": "flaky",
    "spec": "@every 1s",
    "callback_url": "http://127.0.0.1:9/cb",
    "data": None,
    "timezone": "UTC",
    "execution_type": "http",
    "paused": False,
    "catch_up_window_s": 60.0,
    "timeout_s": 30.0,
    "retry_max": 3,
    "retry_delay_s": 2.0,
    "retry_max_delay_s": 40.0,
    "concurrency_policy": "forbid",
    "coalesce": True,
    "created_at": STAMP,
    "updated_at": STAMP,
    "anchor_at": STAMP,
    "next_run_at": "2030-01-01T00:00:00.000Z",
    "last_run_at": EXECUTIONS[0]["started_at"],
    "last_status": "failed",
}
PROJECT = {
    "uuid": PROJECT_UUID,
    "name": "alerts",
    "description": "",
    "created_at": STAMP,
    "updated_at": STAMP,
    "notify_url": NOTIFY_URL,
}


def _page(items: list) -> dict:
    return {"items": items, "total": len(items), "limit": 50, "offset": 0, "next_cursor": None}


ANSWERS = {
    "/api/v1/healthcheck": {
        "node_id": 1,
        "role": "leader",
        "leader_id": 1,
        "leader_address": "http://127.0.0.1:1",
        "term": 1,
        "commit_index": 5,
        "applied_index": 5,
        "members": [],
        "scheduling_paused": False,
        "pause_reason": None,
    },
    "/api/v1/cluster": {"node_id": 1, "leader_id": 1, "term": 1, "members": []},
    "/api/v1/projects": _page([PROJECT]),
    "/api/v1/jobs": _page([JOB]),
    "/api/v1/executions": {**_page(EXECUTIONS), "missing_nodes": []},
    "/api/v1/executions/summary": {
        "minutes": 1,
        "buckets": [],
        "totals": {"succeeded": 1, "failed": 2, "skipped": 0, "started": 3},
        "lateness": {"bounds_s": [0.01], "counts": [3, 0]},
        "nodes": [1],
        "missing_nodes": [],
    },
    f"/api/v1/jobs/{JOB_UUID}": JOB,
    f"/api/v1/jobs/{JOB_UUID}/executions": {**_page(EXECUTIONS), "missing_nodes": []},
    f"/api/v1/jobs/{JOB_UUID}/next": {
        "items": [{"utc": "2030-01-01T00:00:00.000Z", "local": "2030-01-01T00:00:00.000+00:00"}],
        "timezone": "UTC",
        "paused": False,
    },
}


class CannedAPI(Resource):
    """Answers the dashboard's GETs from L{ANSWERS} in the API's envelope."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        path = urlsplit(request.uri.decode()).path
        request.setHeader(b"content-type", b"application/json")
        if path not in ANSWERS:
            request.setResponseCode(404)
            return json.dumps({"success": False, "data": None, "error": {"message": path}}).encode()
        return json.dumps({"success": True, "data": ANSWERS[path]}).encode()


class DashboardFieldTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        if not chromium_available():
            raise SkipTest(f"{CHROMIUM} is missing: apt-get install -y {CHROMIUM_PACKAGE}")

    async def test_new_fields_and_the_failed_answer_are_shown_as_text(self) -> None:
        """
        The project shows its notify URL; the job its overlap policy,
        coalescing and retry delays; a failed execution the answer its
        attempt got, in the table and its details, as text (nothing in it
        becomes markup or runs); other executions show none.
        """
        root = Resource()
        root.putChild(b"ui", dashboard_resource())
        api = Resource()
        api.putChild(b"v1", CannedAPI())
        root.putChild(b"api", api)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root))
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"

        browser = await Browser.launch(reactor)
        self.addCleanup(browser.close)
        await browser.open(url + "/ui/")
        await browser.wait_for(SIGN_IN_SHOWN, timeout=5, what="the sign-in form")
        await browser.type("#api-key", "key")
        await browser.type("#api-secret", "secret")
        await browser.click("#signin-submit")

        notify = await browser.wait_for(
            "(document.querySelector('.project-notify') || {}).textContent",
            timeout=10,
            what="the project's notify URL",
        )
        self.assertEqual(notify, f"notices → {NOTIFY_URL}")

        await browser.evaluate(f"location.hash = '#/job/{JOB_UUID}'")
        await browser.wait_for(
            "document.querySelectorAll('#executions tbody tr').length === 3",
            timeout=10,
            what="the job's executions",
        )
        facts = {
            name: await browser.evaluate(f"document.querySelector('#{name}').textContent")
            for name in ("job-concurrency-policy", "job-coalesce", "job-retry-delays")
        }
        self.assertEqual(
            facts,
            {
                "job-concurrency-policy": "forbid: skip the slot while one runs",
                "job-coalesce": "coalesced into one run",
                "job-retry-delays": "2 s, doubling to 40 s",
            },
        )
        shown = await browser.evaluate(
            "[...document.querySelectorAll('#executions tbody tr')].map((row) => {"
            "  const body = row.querySelector('.response-body');"
            "  return [row.dataset.executionId, body ? body.textContent : null];"
            "})"
        )
        self.assertEqual(shown, [["e-3", ANSWER], ["e-2", None], ["e-1", None]])

        await browser.click('#timeline .slot[data-execution-id="e-3"]')
        detail = await browser.wait_for(
            "(document.querySelector('#slot-response pre') || {}).textContent",
            timeout=5,
            what="the answer in the slot's details",
        )
        self.assertEqual(detail, ANSWER)
        await browser.click('#timeline .slot[data-execution-id="e-2"]')
        await browser.wait_for(
            "document.querySelector('#slot-detail').dataset.executionId === 'e-2'",
            timeout=5,
            what="the other failure's details",
        )
        self.assertIsNone(await browser.evaluate("document.querySelector('#slot-response')"))
        await browser.click('#timeline .slot[data-execution-id="e-3"]')
        await browser.wait_for(
            "!!document.querySelector('#slot-response')", timeout=5, what="the answer again"
        )
        await browser.screenshot(os.path.join(artifacts_dir(), "dashboard-job-fields.png"))

        # Nothing of the answer became markup, or ran.
        self.assertIsNone(await browser.evaluate("document.querySelector('#injected')"))
        self.assertEqual(await browser.evaluate("document.querySelectorAll('#app img').length"), 0)
        self.assertIsNone(await browser.evaluate("window.pwned === undefined ? null : 1"))
        self.assertEqual(browser.console_errors, [])
