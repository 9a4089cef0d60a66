"""
The headless-Chromium driver (L{harness.browser}) against small
static pages served by a Twisted web server on 127.0.0.1.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import TimeoutError
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from harness.browser import (
    CHROMIUM,
    CHROMIUM_PACKAGE,
    Browser,
    BrowserError,
    chromium_available,
)
from harness.waiting import wait_for

FORM_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>form</title></head>
<body>
  <input id="name" value="old text">
  <button id="greet" type="button">Greet</button>
  <p id="out"></p>
  <div id="hidden" hidden>invisible</div>
  <script>
    document.getElementById("greet").addEventListener("click", () => {
      document.getElementById("out").textContent = "hello " + document.getElementById("name").value;
    });
    setTimeout(() => { window.later = "arrived"; }, 300);
  </script>
</body></html>
"""

NOISY_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>noisy</title></head>
<body>
  <script>
    console.log("just information");
    console.error("something broke", 42);
    setTimeout(() => { throw new Error("uncaught kaboom"); }, 0);
  </script>
</body></html>
"""


class _StrictPage(Resource):
    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", b"default-src 'self'")
        return b"<!doctype html><title>strict</title><script>window.inline_ran = 1;</script>"


def _skip_without_chromium() -> None:
    if not chromium_available():
        raise SkipTest(f"{CHROMIUM} is missing: apt-get install -y {CHROMIUM_PACKAGE}")


class BrowserDriverTests(TestCase):
    timeout = 60

    async def _serve(self) -> str:
        root = Resource()
        root.putChild(b"form", Data(FORM_PAGE, "text/html; charset=utf-8"))
        root.putChild(b"noisy", Data(NOISY_PAGE, "text/html; charset=utf-8"))
        root.putChild(b"strict", _StrictPage())
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root))
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def _browser(self) -> Browser:
        _skip_without_chromium()
        browser = await Browser.launch(reactor)
        self.addCleanup(browser.close)
        return browser

    async def test_open_and_evaluate(self) -> None:
        """A page opens at a URL served locally and expressions evaluate to JSON values in it."""
        base = await self._serve()
        browser = await self._browser()
        await browser.open(base + "/form")
        self.assertEqual(await browser.evaluate("document.title"), "form")
        self.assertEqual(await browser.evaluate("({a: [1, 2], b: null})"), {"a": [1, 2], "b": None})
        self.assertEqual(await browser.evaluate("Promise.resolve(6 * 7)"), 42)
        self.assertEqual(browser.console_errors, [])

    async def test_evaluate_raises_what_the_page_throws(self) -> None:
        """An expression that throws fails with BrowserError carrying the JavaScript message."""
        base = await self._serve()
        browser = await self._browser()
        await browser.open(base + "/form")
        with self.assertRaises(BrowserError) as caught:
            await browser.evaluate("(() => { throw new TypeError('bad thing'); })()")
        self.assertIn("bad thing", str(caught.exception))

    async def test_wait_for_returns_once_true(self) -> None:
        """wait_for polls until the condition holds and returns its value."""
        base = await self._serve()
        browser = await self._browser()
        await browser.open(base + "/form")
        self.assertEqual(await browser.wait_for("window.later", timeout=5), "arrived")

    async def test_wait_for_is_bounded(self) -> None:
        """wait_for gives up after its timeout with a TimeoutError naming what it waited for."""
        base = await self._serve()
        browser = await self._browser()
        await browser.open(base + "/form")
        with self.assertRaises(TimeoutError) as caught:
            await browser.wait_for("window.never", timeout=0.5, what="a thing that never happens")
        self.assertIn("a thing that never happens", str(caught.exception))

    async def test_type_and_click(self) -> None:
        """type() replaces a field's text and click() presses a button with the mouse."""
        base = await self._serve()
        browser = await self._browser()
        await browser.open(base + "/form")
        await browser.type("#name", "<b>world</b>")
        typed = await browser.evaluate("document.querySelector('#name').value")
        self.assertEqual(typed, "<b>world</b>")
        await browser.click("#greet")
        self.assertEqual(
            await browser.wait_for("document.querySelector('#out').textContent", timeout=5),
            "hello <b>world</b>",
        )

    async def test_click_refuses_missing_and_hidden_elements(self) -> None:
        """Clicking a selector that matches nothing, or nothing visible, is an error."""
        base = await self._serve()
        browser = await self._browser()
        await browser.open(base + "/form")
        with self.assertRaises(BrowserError) as caught:
            await browser.click("#no-such-thing")
        self.assertIn("#no-such-thing", str(caught.exception))
        with self.assertRaises(BrowserError) as caught:
            await browser.click("#hidden")
        self.assertIn("not visible", str(caught.exception))

    async def test_console_errors_are_collected(self) -> None:
        """console.error calls and uncaught exceptions are recorded; console.log is not."""
        base = await self._serve()
        browser = await self._browser()
        await browser.open(base + "/noisy")
        errors = browser.console_errors
        await wait_for(reactor, lambda: len(errors) >= 2, timeout=5, what="two console errors")
        self.assertTrue(any("something broke 42" in e for e in errors), errors)
        self.assertTrue(any("uncaught kaboom" in e for e in errors), errors)
        self.assertFalse(any("just information" in e for e in errors), errors)

    async def test_content_security_policy_violations_are_console_errors(self) -> None:
        """An inline script the page's Content-Security-Policy blocks is reported as an error."""
        base = await self._serve()
        browser = await self._browser()
        await browser.open(base + "/strict")
        errors = browser.console_errors
        await wait_for(reactor, lambda: errors, timeout=5, what="the CSP violation")
        self.assertIn("Content Security Policy", " ".join(errors))
        self.assertIsNone(await browser.evaluate("window.inline_ran || null"))

    async def test_failed_requests_are_network_errors(self) -> None:
        """A resource the page cannot load is a network error, not a console error."""
        base = await self._serve()
        browser = await self._browser()
        await browser.open(base + "/form")
        status = await browser.evaluate(f"fetch({base + '/missing'!r}).then(r => r.status)")
        self.assertEqual(status, 404)
        await wait_for(
            reactor, lambda: browser.network_errors, timeout=5, what="a network error entry"
        )
        self.assertTrue(any("404" in e for e in browser.network_errors), browser.network_errors)
        self.assertEqual(browser.console_errors, [])

    async def test_screenshot_is_a_png(self) -> None:
        """screenshot() writes the viewport as a PNG file."""
        base = await self._serve()
        browser = await self._browser()
        await browser.open(base + "/form")
        path = os.path.abspath(os.path.join(self.mktemp(), "shot.png"))
        self.assertEqual(await browser.screenshot(path), path)
        with open(path, "rb") as f:
            header = f.read(24)
        self.assertEqual(header[:8], b"\x89PNG\r\n\x1a\n")
        width = int.from_bytes(header[16:20], "big")
        height = int.from_bytes(header[20:24], "big")
        self.assertEqual((width, height), (1400, 1000))

    async def test_close_ends_the_process_and_removes_the_profile(self) -> None:
        """close() ends the browser process and deletes its temporary profile."""
        _skip_without_chromium()
        browser = await Browser.launch(reactor)
        pid = browser._transport.pid
        profile = browser.user_data_dir
        self.assertTrue(os.path.isdir(profile))
        await browser.close()
        self.assertFalse(os.path.exists(profile))
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        with self.assertRaises(BrowserError):
            await browser.evaluate("1")

    async def test_missing_executable_is_named(self) -> None:
        """Launching a browser that is not installed fails naming the apt package."""
        with self.assertRaises(BrowserError) as caught:
            await Browser.launch(reactor, executable="/nonexistent/chromium")
        self.assertIn("apt-get install -y chromium", str(caught.exception))
