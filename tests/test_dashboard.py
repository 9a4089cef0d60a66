"""
The web dashboard at C{/ui}: how its files are served, and, end to end, a
headless Chromium signing in to a real node and watching real executions.
"""

from __future__ import annotations

import json
import os

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site

from harness.browser import CHROMIUM, CHROMIUM_PACKAGE, Browser, chromium_available
from harness.process import client_headers, http_client, prepare_single_node
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from scheduler0.api.app import SchedulerAPI
from scheduler0.ui import STATIC_DIR
from tests.support.dashboard import SIGN_IN_ERROR, SIGN_IN_SHOWN, artifacts_dir


def _unused(name: str) -> object:
    raise AssertionError(f"the dashboard's files must not touch the API's {name}")


class DashboardServingTests(TestCase):
    """The static files, served through the API's Klein application on 127.0.0.1."""

    timeout = 20

    async def _get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        api = SchedulerAPI(
            state=None,
            proposer=None,
            executions=None,
            scheduler=None,
            clock=reactor,
            defaults=None,
            admin=None,
            health=lambda: _unused("health"),
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(api.resource())
        )
        self.addCleanup(port.stopListening)
        http = http_client(reactor)
        response = await http.request(
            method, f"http://127.0.0.1:{port.getHost().port}{path}", allow_redirects=False
        )
        body = await response.content()
        headers = {
            k.decode("latin-1").lower(): v[0].decode("latin-1")
            for k, v in response.headers.getAllRawHeaders()
        }
        return response.code, headers, body

    async def test_ui_redirects_to_the_directory(self) -> None:
        """GET /ui answers a redirect to /ui/ (so the page's relative links resolve)."""
        code, headers, _ = await self._get("/ui")
        self.assertEqual(code, 302)
        self.assertEqual(headers["location"], "/ui/")

    async def test_root_redirects_to_the_dashboard(self) -> None:
        """GET and HEAD / answer 302 to /ui/ without credentials; other methods 405."""
        for method in ("GET", "HEAD"):
            code, headers, _ = await self._get("/", method=method)
            self.assertEqual((code, headers.get("location")), (302, "/ui/"), method)
        code, headers, body = await self._get("/", method="POST")
        self.assertEqual(code, 405)
        self.assertIn("GET", headers["allow"])
        self.assertEqual(json.loads(body)["success"], False)

    async def test_index_is_served_without_credentials(self) -> None:
        """GET /ui/ answers index.html, unauthenticated, no-cache, under a same-origin CSP."""
        code, headers, body = await self._get("/ui/")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertEqual(headers["cache-control"], "no-cache")
        self.assertIn("default-src 'self'", headers["content-security-policy"])
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        with open(os.path.join(STATIC_DIR, "index.html"), "rb") as f:
            self.assertEqual(body, f.read())

    async def test_assets_have_their_content_types(self) -> None:
        """Each shipped file is served with its own content type."""
        expected = {
            "app.js": "text/javascript; charset=utf-8",
            "style.css": "text/css; charset=utf-8",
            "favicon.svg": "image/svg+xml",
            "index.html": "text/html; charset=utf-8",
        }
        self.assertEqual(sorted(os.listdir(STATIC_DIR)), sorted(expected))
        for name, content_type in expected.items():
            code, headers, body = await self._get("/ui/" + name)
            self.assertEqual((code, headers["content-type"]), (200, content_type), name)
            self.assertEqual(headers["cache-control"], "no-cache", name)
            self.assertTrue(body, name)

    async def test_unknown_files_and_escapes_are_404(self) -> None:
        """A name that is not a shipped file, or climbs out of the directory, is 404."""
        for path in ("/ui/nope.js", "/ui/%2e%2e/__init__.py", "/ui/..%2f__init__.py"):
            code, _, body = await self._get(path)
            self.assertEqual(code, 404, path)
            self.assertNotIn(b"dashboard_resource", body, path)

    async def test_only_get_is_allowed(self) -> None:
        """Writing to the dashboard's files is refused with the API's 405 envelope."""
        code, headers, body = await self._get("/ui/", method="POST")
        self.assertEqual(code, 405)
        self.assertEqual(json.loads(body)["success"], False)

    def test_the_page_has_no_inline_script_or_style(self) -> None:
        """The page runs under default-src 'self': no inline script, style or handler."""
        with open(os.path.join(STATIC_DIR, "index.html")) as f:
            html = f.read()
        self.assertNotIn("<style", html)
        self.assertNotIn(" style=", html)
        self.assertNotIn(" onclick=", html)
        self.assertEqual(html.count("<script"), 1)
        self.assertIn('<script src="app.js" defer></script>', html)
        with open(os.path.join(STATIC_DIR, "app.js")) as f:
            script = f.read()
        # Data reaches the page as text only.
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            self.assertNotIn(sink, script)
        self.assertNotIn("http://", script)
        self.assertNotIn("https://", script)


def _text(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)}).textContent"


def _row(job_uuid: str, selector: str) -> str:
    return (
        f"(document.querySelector('tr[data-job-uuid=\"{job_uuid}\"] {selector}') || {{}})"
        ".textContent"
    )


class DashboardEndToEndTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        if not chromium_available():
            raise SkipTest(f"{CHROMIUM} is missing: apt-get install -y {CHROMIUM_PACKAGE}")

    async def test_dashboard_against_a_real_node(self) -> None:
        """
        Signed in through the form, the dashboard shows the leader, both
        jobs with next run and last status, succeeded and failed slots and
        a drawn chart; its buttons pause, resume and run a job; a wrong
        secret shows the API's 401 message; the page logs no errors.
        """
        http = http_client(reactor)
        receiver = CallbackReceiver(
            reactor, status_for=lambda path: 500 if path == "/fail" else 200
        )
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(node.kill)
        await node.start()
        headers = await client_headers(node)

        async def call(method: str, path: str, body: object = None) -> dict:
            kwargs = {"json": body} if body is not None else {}
            response = await http.request(method, node.url + path, headers=headers, **kwargs)
            payload = await response.json()
            self.assertLess(response.code, 300, payload)
            return payload["data"]

        project = await call("POST", "/projects", {"name": "dashboard", "description": "demo"})
        ok_job = await call(
            "POST",
            "/api/v1/jobs",
            {
                "project_uuid": project["uuid"],
                "name": "heartbeat",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{port}/ok",
            },
        )
        failing_name = "flaky <b>webhook</b> & co"
        failing_job = await call(
            "POST",
            "/api/v1/jobs",
            {
                "project_uuid": project["uuid"],
                "name": failing_name,
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{port}/fail",
                "retry_max": 0,
            },
        )

        browser = await Browser.launch(reactor)
        self.addCleanup(browser.close)
        artifacts = artifacts_dir()
        shots: list[str] = []

        async def screenshot(name: str) -> None:
            shots.append(await browser.screenshot(os.path.join(artifacts, name)))
            print(f"screenshot: {shots[-1]}")

        await browser.open(node.url + "/ui")
        self.assertEqual(await browser.evaluate("location.pathname"), "/ui/")
        await browser.wait_for(SIGN_IN_SHOWN, timeout=5, what="the sign-in form")

        # A wrong secret: the API's 401 message, and still the form.
        await browser.type("#api-key", headers["x-api-key"])
        await browser.type("#api-secret", "not-the-secret")
        await browser.click("#signin-submit")
        message = await browser.wait_for(SIGN_IN_ERROR, timeout=10, what="the 401 message")
        self.assertIn("unknown API key or wrong secret", message)
        self.assertTrue(await browser.evaluate("document.querySelector('#app').hidden"))
        self.assertIsNone(
            await browser.evaluate("sessionStorage.getItem('scheduler0.dashboard.credential')")
        )
        await screenshot("dashboard-signin-401.png")

        # The right secret.
        await browser.type("#api-secret", headers["x-secret-key"])
        await browser.click("#signin-submit")
        await browser.wait_for(
            "!document.querySelector('#view-overview').hidden", timeout=10, what="the overview"
        )

        # Executions arrive: both jobs have a last status, the chart has both outcomes.
        ok_uuid, failing_uuid = ok_job["uuid"], failing_job["uuid"]
        await browser.wait_for(
            f"{_row(ok_uuid, '.col-last-status')} === 'succeeded' && "
            f"{_row(failing_uuid, '.col-last-status')} === 'failed' && "
            "Number(document.querySelector('#chart').dataset.succeeded) >= 2 && "
            "Number(document.querySelector('#chart').dataset.failed) >= 2",
            timeout=20,
            what="both jobs' executions on the dashboard",
        )
        leader = await browser.evaluate(_text("#cluster-leader"))
        self.assertIn("node 1", leader)
        members = await browser.evaluate("document.querySelectorAll('#members tbody tr').length")
        self.assertEqual(members, 1)
        self.assertIn("leader", await browser.evaluate(_text("#members tbody")))
        # A single node that the guard does not pause is ready.
        self.assertEqual(await browser.evaluate(_text("#readiness")), "Ready")
        self.assertTrue(await browser.evaluate("document.querySelector('#not-ready').hidden"))
        for uuid in (ok_uuid, failing_uuid):
            # Relative times in the cells, the instants themselves in their titles.
            for cell, pattern in ((".col-next", r"^(in \d|now)"), (".col-last-run", r"ago$|^now$")):
                self.assertRegex(await browser.evaluate(_row(uuid, cell)), pattern, cell)
                title = await browser.evaluate(
                    f"document.querySelector('tr[data-job-uuid=\"{uuid}\"] {cell}').title"
                )
                self.assertRegex(title, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", cell)
            recent = await browser.evaluate(
                f"document.querySelectorAll('tr[data-job-uuid=\"{uuid}\"] .strip .slot').length"
            )
            self.assertGreater(recent, 0)
        # The job's name is shown as text: nothing in it became markup.
        self.assertEqual(await browser.evaluate(_row(failing_uuid, "a.job-name")), failing_name)
        markup = await browser.evaluate(
            "document.querySelectorAll('#job-list b, #project-list b').length"
        )
        self.assertEqual(markup, 0)
        # The chart drew bars in the succeeded and failed colours.
        painted = await browser.evaluate(_COUNT_CHART_COLOURS)
        self.assertGreater(painted["succeeded"], 20, painted)
        self.assertGreater(painted["failed"], 20, painted)
        await screenshot("dashboard.png")

        # The failing job's timeline: failed slots, with their details on click.
        await browser.click(f'tr[data-job-uuid="{failing_uuid}"] a.job-name')
        await browser.wait_for(
            "document.querySelectorAll('#timeline .slot.state-failed').length >= 2",
            timeout=10,
            what="failed slots on the timeline",
        )
        self.assertEqual(await browser.evaluate(_text("#job-name")), failing_name)
        await browser.hover("#timeline .slot.state-failed")
        tooltip = await browser.wait_for(
            "!document.querySelector('#tooltip').hidden && "
            "document.querySelector('#tooltip').textContent",
            timeout=5,
            what="the slot's tooltip",
        )
        self.assertIn("Status code:500", tooltip)
        await browser.click("#timeline .slot.state-failed")
        detail = await browser.wait_for(
            "document.querySelector('#slot-detail').textContent", timeout=5, what="slot details"
        )
        for label in ("Scheduled", "Started", "State", "Status code", "Attempts", "Node", "Error"):
            self.assertIn(label, detail)
        self.assertIn("failed", detail)
        self.assertIn("500", detail)
        # What the endpoint answered the failed attempt, as text.
        answered = await browser.evaluate(_text("#slot-response pre"))
        self.assertEqual(answered, '{"ok": true}')
        self.assertEqual(
            await browser.evaluate(_text("#executions tbody tr .response-body")), answered
        )
        await screenshot("dashboard-job-failing.png")

        # The healthy job: succeeded slots; pause, resume and run now through the buttons.
        await browser.evaluate(f"location.hash = '#/job/{ok_uuid}'")
        await browser.wait_for(
            "document.querySelectorAll('#timeline .slot.state-succeeded').length >= 2 && "
            f"document.querySelector('#job-run-now').dataset.jobUuid === '{ok_uuid}'",
            timeout=10,
            what="succeeded slots on the timeline",
        )

        async def paused_in_api() -> bool:
            return (await call("GET", f"/jobs/{ok_uuid}"))["paused"]

        await browser.click("#job-toggle-pause")
        await wait_for(reactor, paused_in_api, timeout=10, what="the job to be paused")
        await browser.wait_for(
            "document.querySelector('#job-toggle-pause').textContent === 'Resume'",
            timeout=10,
            what="the Resume button",
        )
        await browser.click("#job-toggle-pause")

        async def resumed_in_api() -> bool:
            return not await paused_in_api()

        await wait_for(reactor, resumed_in_api, timeout=10, what="the job to be resumed")
        await browser.wait_for(
            "document.querySelector('#job-toggle-pause').textContent === 'Pause'",
            timeout=10,
            what="the Pause button",
        )

        await browser.click("#job-run-now")
        extra = await browser.wait_for(
            "document.querySelector('#toast').dataset.executionId",
            timeout=10,
            what="the run-now execution",
        )
        await browser.wait_for(
            f"!!document.querySelector('#timeline .slot[data-execution-id=\"{extra}\"]')",
            timeout=10,
            what="the extra execution on the timeline",
        )
        executions = await call("GET", f"/jobs/{ok_uuid}/executions?limit=100")
        self.assertIn(extra, [e["execution_id"] for e in executions["items"]])
        self.assertTrue(
            any(a.item.get("execution_id") == extra for a in receiver.arrivals),
            "the receiver did not get the run-now callback",
        )
        await screenshot("dashboard-job.png")

        # Signing out forgets the credential.
        await browser.click("#sign-out")
        await browser.wait_for(SIGN_IN_SHOWN, timeout=5, what="the sign-in form again")
        self.assertIsNone(
            await browser.evaluate("sessionStorage.getItem('scheduler0.dashboard.credential')")
        )

        # Signed in again, a credential the API stops accepting sends the
        # page back to the form with the API's message at the next refresh.
        await browser.type("#api-key", headers["x-api-key"])
        await browser.type("#api-secret", headers["x-secret-key"])
        await browser.click("#signin-submit")
        await browser.wait_for(
            "!document.querySelector('#app').hidden && "
            "!!document.querySelector('#refreshed-text').textContent",
            timeout=10,
            what="the dashboard again",
        )
        await browser.evaluate(
            "sessionStorage.setItem('scheduler0.dashboard.credential', "
            f"JSON.stringify({{key: {json.dumps(headers['x-api-key'])}, secret: 'revoked'}}))"
        )
        message = await browser.wait_for(SIGN_IN_ERROR, timeout=10, what="the 401 mid-session")
        self.assertIn("unknown API key or wrong secret", message)

        self.assertEqual(browser.console_errors, [])
        # The only failed requests are the wrong-secret sign-in's.
        for entry in browser.network_errors:
            self.assertIn("401", entry)
        for path in shots:
            with open(path, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", path)


# Pixels of the chart in the succeeded and failed colours (read from the CSS).
_COUNT_CHART_COLOURS = """
(() => {
  const canvas = document.querySelector('#chart');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const css = getComputedStyle(document.documentElement);
  const rgb = (name) => {
    const hex = css.getPropertyValue('--' + name).trim().slice(1);
    return [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
  };
  const wanted = {succeeded: rgb('succeeded'), failed: rgb('failed')};
  const counts = {succeeded: 0, failed: 0};
  for (let i = 0; i < data.length; i += 4) {
    for (const [name, [r, g, b]] of Object.entries(wanted)) {
      const near = Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b);
      if (near < 6) {
        counts[name] += 1;
      }
    }
  }
  return counts;
})()
"""
