"""
A callback receiver for benchmarks that is never the bottleneck.

A bare HTTP/1.1 server protocol (keep-alive, pipelining, Content-Length and
chunked bodies) that records, per POST, the reactor time at which the body
completed and the raw body, answers 200 at once, and parses nothing while it
runs: the JSON is parsed only when the records are dumped, after a window.

It runs in a process of its own, driven over stdin/stdout:

    python -m bench.receiver [--port 0]

prints C{listening PORT}, then answers one line per command:
C{reset} (forget the records, restart the CPU clock) -> C{ok};
C{dump PATH} (parse and write the records as tab-separated items, then
forget them) -> one JSON line with the counts and the CPU the process used
since the last reset; C{quit} stops it. L{ReceiverProcess} drives it from a
benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from datetime import datetime
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.protocols.basic import LineReceiver

MAX_HEAD = 64 * 1024
RESPONSE_BODY = b'{"ok": true}'
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(RESPONSE_BODY)).encode()
    + b"\r\n\r\n"
    + RESPONSE_BODY
)
OK_CLOSE = OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


def _error(code: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


@attrs.frozen
class Post:
    """One POST as it arrived: reactor time when its body completed, path, raw body."""

    at: float
    path: str
    body: bytes


@attrs.frozen
class Item:
    """One execution object of a callback body, with the arrival time of its POST."""

    arrival: float
    path: str
    execution_id: str
    job_uuid: str
    scheduled_at: float
    attempt: int


@attrs.define(eq=False)
class Recorder:
    """Where the protocol puts each complete POST; nothing here parses JSON."""

    clock: Any
    posts: list[Post] = attrs.field(factory=list)
    connections: int = 0
    body_bytes: int = 0
    rejected: int = 0

    def record(self, path: str, body: bytes) -> None:
        self.posts.append(Post(self.clock.seconds(), path, body))
        self.body_bytes += len(body)

    def take(self) -> list[Post]:
        """The records so far; the recorder starts empty again."""
        posts, self.posts = self.posts, []
        self.body_bytes = 0
        return posts


class FastHTTP(Protocol):
    """
    The server side of one connection: parse request heads by hand, collect
    the body, hand it to the recorder and answer 200 without waiting.
    """

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._buffer = bytearray()
        self._path = ""
        self._close_after = False
        # None: reading a request head; an int: body bytes still wanted
        # (Content-Length); "chunked": reading chunks.
        self._need: int | str | None = None
        self._chunks: list[bytes] = []
        self._chunk_left = -1

    def connectionMade(self) -> None:
        self.recorder.connections += 1

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while self.transport is not None and not self.transport.disconnecting:
            if self._need is None:
                if not self._read_head():
                    return
            elif self._need == "chunked":
                if not self._read_chunk():
                    return
            else:
                need = self._need
                if len(self._buffer) < need:  # type: ignore[operator]
                    return
                body = bytes(self._buffer[:need])
                del self._buffer[:need]
                self._complete(body)

    def _read_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                self._reject(431, "Request Header Fields Too Large", "request head over 64 KiB")
            return False
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        lines = head.split("\r\n")
        while lines and not lines[0]:  # stray CRLF between requests
            lines.pop(0)
        if not lines:
            return True
        parts = lines[0].split(" ")
        if len(parts) != 3:
            self._reject(400, "Bad Request", "malformed request line")
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        self._close_after = connection == "close" or (
            version == "HTTP/1.0" and connection != "keep-alive"
        )
        self._path = target.split("?", 1)[0]
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._need = "chunked"
            self._chunks = []
            self._chunk_left = -1
            return True
        length = headers.get("content-length")
        if length is None:
            if method == "POST":
                self._reject(411, "Length Required", "POST needs Content-Length or chunked")
                return False
            self._need = 0
            return True
        try:
            self._need = int(length)
        except ValueError:
            self._reject(400, "Bad Request", f"content-length: not an integer: {length!r}")
            return False
        return True

    def _read_chunk(self) -> bool:
        if self._chunk_left < 0:
            end = self._buffer.find(b"\r\n")
            if end < 0:
                return False
            size_text = bytes(self._buffer[:end]).split(b";", 1)[0].strip()
            del self._buffer[: end + 2]
            try:
                self._chunk_left = int(size_text, 16)
            except ValueError:
                self._reject(400, "Bad Request", "malformed chunk size")
                return False
            if self._chunk_left == 0:
                self._chunk_left = -2  # now the (empty) trailer section
        if self._chunk_left == -2:
            if self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            else:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return False
                del self._buffer[: end + 4]
            body = b"".join(self._chunks)
            self._chunks = []
            self._chunk_left = -1
            self._complete(body)
            return True
        if len(self._buffer) < self._chunk_left + 2:
            return False
        self._chunks.append(bytes(self._buffer[: self._chunk_left]))
        del self._buffer[: self._chunk_left + 2]
        self._chunk_left = -1
        return True

    def _complete(self, body: bytes) -> None:
        self._need = None
        self.recorder.record(self._path, body)
        # A slow or hung endpoint, for bench degraded: /slow/<ms>/... answers
        # after that many milliseconds, /hang/... never (the client times out).
        if self._path.startswith("/hang/"):
            return
        if self._path.startswith("/slow/"):
            try:
                delay = int(self._path.split("/")[2]) / 1000.0
            except (IndexError, ValueError):
                delay = 0.0
            self.recorder.clock.callLater(delay, self._answer)
            return
        self._answer()

    def _answer(self) -> None:
        if self.transport is None or self.transport.disconnecting:
            return
        if self._close_after:
            self.transport.write(OK_CLOSE)
            self.transport.loseConnection()
        else:
            self.transport.write(OK)

    def _reject(self, code: int, reason: str, message: str) -> None:
        self.recorder.rejected += 1
        self.transport.write(_error(code, reason, message))
        self.transport.loseConnection()


class FastHTTPFactory(Factory):
    """Builds L{FastHTTP} protocols that all feed one recorder."""

    noisy = False

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def buildProtocol(self, addr: Any) -> FastHTTP:
        return FastHTTP(self.recorder)


def _instant(text: str, cache: dict[str, float]) -> float:
    value = cache.get(text)
    if value is None:
        value = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        cache[text] = value
    return value


def parse_posts(posts: list[Post]) -> list[Item]:
    """Turn raw POSTs into items (a body is one execution object or an array of them)."""
    items: list[Item] = []
    cache: dict[str, float] = {}
    for post in posts:
        try:
            body = json.loads(post.body)
        except ValueError:
            continue
        for obj in body if isinstance(body, list) else [body]:
            if not isinstance(obj, dict):
                continue
            scheduled = obj.get("scheduled_at")
            items.append(
                Item(
                    arrival=post.at,
                    path=post.path,
                    execution_id=str(obj.get("execution_id", "")),
                    job_uuid=str(obj.get("job_uuid", "")),
                    scheduled_at=_instant(scheduled, cache)
                    if isinstance(scheduled, str)
                    else float("nan"),
                    attempt=int(obj.get("attempt") or 1),
                )
            )
    return items


def write_items(items: list[Item], path: str) -> None:
    """Tab-separated: arrival, path, execution_id, job_uuid, scheduled_at, attempt."""
    with open(path, "w") as f:
        for i in items:
            f.write(
                f"{i.arrival!r}\t{i.path}\t{i.execution_id}\t{i.job_uuid}\t"
                f"{i.scheduled_at!r}\t{i.attempt}\n"
            )


def read_items(path: str) -> list[Item]:
    """The items L{write_items} wrote."""
    items = []
    with open(path) as f:
        for line in f:
            arrival, url_path, execution_id, job_uuid, scheduled, attempt = line.rstrip("\n").split(
                "\t"
            )
            items.append(
                Item(
                    float(arrival), url_path, execution_id, job_uuid, float(scheduled), int(attempt)
                )
            )
    return items


def _cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


class _Control(LineReceiver):
    """The receiver process's command channel on stdin/stdout."""

    delimiter = b"\n"

    def __init__(self, recorder: Recorder, stop: Any) -> None:
        self.recorder = recorder
        self.stop = stop
        self._mark = (time.monotonic(), *_cpu_seconds())

    def lineReceived(self, line: bytes) -> None:
        command, _, argument = line.decode().strip().partition(" ")
        if command == "reset":
            self.recorder.take()
            self._mark = (time.monotonic(), *_cpu_seconds())
            self.sendLine(b"ok")
        elif command == "dump":
            wall0, user0, sys0 = self._mark
            user1, sys1 = _cpu_seconds()
            wall = time.monotonic() - wall0
            posts = self.recorder.take()
            started = time.monotonic()
            items = parse_posts(posts)
            write_items(items, argument)
            parse_s = time.monotonic() - started
            cpu = (user1 - user0) + (sys1 - sys0)
            stats = {
                "posts": len(posts),
                "items": len(items),
                "connections_total": self.recorder.connections,
                "rejected": self.recorder.rejected,
                "largest_body_bytes": max((len(p.body) for p in posts), default=0),
                "wall_s": round(wall, 3),
                "cpu_user_s": round(user1 - user0, 3),
                "cpu_sys_s": round(sys1 - sys0, 3),
                "cpu_percent_of_one_core": round(100 * cpu / wall, 2) if wall > 0 else 0.0,
                "parse_after_run_s": round(parse_s, 3),
            }
            self._mark = (time.monotonic(), *_cpu_seconds())
            self.sendLine(json.dumps(stats).encode())
        elif command == "quit":
            self.sendLine(b"bye")
            self.stop()
        else:
            self.sendLine(json.dumps({"error": f"unknown command {command!r}"}).encode())

    def connectionLost(self, reason: Any = None) -> None:
        self.stop()


def serve(argv: list[str] | None = None) -> None:
    """Run the receiver process (see the module docstring)."""
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO

    parser = argparse.ArgumentParser(description="fast benchmark callback receiver")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    recorder = Recorder(reactor)
    port = reactor.listenTCP(
        args.port, FastHTTPFactory(recorder), backlog=1024, interface="127.0.0.1"
    )

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    control = _Control(recorder, stop)
    StandardIO(control)
    control.sendLine(f"listening {port.getHost().port}".encode())
    reactor.run()


class LineChild(ProcessProtocol):
    """
    A benchmark's child process driven by one-line commands on its stdin,
    each answered by one line on its stdout (in order); C{quit} ends it.
    """

    #: Named in the error the waiting commands get when the child exits.
    what = "child process"

    def __init__(self) -> None:
        self._lines = bytearray()
        self._waiting: list[Deferred] = []
        self.ended: Deferred = Deferred()
        self.errors = bytearray()

    def _next_line(self) -> Deferred:
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    async def _ask(self, command: str) -> str:
        answer = self._next_line()
        self.transport.write(command.encode() + b"\n")
        return await answer

    async def stop(self) -> None:
        if not self.ended.called:
            self.transport.write(b"quit\n")
            await self.ended

    def outReceived(self, data: bytes) -> None:
        self._lines += data
        while b"\n" in self._lines:
            line, _, rest = bytes(self._lines).partition(b"\n")
            self._lines = bytearray(rest)
            if self._waiting:
                self._waiting.pop(0).callback(line.decode())

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason: Any) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(RuntimeError(f"{self.what} exited: {bytes(self.errors).decode()[-2000:]}"))
        self.ended.callback(None)


class ReceiverProcess(LineChild):
    """Start the receiver as a child process and drive it from a benchmark."""

    what = "receiver"

    def __init__(self, reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        self.port = 0
        self.pid = 0

    async def start(self) -> int:
        """Spawn it and return the port it listens on."""
        from harness.process import REPO_ROOT

        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        answer = self._next_line()
        transport = self.reactor.spawnProcess(
            self, sys.executable, [sys.executable, "-m", "bench.receiver"], env=env, path=REPO_ROOT
        )
        self.pid = transport.pid
        line = await answer
        self.port = int(line.split()[1])
        return self.port

    async def reset(self) -> None:
        await self._ask("reset")

    async def dump(self, path: str) -> tuple[dict, list[Item]]:
        """The receiver's stats since the last reset, and the items it recorded."""
        stats = json.loads(await self._ask(f"dump {path}"))
        return stats, read_items(path)


if __name__ == "__main__":
    serve()
