"""
The HTTP executor: it turns due executions into callback POSTs.

Deliveries are queued per callback URL and sent as JSON arrays. Batching
never waits: a URL with nothing in flight is flushed on the next reactor turn
(so everything that became due in the same turn goes in one POST), and what
arrives while a POST to that URL is in flight goes in the next one. Bodies
are split into chunks no bigger than C{payload_max_bytes}. Only a 2xx answer
is success; timeouts, connection errors, 5xx and 429 are retried with a
doubling delay (and C{Retry-After} honoured), other answers fail at once,
and so does a callback the network policy blocks. Redirects are not
followed. At most C{max_response_bytes} of an answer's body is read; past
that the connection is dropped, since the status line already decided.
At most C{max_workers} POSTs are in flight and at most C{max_queue}
deliveries wait; beyond that new work is shed and reported as skipped.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import attrs
from twisted.internet import error as neterror
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import (
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

import scheduler0
from scheduler0.netpolicy import BlockedTarget

log = Logger()

#: The error text for a single execution whose body alone exceeds the cap.
OVERSIZE_ERROR = "payload exceeds HTTPExecutorPayloadMaxSizeMb"

#: The longest C{Retry-After} the executor honours, in seconds.
RETRY_AFTER_MAX_S = 3600.0

#: How long C{stop()} waits for in-flight POSTs before cancelling them.
STOP_GRACE_S = 10.0

#: Skip reasons recorded on shed deliveries.
SKIP_QUEUE_FULL = "queue_full"
SKIP_RESOURCE_GUARD = "resource_guard"
SKIP_NODE_STOPPING = "node_stopping"
#: Recorded by the scheduler past a node's capacity (scheduler0.scheduler.admission).
SKIP_OVERLOADED = "overloaded"

# Failures of the network or the peer, worth another attempt.
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    neterror.ConnectError,
    neterror.ConnectionLost,
    neterror.ConnectionClosed,
    neterror.TimeoutError,
    neterror.DNSLookupError,
    ResponseFailed,
    ResponseNeverReceived,
    RequestTransmissionFailed,
    RequestNotSent,
    ConnectionError,
    TimeoutError,
)


# Delivery and Outcome are made once per execution, and a frozen attrs
# class costs twice a plain one to build (1.3 vs 0.5 us with these fields):
# they are treated as immutable but not enforced so (nothing changes them).
@attrs.define(eq=True, unsafe_hash=True)
class Delivery:
    """One due execution to deliver to its job's callback URL (never changed once made)."""

    execution_id: str
    job_uuid: str
    project_uuid: str
    name: str
    spec: str
    data: object
    scheduled_at: str
    callback_url: str
    timeout_s: float
    retry_max: int
    # The JSON members for job_uuid, project_uuid, name, spec and data, when
    # the caller has them ready (the scheduler keeps them per job, so a slot
    # does not re-encode its job's data).
    job_json: str | None = attrs.field(default=None, eq=False, repr=False)
    # The slot's instant in POSIX seconds, when the caller knows it (the
    # scheduler does), so lateness needs no parsing of scheduled_at.
    scheduled_s: float | None = attrs.field(default=None, eq=False, repr=False)
    # Since when the scheduler could send it (POSIX seconds: its slot, or a
    # later instant from which the node could fire), so the node can tell
    # how far behind its own work is (see L{HTTPExecutor.congested}).
    ready_s: float | None = attrs.field(default=None, eq=False, repr=False)


def job_members_json(job_uuid: str, project_uuid: str, name: str, spec: str, data: object) -> str:
    """The C{job_json} of L{Delivery}: the job's members of a callback item."""
    return json.dumps(
        {
            "job_uuid": job_uuid,
            "project_uuid": project_uuid,
            "name": name,
            "spec": spec,
            "data": data,
        },
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )[1:-1]


@attrs.define(eq=True, unsafe_hash=True)
class Outcome:
    """The final result of one delivery, handed to C{on_outcome} exactly once (never changed)."""

    delivery: Delivery
    state: str
    attempts: int
    status_code: int | None
    error: str | None
    skip_reason: str | None
    started_at: float | None
    finished_at: float


@attrs.define(eq=False)
class _Item:
    """The executor's mutable bookkeeping for one delivery."""

    delivery: Delivery
    attempts: int = 0
    started_at: float | None = None
    status_code: int | None = None
    error: str | None = None
    body: bytes = b""
    finished: bool = False


@attrs.frozen
class _Answer:
    """What one POST came to: a status code, or an error text."""

    status_code: int | None
    error: str | None
    transient: bool
    retry_after_s: float | None = None


def _encode(delivery: Delivery, attempt: int) -> bytes:
    """The JSON object for one execution as it appears in a callback body."""
    if delivery.job_json is not None:
        return (
            f'{{"execution_id":"{delivery.execution_id}",{delivery.job_json},'
            f'"scheduled_at":"{delivery.scheduled_at}","attempt":{attempt}}}'
        ).encode()
    return json.dumps(
        {
            "execution_id": delivery.execution_id,
            "job_uuid": delivery.job_uuid,
            "project_uuid": delivery.project_uuid,
            "name": delivery.name,
            "spec": delivery.spec,
            "data": delivery.data,
            "scheduled_at": delivery.scheduled_at,
            "attempt": attempt,
        },
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


@implementer(IBodyProducer)
class WholeBody:
    """
    A request body written to the connection in one piece as soon as the
    request starts. (Bytes given to treq go through a FileBodyProducer that
    writes on a later reactor turn, behind whatever else was queued for that
    turn, which is exactly when the bookkeeping of a big batch runs.)
    Give C{whole_body} to C{treq.client.HTTPClient(data_to_body_producer=)}.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def whole_body(data: Any) -> Any:
    """treq's C{data_to_body_producer}: bytes go out whole; anything else as treq does."""
    if isinstance(data, bytes):
        return WholeBody(data)
    return IBodyProducer(data)


def _body_size(item_bytes: int, count: int) -> int:
    """The size of a JSON array holding C{count} items of C{item_bytes} in total."""
    return item_bytes + 2 + max(count - 1, 0)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """
    Seconds to wait according to a C{Retry-After} header value (delta-seconds
    or an HTTP-date, read against C{now} in POSIX seconds); C{None} when the
    value is absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _short(exc: BaseException) -> str:
    """A short text for an exception, without tracebacks."""
    text = str(exc).strip()
    name = type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{name}: {text}" if text else name


class _Discard(Protocol):
    """
    Read a response body and throw it away; fire C{done} at its end, or
    drop the connection once more than C{limit} bytes have come.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.done: Deferred[None] = Deferred()
        self.limit = limit
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.received += len(data)
        if self.limit is not None and self.received > self.limit:
            self.abort()

    def connectionLost(self, reason: Failure | None = None) -> None:  # type: ignore[override]
        if not self.done.called:
            self.done.callback(None)

    def abort(self) -> None:
        """Stop reading: the connection is dropped, the answer already counts."""
        transport = self.transport
        if transport is not None:
            stop = getattr(transport, "stopProducing", None)
            if stop is not None:
                try:
                    stop()
                except Exception:  # already finished, or a transport that can't
                    pass
        if not self.done.called:
            self.done.callback(None)


@attrs.define(eq=False)
class _Attempt:
    """One POST in flight, and the way to abort it (timeout or stop)."""

    pending: Deferred[Any] | None = None
    reader: _Discard | None = None
    aborted: str | None = None

    def abort(self, why: str) -> None:
        """Give up on this POST: cancel the request, or stop reading the body."""
        if self.aborted is not None:
            return
        self.aborted = why
        if self.reader is not None:
            self.reader.abort()
        elif self.pending is not None:
            self.pending.cancel()


def _header(response: Any, name: bytes) -> str | None:
    """The first value of a response header, as text, or C{None}."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    values = headers.getRawHeaders(name)
    if not values:
        return None
    value = values[0]
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


@attrs.define(eq=False)
class HTTPExecutor:
    """
    Deliver executions to callback URLs in batched JSON POSTs, with bounded
    concurrency, a bounded queue and retries; report each delivery's final
    state to C{on_outcome}.

    C{sign}, when given, is called with the body and the deliveries in it and
    returns extra headers for that POST (the hook for callback signatures).

    C{post_observer}, when given, is called once per POST that ended with
    C{(seconds it took, status code or None when no HTTP answer came, how
    many of its deliveries will be retried)} (the hook for metrics); one
    that raises is logged once and ignored.
    """

    clock: IReactorTime
    http_client: Any
    on_outcome: Callable[[Outcome], None]
    on_started: Callable[[Delivery, float], None] = lambda delivery, at: None
    max_workers: int = 64
    max_queue: int = 10000
    payload_max_bytes: int = 2 * 1024 * 1024
    retry_delay_s: float = 1.0
    retry_delay_cap_s: float = 60.0
    paused: Callable[[], bool] = lambda: False
    sign: Callable[[bytes, list[Delivery]], dict[str, str]] | None = None
    max_response_bytes: int = 65536
    # Sent as X-Scheduler0-Node, so a receiver can tell which node fired.
    node_id: int | None = None
    post_observer: Callable[[float, int | None, int], None] | None = None

    _queues: dict[str, deque[_Item]] = attrs.field(factory=dict, init=False)
    _queue_bytes: dict[str, int] = attrs.field(factory=dict, init=False)
    _ready: deque[str] = attrs.field(factory=deque, init=False)
    _ready_set: set[str] = attrs.field(factory=set, init=False)
    _waiting: int = attrs.field(default=0, init=False)
    _url_posts: dict[str, int] = attrs.field(factory=dict, init=False)
    _chunk_ids: dict[str, int] = attrs.field(factory=dict, init=False)
    _flush_left: dict[str, int] = attrs.field(factory=dict, init=False)
    _posts: dict[Deferred[None], _Attempt] = attrs.field(factory=dict, init=False)
    _in_flight_items: int = attrs.field(default=0, init=False)
    _retrying: dict[IDelayedCall, list[_Item]] = attrs.field(factory=dict, init=False)
    _pump_call: IDelayedCall | None = attrs.field(default=None, init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    _counts: dict[str, int] = attrs.field(init=False)
    _user_agent: str = attrs.field(init=False)
    _observer_failed: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {self.max_workers!r}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must not be negative, got {self.max_queue!r}")
        if self.payload_max_bytes < 3:
            raise ValueError(
                f"payload_max_bytes must be at least 3, got {self.payload_max_bytes!r}"
            )
        if self.max_response_bytes < 0:
            raise ValueError(
                f"max_response_bytes must not be negative, got {self.max_response_bytes!r}"
            )
        self._counts = {
            "submitted": 0,
            "posts": 0,
            "succeeded": 0,
            "failed": 0,
            "skipped": 0,
            "retries": 0,
        }
        self._user_agent = f"scheduler0/{scheduler0.__version__}"

    # -- public API ----------------------------------------------------------

    def submit(self, delivery: Delivery) -> None:
        """Queue one due execution; never blocks, never raises for load (sheds instead)."""
        self._counts["submitted"] += 1
        item = _Item(delivery)
        if self._stopping:
            self._finish_skipped(item, SKIP_NODE_STOPPING)
            return
        try:
            paused = bool(self.paused())
        except Exception:
            log.failure("resource guard check failed; treating the node as not paused")
            paused = False
        if paused:
            self._finish_skipped(item, SKIP_RESOURCE_GUARD)
            return
        if self._waiting >= self.max_queue:
            # A burst (every slot of a big second at once) is not a backlog:
            # hand what free workers can take to them now, and shed only
            # what would still wait.
            self._pump()
            if self._waiting >= self.max_queue:
                self._finish_skipped(item, SKIP_QUEUE_FULL)
                return
        self._enqueue(item)

    def cancel_job(self, job_uuid: str, reason: str) -> int:
        """
        Drop every delivery of C{job_uuid} that is waiting or waiting to
        retry (a deleted or paused job fires nothing more), reporting each as
        skipped with C{reason}; return how many. POSTs already in flight are
        not recalled.
        """
        dropped: list[_Item] = []
        for url in list(self._queues):
            queue = self._queues[url]
            keep = deque(item for item in queue if item.delivery.job_uuid != job_uuid)
            if len(keep) == len(queue):
                continue
            for item in queue:
                if item.delivery.job_uuid == job_uuid:
                    dropped.append(item)
                    self._queue_bytes[url] -= len(item.body)
                    self._waiting -= 1
            if keep:
                self._queues[url] = keep
            else:
                del self._queues[url]
                del self._queue_bytes[url]
                self._flush_left.pop(url, None)
        for call, items in list(self._retrying.items()):
            keep_items = [item for item in items if item.delivery.job_uuid != job_uuid]
            if len(keep_items) == len(items):
                continue
            dropped.extend(item for item in items if item.delivery.job_uuid == job_uuid)
            if keep_items:
                items[:] = keep_items
            else:
                call.cancel()
                del self._retrying[call]
        for item in dropped:
            self._finish_skipped(item, reason)
        return len(dropped)

    def congested(self, before: float) -> set[str]:
        """
        The callback URLs whose queue begins with a first attempt that
        became ready (L{Delivery.ready_s}) before C{before}.
        """
        late = set()
        for url, queue in self._queues.items():
            head = queue[0]
            ready = head.delivery.ready_s
            if ready is not None and ready < before and head.attempts == 0:
                late.add(url)
        return late

    def queue_depth(self) -> int:
        """Deliveries waiting for a worker (not in flight, not waiting to retry)."""
        return self._waiting

    def in_flight(self) -> int:
        """POSTs in flight now (at most C{max_workers})."""
        return len(self._posts)

    def in_flight_deliveries(self) -> int:
        """Deliveries carried by the POSTs in flight now."""
        return self._in_flight_items

    def retrying(self) -> int:
        """Deliveries waiting for their retry delay to pass."""
        return sum(len(items) for items in self._retrying.values())

    def stats(self) -> dict[str, int]:
        """Counters and gauges for health checks and benchmarks."""
        return dict(
            self._counts,
            queue_depth=self._waiting,
            in_flight=len(self._posts),
            in_flight_deliveries=self._in_flight_items,
            retrying=self.retrying(),
        )

    def stop(self, grace_s: float = STOP_GRACE_S) -> Deferred[None]:
        """
        Stop taking work, cancel retry timers, and wait for in-flight POSTs
        (for at most C{grace_s}, then they are cancelled). Deliveries that
        were retrying are reported as skipped with reason C{node_stopping}.
        Deliveries never attempted are not reported at all: nothing was sent,
        so their slots are still owed, and the scheduler fires them again
        (inside the catch-up window) when the node comes back.
        """
        self._stopping = True
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        abandoned: list[_Item] = []
        for call, items in list(self._retrying.items()):
            if call.active():
                call.cancel()
            abandoned.extend(items)
        self._retrying.clear()
        for url in list(self._queues):
            abandoned.extend(item for item in self._queues[url] if item.attempts)
        self._queues.clear()
        self._queue_bytes.clear()
        self._ready.clear()
        self._ready_set.clear()
        self._waiting = 0
        for item in abandoned:
            self._finish_skipped(item, SKIP_NODE_STOPPING)

        return Deferred.fromCoroutine(self._drain(grace_s))

    async def _drain(self, grace_s: float) -> None:
        """Wait for the POSTs in flight; cancel them once C{grace_s} has passed."""
        if not self._posts:
            return
        timer = self.clock.callLater(grace_s, self._cancel_posts)
        try:
            await DeferredList(list(self._posts), consumeErrors=True)
        finally:
            if timer.active():
                timer.cancel()

    # -- queueing ------------------------------------------------------------

    def _enqueue(self, item: _Item) -> None:
        """Put C{item} at the back of its URL's queue (or fail it if it can never fit)."""
        try:
            item.body = _encode(item.delivery, item.attempts + 1)
        except (TypeError, ValueError) as exc:
            self._finish(item, "failed", error=f"data is not JSON-serializable: {_short(exc)}")
            return
        if _body_size(len(item.body), 1) > self.payload_max_bytes:
            self._finish(item, "failed", error=OVERSIZE_ERROR)
            return
        url = item.delivery.callback_url
        queue = self._queues.get(url)
        if queue is None:
            queue = self._queues[url] = deque()
            self._queue_bytes[url] = 0
        queue.append(item)
        self._queue_bytes[url] += len(item.body)
        self._waiting += 1
        self._mark_ready(url)
        self._schedule_pump()

    def _exceeds_chunk(self, url: str) -> bool:
        queue = self._queues.get(url)
        if not queue:
            return False
        return _body_size(self._queue_bytes[url], len(queue)) > self.payload_max_bytes

    def _eligible(self, url: str) -> bool:
        """
        A URL may get a new POST when it has waiting items and either nothing
        in flight, chunks left from the flush in progress, or more waiting
        than fits in one chunk.
        """
        if not self._queues.get(url):
            return False
        return (
            self._url_posts.get(url, 0) == 0
            or self._flush_left.get(url, 0) > 0
            or self._exceeds_chunk(url)
        )

    def _mark_ready(self, url: str) -> None:
        if url not in self._ready_set and self._eligible(url):
            self._ready_set.add(url)
            self._ready.append(url)

    def _schedule_pump(self) -> None:
        """Flush on the next reactor turn, so what is due together goes together."""
        if self._pump_call is None and not self._stopping:
            self._pump_call = self.clock.callLater(0, self._pump)

    def _pump(self) -> None:
        """Start POSTs round-robin over ready URLs, one chunk per URL per round."""
        self._pump_call = None
        while self._ready and len(self._posts) < self.max_workers and not self._stopping:
            url = self._ready.popleft()
            self._ready_set.discard(url)
            if not self._eligible(url):
                continue
            if self._url_posts.get(url, 0) == 0:
                # A new flush: everything waiting now belongs to it.
                self._flush_left[url] = len(self._queues[url])
                self._chunk_ids[url] = -1
            chunk = self._take_chunk(url)
            left = self._flush_left.get(url, 0) - len(chunk)
            if left > 0:
                self._flush_left[url] = left
            else:
                self._flush_left.pop(url, None)
            self._send(url, chunk)
            self._mark_ready(url)

    def _take_chunk(self, url: str) -> list[_Item]:
        """Take items from the front of C{url}'s queue while the body fits the cap."""
        queue = self._queues[url]
        chunk: list[_Item] = []
        size = 2
        while queue:
            item = queue[0]
            extra = len(item.body) + (1 if chunk else 0)
            if chunk and size + extra > self.payload_max_bytes:
                break
            queue.popleft()
            chunk.append(item)
            size += extra
            self._queue_bytes[url] -= len(item.body)
        self._waiting -= len(chunk)
        if not queue:
            del self._queues[url]
            del self._queue_bytes[url]
        return chunk

    # -- sending -------------------------------------------------------------

    def _send(self, url: str, chunk: list[_Item]) -> None:
        now = self.clock.seconds()
        first_attempts = []
        for item in chunk:
            if item.attempts == 0:
                item.started_at = now
                first_attempts.append(item)
            item.attempts += 1
        if first_attempts:
            # Reported on the next turn, so the bookkeeping does not hold up
            # the socket write of this POST.
            self.clock.callLater(0, self._report_started, first_attempts, now)
        body = b"[" + b",".join(item.body for item in chunk) + b"]"
        chunk_id = self._chunk_ids.get(url, -1) + 1
        self._chunk_ids[url] = chunk_id
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            "x-payload-chunk-id": str(chunk_id),
            "X-Scheduler0-Delivery": str(uuidlib.uuid4()),
        }
        if self.node_id is not None:
            headers["X-Scheduler0-Node"] = str(self.node_id)
        if self.sign is not None:
            try:
                headers.update(self.sign(body, [item.delivery for item in chunk]))
            except Exception:
                log.failure("signing a callback body failed")
        timeout_s = min(item.delivery.timeout_s for item in chunk)
        self._url_posts[url] = self._url_posts.get(url, 0) + 1
        self._in_flight_items += len(chunk)
        self._counts["posts"] += 1
        attempt = _Attempt()
        post = Deferred.fromCoroutine(self._post(url, body, headers, timeout_s, attempt))
        self._posts[post] = attempt
        post.addErrback(self._post_crashed)
        post.addCallback(self._posted, url, chunk, post, now)

    def _report_started(self, items: list[_Item], at: float) -> None:
        for item in items:
            if item.finished:
                # Its outcome is already reported (a very fast answer).
                continue
            try:
                self.on_started(item.delivery, at)
            except Exception:
                log.failure("on_started callback failed")

    async def _post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout_s: float,
        attempt: _Attempt,
    ) -> _Answer:
        """Make one POST with its own timeout; read and drop the response body."""
        try:
            attempt.pending = self.http_client.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                unbuffered=True,
            )
        except Exception as exc:  # a malformed URL, an unsupported scheme, ...
            return _Answer(None, f"request error: {_short(exc)}", transient=False)
        timer = self.clock.callLater(max(timeout_s, 0.0), attempt.abort, "timeout")
        try:
            try:
                response = await attempt.pending
            except Exception as exc:
                if attempt.aborted == "timeout":
                    return _Answer(None, f"timeout after {timeout_s:g}s", transient=True)
                if attempt.aborted is not None:
                    return _Answer(None, "cancelled: node stopping", transient=True)
                if isinstance(exc, BlockedTarget):
                    return _Answer(None, str(exc), transient=False)
                if isinstance(exc, _TRANSIENT_ERRORS):
                    return _Answer(None, f"connection error: {_short(exc)}", transient=True)
                return _Answer(None, f"request error: {_short(exc)}", transient=False)
            code = int(response.code)
            retry_after = None
            if code in (429, 503):
                retry_after = parse_retry_after(
                    _header(response, b"retry-after"), self.clock.seconds()
                )
            if attempt.aborted is None and hasattr(response, "deliverBody"):
                attempt.reader = _Discard(self.max_response_bytes)
                try:
                    response.deliverBody(attempt.reader)
                    await attempt.reader.done
                except Exception:
                    pass  # the status line already decided the outcome
        finally:
            if timer.active():
                timer.cancel()
        if 200 <= code < 300:
            return _Answer(code, None, transient=False)
        transient = code == 429 or 500 <= code < 600
        return _Answer(code, f"HTTP {code}", transient=transient, retry_after_s=retry_after)

    def _cancel_posts(self) -> None:
        for attempt in list(self._posts.values()):
            attempt.abort("stop")

    def _post_crashed(self, failure: Failure) -> _Answer:
        """A bug in our own code: fail the chunk rather than lose it."""
        log.failure("callback POST crashed", failure)
        return _Answer(None, "internal error", transient=False)

    def _posted(
        self, answer: _Answer, url: str, chunk: list[_Item], post: Deferred, sent_at: float
    ) -> None:
        self._posts.pop(post, None)
        remaining = self._url_posts.get(url, 1) - 1
        if remaining:
            self._url_posts[url] = remaining
        else:
            self._url_posts.pop(url, None)
            self._chunk_ids.pop(url, None)
        self._in_flight_items -= len(chunk)
        retry_groups: dict[float, list[_Item]] = {}
        # The deliveries of one POST finish together: one instant for all.
        finished_at = self.clock.seconds()
        for item in chunk:
            item.status_code = answer.status_code
            item.error = answer.error
            if answer.error is None:
                self._finish(item, "succeeded", finished_at=finished_at)
            elif not answer.transient:
                self._finish(item, "failed", finished_at=finished_at)
            elif item.attempts > item.delivery.retry_max:
                self._finish(item, "failed", finished_at=finished_at)
            elif self._stopping:
                self._finish(
                    item,
                    "failed",
                    error=f"{answer.error}; node stopping, no retry",
                    finished_at=finished_at,
                )
            else:
                delay = self.retry_delay(item.attempts, answer.retry_after_s)
                retry_groups.setdefault(delay, []).append(item)
        retried = 0
        for delay, items in retry_groups.items():
            retried += len(items)
            self._start_retry(delay, items)
        self._counts["retries"] += retried
        if self.post_observer is not None:
            try:
                self.post_observer(self.clock.seconds() - sent_at, answer.status_code, retried)
            except Exception:
                if not self._observer_failed:
                    self._observer_failed = True
                    log.failure("post_observer failed")
        self._mark_ready(url)
        self._schedule_pump()

    def _start_retry(self, delay: float, items: list[_Item]) -> None:
        """Hold C{items} for C{delay} seconds, then queue them again."""
        holder: list[IDelayedCall] = []

        def fire() -> None:
            self._retrying.pop(holder[0], None)
            for item in items:
                self._enqueue(item)

        call = self.clock.callLater(delay, fire)
        holder.append(call)
        self._retrying[call] = items

    def retry_delay(self, attempts: int, retry_after_s: float | None = None) -> float:
        """
        The wait before the retry that follows attempt number C{attempts}:
        C{retry_delay_s * 2**(attempts-1)} capped at C{retry_delay_cap_s}, or
        the server's C{Retry-After} when that is longer (up to one hour).
        """
        exponent = min(max(attempts - 1, 0), 62)
        delay = min(self.retry_delay_s * (2**exponent), self.retry_delay_cap_s)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, RETRY_AFTER_MAX_S))
        return delay

    # -- outcomes ------------------------------------------------------------

    def _finish_skipped(self, item: _Item, reason: str) -> None:
        self._finish(item, "skipped", skip_reason=reason)

    def _finish(
        self,
        item: _Item,
        state: str,
        error: str | None = None,
        skip_reason: str | None = None,
        finished_at: float | None = None,
    ) -> None:
        item.finished = True
        self._counts[state] += 1
        outcome = Outcome(
            delivery=item.delivery,
            state=state,
            attempts=item.attempts,
            status_code=item.status_code,
            error=error if error is not None else item.error,
            skip_reason=skip_reason,
            started_at=item.started_at,
            finished_at=self.clock.seconds() if finished_at is None else finished_at,
        )
        try:
            self.on_outcome(outcome)
        except Exception:
            log.failure(
                "on_outcome failed for execution {execution_id}",
                execution_id=item.delivery.execution_id,
            )
