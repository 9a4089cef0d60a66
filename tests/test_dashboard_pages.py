"""
The dashboard's lists, search and job form, end to end: a headless Chromium
signed in to a follower of a real three-node cluster pages through a project
of 260 jobs, finds jobs by name and state, creates, edits and deletes a job
through the form (its live preview, the API's messages beside the fields),
filters executions by state and time, and shows the leader's last contact
with every member. On a single node: jobs found by label selector (kept in
the address, a bad one refused beside its box), label chips that add a term,
labels in the job form, bulk pause and delete by selector, and project pause.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, TestCase

from harness.browser import CHROMIUM, CHROMIUM_PACKAGE, Browser, chromium_available
from harness.cluster import Cluster
from harness.process import client_headers, http_client, prepare_single_node
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from tests.support.dashboard import SIGN_IN_SHOWN, artifacts_dir

BULK_JOBS = 260
PAUSED_EVERY = 10  # every tenth bulk job is paused: 26 of them
# A slot once a year: the bulk jobs never fire while the test runs.
YEARLY = "0 0 1 1 *"


def _js(value: Any) -> str:
    return json.dumps(value)


def _pager(selector: str) -> str:
    """The pager's from, to and total, as the page states them."""
    return (
        f"(() => {{ const p = document.querySelector({_js(selector)}); "
        "return p && p.dataset.total !== undefined ? "
        "[Number(p.dataset.from), Number(p.dataset.to), Number(p.dataset.total)] : null; })()"
    )


_JOB_NAMES = (
    "[...document.querySelectorAll('#job-list tr.job-row a.job-name')].map(a => a.textContent)"
)


def _choose(selector: str, value: str) -> str:
    """Pick C{value} in a select (or fill a box) and tell the page it changed."""
    return (
        f"(() => {{ const box = document.querySelector({_js(selector)}); "
        f"box.value = {_js(value)}; box.dispatchEvent(new Event('change')); return true; }})()"
    )


def _names_are(names: list[str]) -> str:
    """Whether the jobs list shows exactly C{names}, in order."""
    return f"JSON.stringify({_JOB_NAMES}) === {_js(json.dumps(names, separators=(',', ':')))}"


_SELECTOR_ERROR = (
    "!document.querySelector('#jobs-selector-error').hidden && "
    "document.querySelector('#jobs-selector-error').textContent"
)


class DashboardPagesTests(TestCase):
    timeout = 240

    def setUp(self) -> None:
        if not chromium_available():
            raise SkipTest(f"{CHROMIUM} is missing: apt-get install -y {CHROMIUM_PACKAGE}")

    async def test_lists_search_and_the_job_form_on_a_cluster(self) -> None:
        """
        On a follower of a healthy three-node cluster: every member shows
        the leader's last contact; a 260-job project pages 25, then 100 at a
        time (page 3 shows the rest, the page stays short, a reload keeps
        the page); a name prefix finds one job and the state filter the
        paused ones; the form previews the next runs as the spec is typed,
        shows the API's message beside a bad spec and a bad retry_max,
        creates, edits and deletes a job; executions filter by state and
        time; C{/} leads to the dashboard; the page logs no errors.
        """
        receiver = CallbackReceiver(
            reactor, status_for=lambda path: 500 if path == "/fail" else 200
        )
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), 3, direct=True)
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        leader = await cluster.wait_leader()
        headers = await cluster.make_headers()
        follower = next(node_id for node_id in cluster.ids if node_id != leader)
        node_url = cluster.node(follower).url
        http = http_client(reactor)

        async def call(method: str, path: str, body: object = None) -> tuple[int, dict]:
            kwargs = {"json": body} if body is not None else {}
            response = await http.request(
                method, node_url + "/api/v1" + path, headers=headers, **kwargs
            )
            return response.code, await response.json()

        async def ok(method: str, path: str, body: object = None) -> Any:
            code, payload = await call(method, path, body)
            self.assertLess(code, 300, payload)
            return payload["data"]

        bulk = await ok("POST", "/projects", {"name": "bulk"})
        live = await ok("POST", "/projects", {"name": "live"})
        callback = f"http://127.0.0.1:{port}"
        created = await ok(
            "POST",
            "/jobs",
            [
                {
                    "project_uuid": bulk["uuid"],
                    "name": f"job-{i:03d}",
                    "spec": YEARLY,
                    "callback_url": f"{callback}/ok",
                    "paused": i % PAUSED_EVERY == 0,
                }
                for i in range(BULK_JOBS)
            ],
        )
        self.assertEqual(len(created), BULK_JOBS)
        # Made in one command, they share created_at: the API lists them by uuid then.
        listing = await ok("GET", f"/jobs?project_uuid={bulk['uuid']}&limit={BULK_JOBS}")
        order = [job["name"] for job in listing["items"]]
        self.assertEqual(sorted(order), [f"job-{i:03d}" for i in range(BULK_JOBS)])
        for name, path in (("heartbeat", "/ok"), ("flaky", "/fail")):
            await ok(
                "POST",
                "/jobs",
                {
                    "project_uuid": live["uuid"],
                    "name": name,
                    "spec": "@every 1s",
                    "callback_url": callback + path,
                    "retry_max": 0,
                },
            )

        browser = await Browser.launch(reactor)
        self.addCleanup(browser.close)
        artifacts = artifacts_dir()

        async def screenshot(name: str) -> None:
            print(f"screenshot: {await browser.screenshot(os.path.join(artifacts, name))}")

        # The node's root leads to the dashboard.
        await browser.open(node_url + "/")
        self.assertEqual(await browser.evaluate("location.pathname"), "/ui/")
        await browser.wait_for(SIGN_IN_SHOWN, timeout=5, what="the sign-in form")
        await browser.type("#api-key", headers["x-api-key"])
        await browser.type("#api-secret", headers["x-secret-key"])
        await browser.click("#signin-submit")
        await browser.wait_for(
            "!document.querySelector('#view-overview').hidden", timeout=10, what="the overview"
        )

        # LAST CONTACT: the leader's figure for every member, on a follower.
        contacts = await browser.wait_for(
            "(() => { const cells = [...document.querySelectorAll('#members .col-last-contact')];"
            " return cells.length === 3 && cells.every(c => c.dataset.lastContact !== '')"
            " && cells.map(c => [Number(c.dataset.lastContact), c.textContent]); })()",
            timeout=20,
            what="a last contact for every member",
        )
        for seconds, text in contacts:
            self.assertLess(seconds, 5)
            self.assertRegex(text, r" ago$")
        # The figures come from GET /cluster, which the follower fills from the leader's.
        members = (await ok("GET", "/cluster?consistency=stale"))["members"]
        self.assertEqual(
            [type(member["last_contact"]) for member in members], [float] * len(cluster.ids)
        )
        own = (await ok("GET", "/healthcheck"))["members"]
        self.assertEqual([member["last_contact"] for member in own], [None] * len(cluster.ids))
        self.assertIn(
            "(this)",
            await browser.evaluate(
                f"document.querySelector('#members tr[data-node-id=\"{follower}\"]').textContent"
            ),
        )

        # The bulk project: 25 a page, the count of all of them.
        await browser.wait_for(
            "[...document.querySelectorAll('#jobs-project option')]"
            f".some(o => o.value === {_js(bulk['uuid'])})",
            timeout=10,
            what="the projects to choose from",
        )
        await browser.evaluate(_choose("#jobs-project", bulk["uuid"]))
        self.assertEqual(
            await browser.wait_for(
                f"{_pager('#jobs-pager')}?.[2] === {BULK_JOBS} && {_pager('#jobs-pager')}",
                timeout=10,
                what="the bulk project's first page",
            ),
            [1, 25, BULK_JOBS],
        )
        self.assertEqual(await browser.evaluate(_JOB_NAMES), order[:25])
        await browser.click("#jobs-pager [data-page='next']")
        await browser.wait_for(f"{_pager('#jobs-pager')}?.[0] === 26", timeout=10, what="page 2")
        self.assertEqual(await browser.evaluate(_JOB_NAMES), order[25:50])
        self.assertIn("cursor=", await browser.evaluate("location.hash"))

        # 100 a page: page 3 shows the rest, and the page stays short.
        await browser.evaluate(_choose("#jobs-pager select.page-size", "100"))
        await browser.wait_for(
            f"JSON.stringify({_pager('#jobs-pager')}) === '[1,100,{BULK_JOBS}]'",
            timeout=10,
            what="a page of 100",
        )
        height = await browser.evaluate("document.documentElement.scrollHeight")
        viewport = await browser.evaluate("window.innerHeight")
        self.assertLess(height, 3 * viewport, "the page grew with the list")
        for first in (101, 201):
            await browser.click("#jobs-pager [data-page='next']")
            await browser.wait_for(
                f"{_pager('#jobs-pager')}?.[0] === {first}", timeout=10, what=f"from {first}"
            )
        self.assertEqual(await browser.evaluate(_pager("#jobs-pager")), [201, BULK_JOBS, BULK_JOBS])
        self.assertEqual(await browser.evaluate(_JOB_NAMES), order[200:])
        self.assertTrue(
            await browser.evaluate(
                "document.querySelector(\"#jobs-pager [data-page='next']\").disabled"
            )
        )
        self.assertLess(
            await browser.evaluate("document.documentElement.scrollHeight"), 3 * viewport
        )
        await browser.click("#jobs-pager [data-page='previous']")
        await browser.wait_for(f"{_pager('#jobs-pager')}?.[0] === 101", timeout=10, what="back")
        # A reload shows the same page; "Previous" still goes back one.
        reloaded = browser.wait_event("Page.loadEventFired")
        await browser.send("Page.reload")
        await reloaded
        self.assertEqual(
            await browser.wait_for(
                f"{_pager('#jobs-pager')}?.[2] === {BULK_JOBS} && {_pager('#jobs-pager')}",
                timeout=10,
                what="the same page after a reload",
            ),
            [101, 200, BULK_JOBS],
        )
        await browser.click("#jobs-pager [data-page='previous']")
        await browser.wait_for(f"{_pager('#jobs-pager')}?.[0] === 1", timeout=10, what="page 1")
        await screenshot("dashboard-pages.png")

        # Search by the start of a name, then by state.
        await browser.type("#jobs-search", "job-123")
        await browser.wait_for(
            f"JSON.stringify({_pager('#jobs-pager')}) === '[1,1,1]'", timeout=10, what="one job"
        )
        self.assertEqual(await browser.evaluate(_JOB_NAMES), ["job-123"])
        self.assertIn("q=job-123", await browser.evaluate("location.hash"))
        await browser.type("#jobs-search", "")
        await browser.evaluate(_choose("#jobs-state", "paused"))
        await browser.wait_for(
            f"{_pager('#jobs-pager')}?.[2] === {BULK_JOBS // PAUSED_EVERY}",
            timeout=10,
            what="the paused jobs",
        )
        states = await browser.evaluate(
            "[...document.querySelectorAll('#job-list .col-state')].map(c => c.textContent)"
        )
        self.assertEqual(states, ["paused"] * (BULK_JOBS // PAUSED_EVERY))
        await browser.evaluate(_choose("#jobs-state", ""))

        # A new job through the form, in the bulk project.
        await browser.click("#jobs-new")
        await browser.wait_for(
            "!document.querySelector('#view-form').hidden && "
            "document.querySelector('#job-form').dataset.loaded === 'new'",
            timeout=10,
            what="the job form",
        )
        self.assertEqual(
            await browser.evaluate("document.querySelector('#field-project_uuid').value"),
            bulk["uuid"],
        )
        # Every writable field of the API's document has a place in it.
        fields = await browser.evaluate(
            "[...document.querySelectorAll('#form-fields .field')].map(f => f.dataset.field)"
        )
        _, document = await call("GET", "/openapi.json")
        self.assertEqual(fields, list(document["components"]["schemas"]["JobInput"]["properties"]))
        await browser.type("#field-name", "made-in-browser")
        await browser.type("#field-callback_url", f"{callback}/ok")
        await browser.type("#field-timezone", "Europe/Berlin")
        await browser.type("#field-spec", "30 9 * * 1-5")
        preview = await browser.wait_for(
            "document.querySelector('#preview').dataset.state === 'ok' && "
            "[...document.querySelectorAll('#preview li')].map(li => li.dataset.utc)",
            timeout=10,
            what="the next runs",
        )
        _, expected = await call(
            "POST",
            "/schedule/preview",
            {"spec": "30 9 * * 1-5", "timezone": "Europe/Berlin", "n": 5},
        )
        self.assertEqual(preview, [item["utc"] for item in expected["data"]["items"]])
        # A bad spec: the API's own words beside the spec.
        await browser.type("#field-spec", "61 9 * * *")
        shown = await browser.wait_for(
            "!document.querySelector('#error-spec').hidden && "
            "document.querySelector('#error-spec').textContent",
            timeout=10,
            what="the spec's problem",
        )
        _, refused = await call("POST", "/schedule/preview", {"spec": "61 9 * * *"})
        self.assertEqual(shown, refused["error"]["fields"]["spec"])
        self.assertEqual(
            await browser.evaluate("document.querySelector('#preview').dataset.state"), "error"
        )
        await screenshot("dashboard-form-bad-spec.png")
        # Sent anyway: creating it is refused with the same words, beside the spec.
        await browser.click("#form-submit")
        await browser.wait_for(
            "!document.querySelector('#form-error').hidden", timeout=10, what="the refusal"
        )
        self.assertEqual(
            await browser.evaluate("document.querySelector('#error-spec').textContent"), shown
        )
        self.assertTrue((await browser.evaluate("location.hash")).startswith("#/new"))
        await browser.type("#field-spec", "@every 1h")
        await browser.wait_for(
            "document.querySelector('#preview').dataset.state === 'ok' && "
            "document.querySelector('#error-spec').hidden",
            timeout=10,
            what="the fixed spec's next runs",
        )
        await browser.click("#form-submit")
        made = await browser.wait_for(
            "(location.hash.match(/^#\\/job\\/([^/?]+)$/) || [])[1]", timeout=10, what="the new job"
        )
        job = await ok("GET", f"/jobs/{made}")
        self.assertEqual(
            (job["name"], job["project_uuid"], job["spec"], job["timezone"]),
            ("made-in-browser", bulk["uuid"], "@every 1h", "Europe/Berlin"),
        )
        await browser.wait_for(
            "document.querySelector('#job-name').textContent === 'made-in-browser'",
            timeout=10,
            what="the new job's page",
        )
        # ... and listed under its project.
        await browser.evaluate(f"location.hash = '#/?project={bulk['uuid']}&q=made'")
        await browser.wait_for(
            f"JSON.stringify({_JOB_NAMES}) === '[\"made-in-browser\"]'",
            timeout=10,
            what="the new job in the list",
        )

        # Edit it: a bad retry_max is refused beside it, then the change is saved.
        await browser.evaluate(f"location.hash = '#/job/{made}'")
        await browser.wait_for(
            f"document.querySelector('#job-edit').getAttribute('href') === '#/job/{made}/edit'",
            timeout=10,
            what="the edit button",
        )
        await browser.click("#job-edit")
        await browser.wait_for(
            f"document.querySelector('#job-form').dataset.loaded === {_js(made)} && "
            "document.querySelector('#field-name').value === 'made-in-browser' && "
            "document.querySelector('#preview').dataset.state === 'ok'",
            timeout=10,
            what="the form holding the job",
        )
        await browser.type("#field-name", "renamed-in-browser")
        await browser.type("#field-retry_max", "-1")
        await browser.click("#form-submit")
        message = await browser.wait_for(
            "!document.querySelector('#error-retry_max').hidden && "
            "document.querySelector('#error-retry_max').textContent",
            timeout=10,
            what="the retry_max problem",
        )
        self.assertIn("retry_max", message)
        self.assertEqual((await ok("GET", f"/jobs/{made}"))["name"], "made-in-browser")
        await browser.type("#field-retry_max", "2")
        await browser.click("#form-submit")
        await browser.wait_for(
            f"location.hash === '#/job/{made}' && "
            "document.querySelector('#job-name').textContent === 'renamed-in-browser'",
            timeout=10,
            what="the saved job",
        )
        job = await ok("GET", f"/jobs/{made}")
        self.assertEqual(
            (job["name"], job["retry_max"], job["spec"]), ("renamed-in-browser", 2, "@every 1h")
        )

        # Delete it: asked first, then gone.
        await browser.click("#job-delete")
        await browser.wait_for(
            "!document.querySelector('#delete-confirm').hidden", timeout=5, what="the question"
        )
        self.assertIn(
            "renamed-in-browser",
            await browser.evaluate("document.querySelector('#delete-confirm-text').textContent"),
        )
        self.assertEqual((await call("GET", f"/jobs/{made}"))[0], 200)
        await browser.click("#delete-confirm-yes")
        await browser.wait_for(
            f"document.querySelector('#toast').dataset.deleted === {_js(made)} && "
            "!document.querySelector('#view-overview').hidden",
            timeout=10,
            what="the deletion",
        )

        async def deleted() -> bool:
            return (await call("GET", f"/jobs/{made}"))[0] == 404

        await wait_for(reactor, deleted, timeout=10, what="the job to be gone")

        # Executions: by state, then by time.
        await browser.evaluate("location.hash = '#/executions'")
        for state in ("failed", "succeeded"):
            await browser.evaluate(_choose("#exec-state", state))
            rows = await browser.wait_for(
                "(() => { const rows = "
                "[...document.querySelectorAll('#executions tbody tr[data-state]')];"
                f" return rows.length > 0 && rows.every(r => r.dataset.state === {_js(state)})"
                " && rows.length; })()",
                timeout=20,
                what=f"{state} executions",
            )
            self.assertGreater(rows, 0)
            self.assertIn(f"estate={state}", await browser.evaluate("location.hash"))
        await screenshot("dashboard-executions.png")
        later = "2100-01-01T00:00:00"
        await browser.evaluate(_choose("#exec-since", later))
        await browser.wait_for(
            f"{_pager('#exec-pager')}?.[2] === 0 && location.hash.includes('since=2100-01-01')",
            timeout=10,
            what="no executions after 2100",
        )
        await browser.evaluate(_choose("#exec-until", "2099-01-01T00:00:00"))
        problem = await browser.wait_for(
            "!document.querySelector('#exec-filter-error').hidden && "
            "document.querySelector('#exec-filter-error').textContent",
            timeout=10,
            what="the empty time range refused",
        )
        self.assertIn("until", problem)

        self.assertEqual(browser.console_errors, [])
        # The failed requests are the ones refused on purpose (400) and the
        # deleted job's page, read once more as it went (404).
        for entry in browser.network_errors:
            self.assertRegex(entry, r"\b(400|404)\b", entry)

    async def test_labels_selector_and_bulk_actions(self) -> None:
        """
        On a single node, with jobs labelled through the API: the label
        selector box narrows the jobs list (with the project filter too) and
        stays in the address across a reload; a bad selector shows the API's
        message beside the box and no job; a label chip adds its term; the
        form edits labels as key=value lines and shows the API's message about
        one label beside them; a bulk pause by selector (confirmed with the
        selector and the count) pauses exactly the jobs it selects, a bulk
        delete waits for the count to be typed; a project is paused and
        resumed from the projects list.
        """
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(node.kill)
        await node.start()
        headers = await client_headers(node)
        http = http_client(reactor)

        async def call(method: str, path: str, body: object = None) -> tuple[int, dict]:
            kwargs = {"json": body} if body is not None else {}
            response = await http.request(
                method, node.url + "/api/v1" + path, headers=headers, **kwargs
            )
            return response.code, await response.json()

        async def ok(method: str, path: str, body: object = None) -> Any:
            code, payload = await call(method, path, body)
            self.assertLess(code, 300, payload)
            return payload["data"]

        shop = await ok("POST", "/projects", {"name": "shop"})
        other = await ok("POST", "/projects", {"name": "other"})
        # No job fires while the test runs: the callback is never called.
        labelled = {
            "alpha": (shop, {"team": "billing", "env": "prod"}),
            "beta": (shop, {"team": "billing", "env": "dev"}),
            "gamma": (shop, {"team": "ops"}),
            "delta": (shop, {}),
            "epsilon": (other, {"team": "billing"}),
        }
        jobs = {}
        for name, (project, labels) in labelled.items():
            jobs[name] = await ok(
                "POST",
                "/jobs",
                {
                    "project_uuid": project["uuid"],
                    "name": name,
                    "spec": YEARLY,
                    "callback_url": "http://127.0.0.1:9/never",
                    "labels": labels,
                },
            )

        browser = await Browser.launch(reactor)
        self.addCleanup(browser.close)
        await browser.open(node.url + "/ui/")
        await browser.wait_for(SIGN_IN_SHOWN, timeout=5, what="the sign-in form")
        await browser.type("#api-key", headers["x-api-key"])
        await browser.type("#api-secret", headers["x-secret-key"])
        await browser.click("#signin-submit")
        await browser.wait_for(_names_are(list(labelled)), timeout=10, what="every job")
        chips = await browser.evaluate(
            "[...document.querySelectorAll('#job-list tr.job-row')].map(r => "
            "[...r.querySelectorAll('.chip')].map(c => c.textContent))"
        )
        self.assertEqual(
            chips,
            [
                ["env=prod", "team=billing"],
                ["env=dev", "team=billing"],
                ["team=ops"],
                [],
                ["team=billing"],
            ],
        )

        # The selector narrows the list and stays in the address across a reload.
        await browser.type("#jobs-selector", "team=billing")
        await browser.wait_for(
            _names_are(["alpha", "beta", "epsilon"]), timeout=10, what="team=billing"
        )
        self.assertIn("selector=team%3Dbilling", await browser.evaluate("location.hash"))
        reloaded = browser.wait_event("Page.loadEventFired")
        await browser.send("Page.reload")
        await reloaded
        await browser.wait_for(
            _names_are(["alpha", "beta", "epsilon"]), timeout=10, what="the list after a reload"
        )
        self.assertEqual(
            await browser.evaluate("document.querySelector('#jobs-selector').value"),
            "team=billing",
        )

        # A chip adds its term.
        await browser.click(
            f"#job-list tr[data-job-uuid={_js(jobs['alpha']['uuid'])}] .chip[data-term='env=prod']"
        )
        await browser.wait_for(_names_are(["alpha"]), timeout=10, what="the chip's term")
        self.assertEqual(
            await browser.evaluate("document.querySelector('#jobs-selector').value"),
            "team=billing,env=prod",
        )

        # A bad selector: the API's message beside the box, no job, no broken page.
        await browser.type("#jobs-selector", "team=billing,bad key")
        shown = await browser.wait_for(_SELECTOR_ERROR, timeout=10, what="the selector refused")
        code, refused = await call("GET", "/jobs?selector=team%3Dbilling%2Cbad%20key")
        self.assertEqual(code, 400)
        self.assertEqual(shown, refused["error"]["fields"]["selector"])
        self.assertIn("bad key", shown)
        await browser.screenshot(os.path.join(artifacts_dir(), "dashboard-labels-bad-selector.png"))
        self.assertEqual(await browser.evaluate(_JOB_NAMES), [])
        self.assertTrue(await browser.evaluate("document.querySelector('#banner').hidden"))
        self.assertTrue(await browser.evaluate("document.querySelector('#jobs-bulk').hidden"))

        # With the project too: a bulk pause pauses exactly what is selected.
        await browser.type("#jobs-selector", "team=billing")
        await browser.wait_for(
            "document.querySelector('#jobs-selector-error').hidden && "
            + _names_are(["alpha", "beta", "epsilon"]),
            timeout=10,
            what="the selector fixed",
        )
        await browser.evaluate(_choose("#jobs-project", shop["uuid"]))
        await browser.wait_for(_names_are(["alpha", "beta"]), timeout=10, what="in the project")
        await browser.click("#jobs-bulk [data-bulk='pause']")
        question = await browser.wait_for(
            "!document.querySelector('#bulk-confirm').hidden && "
            "document.querySelector('#bulk-confirm-text').textContent",
            timeout=10,
            what="the bulk question",
        )
        self.assertIn("“team=billing”", question)
        self.assertIn("2 active jobs", question)
        self.assertIn("shop", question)
        await browser.screenshot(os.path.join(artifacts_dir(), "dashboard-labels-bulk-pause.png"))
        await browser.click("#bulk-confirm-yes")
        await browser.wait_for(
            "document.querySelector('#toast').dataset.bulk === 'pause:2'",
            timeout=10,
            what="the bulk pause",
        )
        paused = {
            name: (await ok("GET", f"/jobs/{job['uuid']}"))["paused"] for name, job in jobs.items()
        }
        self.assertEqual(
            paused,
            {"alpha": True, "beta": True, "gamma": False, "delta": False, "epsilon": False},
        )
        await browser.wait_for(
            "[...document.querySelectorAll('#job-list .col-state')]"
            ".every(c => c.textContent === 'paused')",
            timeout=10,
            what="the list showing them paused",
        )

        # The selector with the state and the name prefix too.
        await browser.evaluate(_choose("#jobs-state", "active"))
        await browser.wait_for(_names_are([]), timeout=10, what="no active billing job")
        await browser.evaluate(_choose("#jobs-state", "paused"))
        await browser.wait_for(_names_are(["alpha", "beta"]), timeout=10, what="paused ones")
        await browser.type("#jobs-search", "be")
        await browser.wait_for(_names_are(["beta"]), timeout=10, what="paused be*")
        hash_params = await browser.evaluate(
            "Object.fromEntries(new URLSearchParams(location.hash.split('?')[1]))"
        )
        self.assertEqual(
            hash_params,
            {"selector": "team=billing", "project": shop["uuid"], "state": "paused", "q": "be"},
        )
        await browser.type("#jobs-search", "")
        await browser.evaluate(_choose("#jobs-state", ""))

        # A bulk delete waits for the count to be typed.
        await browser.type("#jobs-selector", "team=ops")
        await browser.wait_for(_names_are(["gamma"]), timeout=10, what="team=ops")
        await browser.click("#jobs-bulk [data-bulk='delete']")
        await browser.wait_for(
            "!document.querySelector('#bulk-confirm').hidden && "
            "document.querySelector('#bulk-confirm-yes').disabled",
            timeout=10,
            what="the delete question",
        )
        await browser.type("#bulk-confirm-typed", "2")
        self.assertTrue(
            await browser.evaluate("document.querySelector('#bulk-confirm-yes').disabled")
        )
        await browser.type("#bulk-confirm-typed", "1")
        await browser.wait_for(
            "!document.querySelector('#bulk-confirm-yes').disabled", timeout=5, what="enabled"
        )
        await browser.click("#bulk-confirm-yes")
        await browser.wait_for(
            "document.querySelector('#toast').dataset.bulk === 'delete:1'",
            timeout=10,
            what="the bulk delete",
        )
        self.assertEqual((await call("GET", f"/jobs/{jobs['gamma']['uuid']}"))[0], 404)
        self.assertEqual((await call("GET", f"/jobs/{jobs['delta']['uuid']}"))[0], 200)

        # Labels in the form: key=value lines, a bad one's message beside them.
        delta = jobs["delta"]["uuid"]
        await browser.evaluate(f"location.hash = '#/job/{delta}/edit'")
        await browser.wait_for(
            f"document.querySelector('#job-form').dataset.loaded === {_js(delta)}",
            timeout=10,
            what="delta's form",
        )
        await browser.type("#field-labels", "tier=gold\nbad key=x")
        await browser.click("#form-submit")
        message = await browser.wait_for(
            "!document.querySelector('#error-labels').hidden && "
            "document.querySelector('#error-labels').textContent",
            timeout=10,
            what="the label's problem",
        )
        self.assertIn("labels.bad key", message)
        await browser.screenshot(os.path.join(artifacts_dir(), "dashboard-labels-form.png"))
        self.assertEqual((await ok("GET", f"/jobs/{delta}"))["labels"], {})
        await browser.type("#field-labels", "tier=gold\nteam=")
        await browser.click("#form-submit")
        await browser.wait_for(
            f"location.hash === '#/job/{delta}' && "
            "document.querySelector('#job-labels').textContent.includes('tier=gold')",
            timeout=10,
            what="the saved labels",
        )
        self.assertEqual(
            (await ok("GET", f"/jobs/{delta}"))["labels"], {"tier": "gold", "team": ""}
        )
        # A chip on the job's page lists the jobs with that label.
        await browser.click("#job-labels .chip[data-term='team=']")
        await browser.wait_for(_names_are(["delta"]), timeout=10, what="team= from the job")

        # A project paused and resumed from the projects list.
        row = f"#project-list tr[data-project-uuid={_js(shop['uuid'])}]"
        for action, state in (("pause", True), ("resume", False)):
            await browser.click(f"{row} button[data-action={action}]")
            await browser.wait_for(
                f"document.querySelector({_js(row + ' .col-state')}).textContent === "
                f"{_js('paused' if state else 'active')}",
                timeout=10,
                what=f"the project {action}d",
            )
            self.assertEqual((await ok("GET", f"/projects/{shop['uuid']}"))["paused"], state)
        await browser.screenshot(os.path.join(artifacts_dir(), "dashboard-labels.png"))

        self.assertEqual(browser.console_errors, [])
        # The failed requests are the ones refused on purpose (400).
        for entry in browser.network_errors:
            self.assertRegex(entry, r"\b400\b", entry)
