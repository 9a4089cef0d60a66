"""
Drive a headless Chromium from tests through the Chrome DevTools Protocol
over C{--remote-debugging-pipe}: commands go to the browser on its fd 3 and
replies and events come back on its fd 4, each a JSON message ended by a NUL
byte. Only Twisted is needed: no websocket library, no browser package.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import threads
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

log = Logger()

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_PACKAGE = "chromium"  # the Debian package that installs it

COMMAND_FD = 3
EVENT_FD = 4
STDERR_KEEP = 64 * 1024

BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


class BrowserError(Exception):
    """The browser refused a command, a script threw, or the browser went away."""


def chromium_available(executable: str = CHROMIUM) -> bool:
    """Whether the Chromium binary the driver starts is installed here."""
    return os.access(executable, os.X_OK)


def _later(clock: Any, seconds: float) -> Deferred:
    d: Deferred = Deferred()
    clock.callLater(seconds, d.callback, None)
    return d


def _with_timeout(clock: Any, d: Deferred, seconds: float, what: str) -> Deferred:
    """C{d}, failing with C{TimeoutError} naming C{what} if it has not fired in time."""
    timed_out: Deferred = Deferred()

    def expire() -> None:
        timed_out.errback(TimeoutError(f"timed out after {seconds}s waiting for {what}"))
        d.cancel()

    call = clock.callLater(seconds, expire)

    def done(result: Any) -> Any:
        if call.active():
            call.cancel()
            timed_out.callback(result)
        return None

    d.addBoth(done)
    return timed_out


class _Pipe(ProcessProtocol):
    """The browser process: frames its fd 4 into messages, keeps its stderr tail."""

    def __init__(self, on_message: Callable[[dict], None]) -> None:
        self.on_message = on_message
        self.buffer = bytearray()
        self.stderr = bytearray()
        self.ended = False
        self.reason: Any = None
        self._end_waiters: list[Deferred] = []
        self.on_end: Callable[[Any], None] = lambda reason: None

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == EVENT_FD:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\0")
                if end < 0:
                    break
                raw = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                try:
                    message = json.loads(raw)
                except ValueError:
                    log.warn("unreadable DevTools message: {raw!r}", raw=raw[:200])
                    continue
                self.on_message(message)
        elif childFD in (1, 2):
            self.stderr += data
            del self.stderr[:-STDERR_KEEP]

    def when_ended(self) -> Deferred:
        """A new Deferred that fires with how the process ended, once it has."""
        d: Deferred = Deferred()
        if self.ended:
            d.callback(self.reason)
        else:
            self._end_waiters.append(d)
        return d

    def processEnded(self, reason: Any) -> None:
        self.ended = True
        self.reason = reason.value
        self.on_end(reason.value)
        waiters, self._end_waiters = self._end_waiters, []
        for d in waiters:
            if not d.called:
                d.callback(reason.value)


@attrs.define(eq=False)
class Browser:
    """
    One headless Chromium with one open page. Make it with L{launch}; end it
    with L{close}. Console errors, uncaught exceptions and error log entries
    of the page are collected so a test can assert there were none.
    """

    reactor: Any
    user_data_dir: str
    _pipe: _Pipe | None = None
    _transport: Any = None
    _next_id: int = 0
    _pending: dict[int, Deferred] = attrs.field(factory=dict)
    _waiters: list[tuple[str, Callable[[dict], bool], Deferred]] = attrs.field(factory=list)
    session_id: str | None = None
    target_id: str | None = None
    # Uncaught exceptions, console.error/assert, and error entries of the
    # page's log other than failed network requests.
    console_errors: list[str] = attrs.field(factory=list)
    # "Failed to load resource" entries: an API answering 401 on purpose
    # shows here, so tests judge these separately.
    network_errors: list[str] = attrs.field(factory=list)
    command_timeout: float = 15.0
    window_size: tuple[int, int] = (1400, 1000)

    @classmethod
    async def launch(
        cls,
        reactor: Any,
        *,
        executable: str = CHROMIUM,
        window_size: tuple[int, int] = (1400, 1000),
        extra_flags: tuple[str, ...] = (),
    ) -> Browser:
        """Start Chromium with a fresh profile and wait until it answers on the pipe."""
        if not chromium_available(executable):
            raise BrowserError(
                f"{executable} is not installed (apt-get install -y {CHROMIUM_PACKAGE})"
            )
        user_data_dir = tempfile.mkdtemp(prefix="scheduler0-chromium-")
        browser = cls(reactor, user_data_dir, window_size=window_size)
        browser._pipe = _Pipe(browser._received)
        browser._pipe.on_end = browser._ended
        argv = [
            executable,
            *BROWSER_FLAGS,
            f"--user-data-dir={user_data_dir}",
            f"--window-size={window_size[0]},{window_size[1]}",
            *extra_flags,
            "about:blank",
        ]
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
        env.setdefault("HOME", user_data_dir)
        browser._transport = reactor.spawnProcess(
            browser._pipe,
            executable,
            argv,
            env=env,
            childFDs={0: "w", 1: "r", 2: "r", COMMAND_FD: "w", EVENT_FD: "r"},
        )
        try:
            await browser.send("Browser.getVersion", session=False)
        except BaseException:
            await browser.close()
            raise
        return browser

    # -- the protocol ------------------------------------------------------

    def send(self, method: str, params: dict | None = None, *, session: bool = True) -> Deferred:
        """
        Send one DevTools command (to the open page's session unless
        C{session=False}); fires with its C{result} or fails with
        L{BrowserError}.
        """
        if self._pipe is None or self._pipe.ended:
            return Deferred.fromCoroutine(self._gone(method))
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session_id is not None:
            message["sessionId"] = self.session_id
        d: Deferred = Deferred()
        self._pending[self._next_id] = d
        self._transport.writeToChild(COMMAND_FD, json.dumps(message).encode("utf-8") + b"\0")
        return _with_timeout(self.reactor, d, self.command_timeout, f"DevTools {method}")

    async def _gone(self, method: str) -> Any:
        raise BrowserError(f"{method}: the browser has exited{self._stderr_tail()}")

    def _received(self, message: dict) -> None:
        if "id" in message:
            d = self._pending.pop(message["id"], None)
            if d is None:
                return
            if "error" in message:
                error = message["error"]
                d.errback(BrowserError(f"{error.get('message')} ({error.get('data', '')})"))
            else:
                d.callback(message.get("result", {}))
            return
        method = message.get("method", "")
        params = message.get("params", {})
        if message.get("sessionId") == self.session_id:
            self._note_page_event(method, params)
        still = []
        for wanted, predicate, d in self._waiters:
            if d.called:
                continue
            if wanted == method and predicate(message):
                d.callback(params)
            else:
                still.append((wanted, predicate, d))
        self._waiters = still

    def _note_page_event(self, method: str, params: dict) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            texts = [
                str(arg.get("value", arg.get("description", arg.get("type"))))
                for arg in params.get("args", ())
            ]
            self.console_errors.append(f"console.{params['type']}: {' '.join(texts)}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception") or {}
            text = exception.get("description") or details.get("text", "exception")
            self.console_errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") != "error":
                return
            text = f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
            if entry.get("source") == "network":
                self.network_errors.append(text)
            else:
                self.console_errors.append(text)

    def _ended(self, reason: Any) -> None:
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(BrowserError(f"the browser exited ({reason}){self._stderr_tail()}"))
        waiters, self._waiters = self._waiters, []
        for _, _, d in waiters:
            if not d.called:
                d.errback(BrowserError(f"the browser exited ({reason})"))

    def _stderr_tail(self) -> str:
        if self._pipe is None or not self._pipe.stderr:
            return ""
        tail = bytes(self._pipe.stderr[-2000:]).decode("utf-8", "replace")
        return f"; its output ended with:\n{tail}"

    def wait_event(
        self, method: str, predicate: Callable[[dict], bool] = lambda m: True, timeout: float = 15
    ) -> Deferred:
        """Fires with the params of the next event C{method} that C{predicate} accepts."""
        d: Deferred = Deferred()
        self._waiters.append((method, predicate, d))
        return _with_timeout(self.reactor, d, timeout, f"the event {method}")

    # -- the page ----------------------------------------------------------

    async def open(self, url: str, timeout: float = 15) -> None:
        """Open a page (one per browser) and navigate it to C{url}, waiting for its load event."""
        if self.session_id is None:
            target = await self.send("Target.createTarget", {"url": "about:blank"}, session=False)
            self.target_id = target["targetId"]
            attached = await self.send(
                "Target.attachToTarget",
                {"targetId": self.target_id, "flatten": True},
                session=False,
            )
            self.session_id = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                await self.send(f"{domain}.enable")
            # The page gets exactly the window's size (headless keeps some for
            # browser chrome otherwise), so screenshots have that size.
            width, height = self.window_size
            await self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
        await self.navigate(url, timeout)

    async def navigate(self, url: str, timeout: float = 15) -> None:
        """Load C{url} in the open page and wait for its load event."""
        session = self.session_id
        loaded = self.wait_event(
            "Page.loadEventFired", lambda m: m.get("sessionId") == session, timeout
        )
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            loaded.cancel()
            loaded.addErrback(lambda _: None)
            raise BrowserError(f"navigating to {url} failed: {result['errorText']}")
        await loaded

    async def evaluate(self, expression: str) -> Any:
        """
        The value of a JavaScript expression in the page (awaited if it is a
        promise, returned as JSON); a thrown error becomes L{BrowserError}.
        """
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        details = result.get("exceptionDetails")
        if details:
            exception = details.get("exception") or {}
            text = exception.get("description") or details.get("text", "exception")
            raise BrowserError(f"evaluating {expression[:80]!r} threw: {text}")
        return result.get("result", {}).get("value")

    async def wait_for(
        self, condition: str, *, timeout: float = 10, interval: float = 0.1, what: str = ""
    ) -> Any:
        """
        Evaluate the JavaScript C{condition} every C{interval} seconds until
        it is truthy, and return its value; raise C{TimeoutError} after
        C{timeout} seconds, naming C{what} (or the condition).
        """
        deadline = self.reactor.seconds() + timeout
        last: Any = None
        while True:
            try:
                last = await self.evaluate(condition)
            except BrowserError as error:
                last = error
            else:
                if last:
                    return last
            if self.reactor.seconds() >= deadline:
                raise TimeoutError(
                    f"timed out after {timeout}s waiting for {what or condition!r} "
                    f"(last value: {last!r})"
                )
            await _later(self.reactor, interval)

    async def _center_of(self, selector: str) -> tuple[float, float]:
        box = await self.evaluate(
            "(() => {"
            f"const el = document.querySelector({json.dumps(selector)});"
            "if (!el) return null;"
            "el.scrollIntoView({block: 'center', inline: 'center'});"
            "const r = el.getBoundingClientRect();"
            "return {x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width, h: r.height};"
            "})()"
        )
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        if not box["w"] or not box["h"]:
            raise BrowserError(f"the element {selector!r} is not visible")
        return box["x"], box["y"]

    async def _hit(self, selector: str, x: float, y: float) -> bool:
        """Whether the point (x, y) of the viewport is on the element C{selector} names."""
        return bool(
            await self.evaluate(
                "(() => {"
                f"const el = document.querySelector({json.dumps(selector)});"
                f"const top = document.elementFromPoint({x}, {y});"
                "return !!el && !!top && (el === top || el.contains(top));"
                "})()"
            )
        )

    async def click(self, selector: str, settle: float = 2.0) -> None:
        """
        Click the middle of the first element matching C{selector} with the
        mouse, once that point is on it: a page still laying itself out (an
        answer arriving above the element) moves it, and a click at the old
        point would land on something else. Tried for up to C{settle} seconds.
        """
        deadline = self.reactor.seconds() + settle
        x, y = await self._center_of(selector)
        while not await self._hit(selector, x, y) and self.reactor.seconds() < deadline:
            await _later(self.reactor, 0.05)
            x, y = await self._center_of(selector)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            params: dict[str, Any] = {"type": kind, "x": x, "y": y}
            if kind != "mouseMoved":
                params.update(button="left", clickCount=1)
            await self.send("Input.dispatchMouseEvent", params)

    async def hover(self, selector: str) -> None:
        """Move the mouse over the middle of the first element matching C{selector}."""
        x, y = await self._center_of(selector)
        await self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    async def type(self, selector: str, text: str) -> None:
        """Replace the value of the field matching C{selector} by typing C{text} into it."""
        found = await self.evaluate(
            "(() => {"
            f"const el = document.querySelector({json.dumps(selector)});"
            "if (!el) return false;"
            "el.focus(); if (el.select) el.select(); return true;"
            "})()"
        )
        if not found:
            raise BrowserError(f"no element matches {selector!r}")
        # Typing over the selection replaces what was there.
        await self.send("Input.insertText", {"text": text})

    async def screenshot(self, path: str) -> str:
        """Save a PNG of the page's viewport to C{path}; returns C{path}."""
        result = await self.send("Page.captureScreenshot", {"format": "png"})
        data = base64.b64decode(result["data"])
        await threads.deferToThread(_write_file, path, data)
        return path

    # -- ending ------------------------------------------------------------

    async def close(self, timeout: float = 5) -> None:
        """
        Ask the browser to close, kill it if it has not exited in
        C{timeout} seconds, and remove its profile directory.
        """
        pipe = self._pipe
        if pipe is not None and not pipe.ended:
            exited = _with_timeout(self.reactor, pipe.when_ended(), timeout, "the browser to exit")
            try:
                await self.send("Browser.close", session=False)
            except Exception:
                pass  # it may exit before it answers
            try:
                await exited
            except TimeoutError:
                self._transport.signalProcess("KILL")
                await pipe.when_ended()
        if pipe is not None and isinstance(pipe.reason, ProcessTerminated):
            log.info("chromium ended: {reason}", reason=pipe.reason)
        await threads.deferToThread(shutil.rmtree, self.user_data_dir, True)


def _write_file(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


__all__ = [
    "CHROMIUM",
    "CHROMIUM_PACKAGE",
    "Browser",
    "BrowserError",
    "chromium_available",
]
