"""
The HTTP executor: it turns due executions into callback POSTs.

Deliveries are queued per callback URL and sent as JSON arrays. Batching
never waits: a URL is flushed on the next reactor turn (so everything that
became due in the same turn goes in one POST), and it may have up to
C{max_per_url} POSTs in flight (and its host up to C{max_per_host}), so a
slow endpoint does not hold back the next slot of its jobs. Bodies are
split into chunks no bigger than C{payload_max_bytes}. Only a 2xx answer is
success; timeouts, connection errors, 5xx and 429 are retried with a
doubling delay (and C{Retry-After} honoured), other answers fail at once,
and so does a callback the network policy blocks. Redirects are not
followed. At most C{max_response_bytes} of an answer's body is read; past
that the connection is dropped, since the status line already decided; the
first C{response_excerpt_bytes} of a failed attempt's answer are kept for
its record.

At most C{max_workers} POSTs are in flight and at most C{max_queue}
deliveries wait; beyond that new work is shed and reported as skipped. A
first attempt that finds its URL or host at its bound waits at most
L{ENDPOINT_WAIT_S} and is then skipped (C{endpoint_busy}); first attempts go
before retries, and a retry that cannot start in that time waits for its
next retry instead (its retries then run out sooner). A job's
L{DeliveryPolicy} may forbid overlapping runs (a slot due while the
previous one is still running is skipped, C{still_running}) or replace the
running one (abandoned and recorded as skipped, C{replaced}).
"""

from __future__ import annotations

import json
import typing
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import attrs
from twisted.internet import error as neterror
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

import scheduler0
from scheduler0.delivery import (
    SKIP_ENDPOINT_BUSY,
    SKIP_NODE_STOPPING,
    SKIP_QUEUE_FULL,
    SKIP_REPLACED,
    SKIP_RESOURCE_GUARD,
    SKIP_STILL_RUNNING,
    Delivery,
    Outcome,
)
from scheduler0.model import ALLOW, FORBID
from scheduler0.netpolicy import BlockedTarget

log = Logger()

#: The error text for a single execution whose body alone exceeds the cap.
OVERSIZE_ERROR = "payload exceeds HTTPExecutorPayloadMaxSizeMb"

#: The longest C{Retry-After} the executor honours, in seconds.
RETRY_AFTER_MAX_S = 3600.0

#: How long C{stop()} waits for in-flight POSTs before cancelling them.
STOP_GRACE_S = 10.0

#: How long a first attempt may wait for its URL or host to be below its
#: bound before it is skipped (C{endpoint_busy}): as long as the scheduler
#: lets a slot be late before it sheds it (admission.LATE_S).
ENDPOINT_WAIT_S = 1.0
#: How often waiting deliveries of endpoints at their bound are looked at.
SWEEP_S = 0.25


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
    # When it joined its URL's queue (for this attempt).
    queued_at: float = 0.0
    # Retries that could not start because the endpoint stayed at its bound.
    deferrals: int = 0
    response_body: str | None = None
    # Where it is while not finished: in a POST in flight, or waiting for a retry.
    attempt: _Attempt | None = None
    retry_call: IDelayedCall | None = None


@attrs.define(eq=False)
class _Endpoint:
    """One callback URL: what waits for it, and its POSTs in flight."""

    url: str
    host: str
    fresh: deque[_Item] = attrs.field(factory=deque)
    retries: deque[_Item] = attrs.field(factory=deque)
    waiting_bytes: int = 0
    posts: int = 0
    chunk_id: int = -1


def host_of(url: str) -> str:
    """The host bound of C{url}: its scheme, host and port."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    except ValueError:
        return url


@attrs.frozen
class _Answer:
    """What one POST came to: a status code, or an error text."""

    status_code: int | None
    error: str | None
    transient: bool
    retry_after_s: float | None = None
    # The first bytes of a failed answer's body.
    body: bytes | None = None


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
    Read a response body and throw it away but for its first C{keep} bytes;
    fire C{done} at its end, or drop the connection once more than C{limit}
    bytes have come.
    """

    def __init__(self, limit: int | None = None, keep: int = 0) -> None:
        self.done: Deferred[None] = Deferred()
        self.limit = limit
        self.received = 0
        self.keep = keep
        self.kept = b""

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        if len(self.kept) < self.keep:
            self.kept += data[: self.keep - len(self.kept)]
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
    chunk: list[_Item] = attrs.field(factory=list)

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


class Poster(typing.Protocol):
    """How callbacks are POSTed: a treq C{HTTPClient} (or a fake in tests)."""

    def post(
        self,
        url: str,
        /,
        *,
        data: Any = ...,
        headers: Any = ...,
        allow_redirects: bool = ...,
        unbuffered: bool = ...,
    ) -> Deferred[Any]: ...


@attrs.define(eq=False)
class HTTPExecutor:
    """
    Deliver executions to callback URLs in batched JSON POSTs, with bounded
    concurrency (overall, per URL and per host), a bounded queue and
    retries; report each delivery's final state to C{on_outcome}.

    C{sign}, when given, is called with the body and the deliveries in it and
    returns extra headers for that POST (the hook for callback signatures).

    C{post_observer}, when given, is called once per POST that ended with
    C{(seconds it took, status code or None when no HTTP answer came, how
    many of its deliveries will be retried)} (the hook for metrics); one
    that raises is logged once and ignored.
    """

    clock: IReactorTime
    http_client: Poster
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
    max_per_url: int = 16
    max_per_host: int = 32
    response_excerpt_bytes: int = 1024
    # Sent with every POST besides the usual ones.
    extra_headers: dict[str, str] = attrs.field(factory=dict)

    _endpoints: dict[str, _Endpoint] = attrs.field(factory=dict, init=False)
    _host_posts: dict[str, int] = attrs.field(factory=dict, init=False)
    _ready: deque[_Endpoint] = attrs.field(factory=deque, init=False)
    _ready_set: set[str] = attrs.field(factory=set, init=False)
    # URLs with deliveries waiting while the URL or its host is at its bound.
    _blocked: set[str] = attrs.field(factory=set, init=False)
    _sweep_call: IDelayedCall | None = attrs.field(default=None, init=False)
    _waiting: int = attrs.field(default=0, init=False)
    # Each POST in flight (its Deferred gives the answer) -> its attempt.
    _posts: dict[Deferred[_Answer], _Attempt] = attrs.field(factory=dict, init=False)
    _in_flight_items: int = attrs.field(default=0, init=False)
    _retrying: dict[IDelayedCall, list[_Item]] = attrs.field(factory=dict, init=False)
    # job uuid -> its unfinished delivery, for jobs that forbid or replace.
    _exclusive: dict[str, _Item] = attrs.field(factory=dict, init=False)
    _pump_call: IDelayedCall | None = attrs.field(default=None, init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    _counts: dict[str, int] = attrs.field(init=False)
    _user_agent: str = attrs.field(init=False)
    _observer_failed: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        for name in ("max_workers", "max_per_url", "max_per_host"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must not be negative, got {self.max_queue!r}")
        if self.payload_max_bytes < 3:
            raise ValueError(
                f"payload_max_bytes must be at least 3, got {self.payload_max_bytes!r}"
            )
        for name in ("max_response_bytes", "response_excerpt_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")
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
        exclusive = delivery.policy.concurrency != ALLOW
        if exclusive:
            running = self._exclusive.get(delivery.job_uuid)
            if running is not None:
                if delivery.policy.concurrency == FORBID:
                    self._finish(
                        item,
                        "skipped",
                        skip_reason=SKIP_STILL_RUNNING,
                        error=(
                            f"the execution of {running.delivery.scheduled_at} "
                            f"({running.delivery.execution_id}) was still running"
                        ),
                    )
                    return
                self._abandon(running, delivery)
        if self._waiting >= self.max_queue:
            # A burst (every slot of a big second at once) is not a backlog:
            # hand what free workers can take to them now, and shed only
            # what would still wait.
            self._pump()
            if self._waiting >= self.max_queue:
                self._finish_skipped(item, SKIP_QUEUE_FULL)
                return
        if exclusive:
            self._exclusive[delivery.job_uuid] = item
        self._enqueue(item)

    def running(self, job_uuid: str) -> bool:
        """Whether a delivery of C{job_uuid} (a job that forbids or replaces) is unfinished."""
        return job_uuid in self._exclusive

    def cancel_job(self, job_uuid: str, reason: str) -> int:
        """
        Drop every delivery of C{job_uuid} that is waiting or waiting to
        retry (a deleted or paused job fires nothing more), reporting each as
        skipped with C{reason}; return how many. POSTs already in flight are
        not recalled.
        """
        dropped: list[_Item] = []
        for endpoint in list(self._endpoints.values()):
            for queue in (endpoint.fresh, endpoint.retries):
                if any(item.delivery.job_uuid == job_uuid for item in queue):
                    keep = [item for item in queue if item.delivery.job_uuid != job_uuid]
                    for item in queue:
                        if item.delivery.job_uuid == job_uuid:
                            dropped.append(item)
                            endpoint.waiting_bytes -= len(item.body)
                            self._waiting -= 1
                    queue.clear()
                    queue.extend(keep)
            self._forget_if_idle(endpoint)
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
            item.retry_call = None
            self._finish_skipped(item, reason)
        return len(dropped)

    def congested(self, before: float) -> set[str]:
        """
        The callback URLs whose queue begins with a first attempt that
        became ready (L{Delivery.ready_s}) before C{before}.
        """
        late = set()
        for url, endpoint in self._endpoints.items():
            if not endpoint.fresh:
                continue
            ready = endpoint.fresh[0].delivery.ready_s
            if ready is not None and ready < before:
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
        for name in ("_pump_call", "_sweep_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        abandoned: list[_Item] = []
        for call, items in list(self._retrying.items()):
            if call.active():
                call.cancel()
            abandoned.extend(items)
        self._retrying.clear()
        for endpoint in self._endpoints.values():
            abandoned.extend(endpoint.retries)
            abandoned.extend(item for item in endpoint.fresh if item.attempts)
            endpoint.fresh.clear()
            endpoint.retries.clear()
            endpoint.waiting_bytes = 0
        for endpoint in list(self._endpoints.values()):
            self._forget_if_idle(endpoint)
        self._ready.clear()
        self._ready_set.clear()
        self._blocked.clear()
        self._waiting = 0
        for item in abandoned:
            item.retry_call = None
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
        endpoint = self._endpoints.get(url)
        if endpoint is None:
            endpoint = self._endpoints[url] = _Endpoint(url, host_of(url))
        item.queued_at = self.clock.seconds()
        (endpoint.retries if item.attempts else endpoint.fresh).append(item)
        endpoint.waiting_bytes += len(item.body)
        self._waiting += 1
        self._mark_ready(endpoint)
        self._schedule_pump()

    def _eligible(self, endpoint: _Endpoint) -> bool:
        """May C{endpoint} get a new POST: something waits, and neither it nor its host is full."""
        return (
            bool(endpoint.fresh or endpoint.retries)
            and endpoint.posts < self.max_per_url
            and self._host_posts.get(endpoint.host, 0) < self.max_per_host
        )

    def _mark_ready(self, endpoint: _Endpoint) -> None:
        url = endpoint.url
        if url in self._ready_set:
            return
        if self._eligible(endpoint):
            self._ready_set.add(url)
            self._ready.append(endpoint)
            self._blocked.discard(url)
        elif endpoint.fresh or endpoint.retries:
            self._blocked.add(url)
            if self._sweep_call is None and not self._stopping:
                self._sweep_call = self.clock.callLater(SWEEP_S, self._sweep)

    def _forget_if_idle(self, endpoint: _Endpoint) -> None:
        """Drop an endpoint with nothing waiting and nothing in flight."""
        if endpoint.posts == 0 and not endpoint.fresh and not endpoint.retries:
            if self._endpoints.get(endpoint.url) is endpoint:
                del self._endpoints[endpoint.url]
            self._blocked.discard(endpoint.url)

    def _schedule_pump(self) -> None:
        """Flush on the next reactor turn, so what is due together goes together."""
        if self._pump_call is None and not self._stopping:
            self._pump_call = self.clock.callLater(0, self._pump)

    def _pump(self) -> None:
        """Start POSTs round-robin over ready URLs, one chunk per URL per round."""
        self._pump_call = None
        ready = self._ready
        while ready and len(self._posts) < self.max_workers and not self._stopping:
            endpoint = ready.popleft()
            self._ready_set.discard(endpoint.url)
            if self._endpoints.get(endpoint.url) is not endpoint:
                continue
            if not self._eligible(endpoint):
                self._mark_ready(endpoint)
                continue
            self._send(endpoint, self._take_chunk(endpoint))
            self._mark_ready(endpoint)

    def _take_chunk(self, endpoint: _Endpoint) -> list[_Item]:
        """
        Take items while the body fits the cap: first attempts before
        retries, each in the order they came.
        """
        chunk: list[_Item] = []
        size = 2
        cap = self.payload_max_bytes
        taken = 0
        for queue in (endpoint.fresh, endpoint.retries):
            while queue:
                item = queue[0]
                extra = len(item.body) + (1 if chunk else 0)
                if chunk and size + extra > cap:
                    break
                queue.popleft()
                chunk.append(item)
                size += extra
                taken += len(item.body)
            else:
                continue
            break
        endpoint.waiting_bytes -= taken
        self._waiting -= len(chunk)
        return chunk

    def _sweep(self) -> None:
        """
        Look at the endpoints at their bound: a first attempt that has waited
        L{ENDPOINT_WAIT_S} is skipped (C{endpoint_busy}); a retry that has
        waited as long goes back to wait for its next retry.
        """
        self._sweep_call = None
        now = self.clock.seconds()
        cutoff = now - ENDPOINT_WAIT_S
        busy: list[_Item] = []
        deferred: list[_Item] = []
        for url in list(self._blocked):
            endpoint = self._endpoints.get(url)
            if endpoint is None or not (endpoint.fresh or endpoint.retries):
                self._blocked.discard(url)
                continue
            if self._eligible(endpoint):
                self._blocked.discard(url)
                self._mark_ready(endpoint)
                self._schedule_pump()
                continue
            for queue, out in ((endpoint.fresh, busy), (endpoint.retries, deferred)):
                while queue and queue[0].queued_at <= cutoff:
                    item = queue.popleft()
                    endpoint.waiting_bytes -= len(item.body)
                    self._waiting -= 1
                    out.append(item)
            if not (endpoint.fresh or endpoint.retries):
                self._blocked.discard(url)
                self._forget_if_idle(endpoint)
        for item in busy:
            self._finish(
                item,
                "skipped",
                skip_reason=SKIP_ENDPOINT_BUSY,
                error=self._bound_text(item.delivery.callback_url),
            )
        for item in deferred:
            item.deferrals += 1
            tries = item.attempts + item.deferrals
            if tries > item.delivery.retry_max:
                self._finish(
                    item,
                    "failed",
                    error=f"{item.error}; no retry: {self._bound_text(item.delivery.callback_url)}",
                )
            else:
                self._start_retry(self.retry_delay(tries, None, item.delivery), [item])
        if self._blocked and self._sweep_call is None and not self._stopping:
            self._sweep_call = self.clock.callLater(SWEEP_S, self._sweep)

    def _bound_text(self, url: str) -> str:
        """Why a delivery to C{url} could not start: which bound was reached."""
        endpoint = self._endpoints.get(url)
        if endpoint is not None and endpoint.posts >= self.max_per_url:
            return (
                f"the callback URL had {endpoint.posts} requests in flight"
                f" (MaxWorkersPerURL) for {ENDPOINT_WAIT_S:g}s"
            )
        return (
            f"the callback host had {self.max_per_host} requests in flight"
            f" (MaxWorkersPerHost) for {ENDPOINT_WAIT_S:g}s"
        )

    # -- replacing -------------------------------------------------------------

    def _abandon(self, item: _Item, by: Delivery) -> None:
        """Give up C{item} for the newer delivery C{by} of its job (policy C{replace})."""
        attempt = item.attempt
        if item.retry_call is not None:
            call = item.retry_call
            items = self._retrying.get(call)
            if items is not None:
                items.remove(item)
                if not items:
                    del self._retrying[call]
                    if call.active():
                        call.cancel()
            item.retry_call = None
        elif attempt is None:
            endpoint = self._endpoints.get(item.delivery.callback_url)
            if endpoint is not None:
                for queue in (endpoint.fresh, endpoint.retries):
                    if item in queue:
                        queue.remove(item)
                        endpoint.waiting_bytes -= len(item.body)
                        self._waiting -= 1
                        break
                self._forget_if_idle(endpoint)
        tried = f"after {item.attempts} attempt{'s' if item.attempts != 1 else ''}"
        self._finish(
            item,
            "skipped",
            skip_reason=SKIP_REPLACED,
            error=(
                f"abandoned {tried}{' (one in flight)' if attempt is not None else ''}: "
                f"replaced by the slot of {by.scheduled_at}"
            ),
        )
        if attempt is not None and all(other.finished for other in attempt.chunk):
            # Nothing left in that POST for anyone: stop waiting for it.
            attempt.abort("abandoned")

    # -- sending -------------------------------------------------------------

    def _send(self, endpoint: _Endpoint, chunk: list[_Item]) -> None:
        now = self.clock.seconds()
        url = endpoint.url
        first_attempts = []
        attempt = _Attempt(chunk=chunk)
        for item in chunk:
            if item.attempts == 0:
                item.started_at = now
                first_attempts.append(item)
            item.attempts += 1
            item.attempt = attempt
        if first_attempts:
            # Reported on the next turn, so the bookkeeping does not hold up
            # the socket write of this POST.
            self.clock.callLater(0, self._report_started, first_attempts, now)
        body = b"[" + b",".join(item.body for item in chunk) + b"]"
        # Chunk ids count the POSTs a URL gets while others to it are in flight.
        endpoint.chunk_id = endpoint.chunk_id + 1 if endpoint.posts else 0
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            "x-payload-chunk-id": str(endpoint.chunk_id),
            "X-Scheduler0-Delivery": str(uuidlib.uuid4()),
        }
        if self.node_id is not None:
            headers["X-Scheduler0-Node"] = str(self.node_id)
        if self.extra_headers:
            headers.update(self.extra_headers)
        if self.sign is not None:
            try:
                headers.update(self.sign(body, [item.delivery for item in chunk]))
            except Exception:
                log.failure("signing a callback body failed")
        timeout_s = min(item.delivery.timeout_s for item in chunk)
        endpoint.posts += 1
        self._host_posts[endpoint.host] = self._host_posts.get(endpoint.host, 0) + 1
        self._in_flight_items += len(chunk)
        self._counts["posts"] += 1
        post = Deferred.fromCoroutine(self._post(url, body, headers, timeout_s, attempt))
        self._posts[post] = attempt
        post.addErrback(self._post_crashed)
        post.addCallback(self._posted, endpoint, chunk, post, now)

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
        """Make one POST with its own timeout; read the response body (and keep its start)."""
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
        excerpt = None
        try:
            try:
                response = await attempt.pending
            except Exception as exc:
                if attempt.aborted == "timeout":
                    return _Answer(None, f"timeout after {timeout_s:g}s", transient=True)
                if attempt.aborted == "abandoned":
                    return _Answer(None, "abandoned", transient=False)
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
                keep = 0 if 200 <= code < 300 else self.response_excerpt_bytes
                attempt.reader = _Discard(self.max_response_bytes, keep)
                try:
                    response.deliverBody(attempt.reader)
                    await attempt.reader.done
                except Exception:
                    pass  # the status line already decided the outcome
                excerpt = attempt.reader.kept or None
        finally:
            if timer.active():
                timer.cancel()
        if 200 <= code < 300:
            return _Answer(code, None, transient=False)
        transient = code == 429 or 500 <= code < 600
        return _Answer(
            code, f"HTTP {code}", transient=transient, retry_after_s=retry_after, body=excerpt
        )

    def _cancel_posts(self) -> None:
        for attempt in list(self._posts.values()):
            attempt.abort("stop")

    def _post_crashed(self, failure: Failure) -> _Answer:
        """A bug in our own code: fail the chunk rather than lose it."""
        log.failure("callback POST crashed", failure)
        return _Answer(None, "internal error", transient=False)

    def _posted(
        self,
        answer: _Answer,
        endpoint: _Endpoint,
        chunk: list[_Item],
        post: Deferred,
        sent_at: float,
    ) -> None:
        self._posts.pop(post, None)
        endpoint.posts -= 1
        host = endpoint.host
        host_posts = self._host_posts.get(host, 1)
        if host_posts > 1:
            self._host_posts[host] = host_posts - 1
        else:
            self._host_posts.pop(host, None)
        self._in_flight_items -= len(chunk)
        retry_groups: dict[float, list[_Item]] = {}
        # The deliveries of one POST finish together: one instant for all.
        finished_at = self.clock.seconds()
        text = None
        if answer.body:
            text = answer.body.decode("utf-8", "replace")
        for item in chunk:
            item.attempt = None
            if item.finished:
                continue  # abandoned while in flight (policy replace)
            item.status_code = answer.status_code
            item.error = answer.error
            item.response_body = text
            if answer.error is None:
                self._finish(item, "succeeded", finished_at=finished_at)
            elif not answer.transient:
                self._finish(item, "failed", finished_at=finished_at)
            elif item.attempts + item.deferrals > item.delivery.retry_max:
                self._finish(item, "failed", finished_at=finished_at)
            elif self._stopping:
                self._finish(
                    item,
                    "failed",
                    error=f"{answer.error}; node stopping, no retry",
                    finished_at=finished_at,
                )
            else:
                delay = self.retry_delay(
                    item.attempts + item.deferrals, answer.retry_after_s, item.delivery
                )
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
        if host_posts >= self.max_per_host:
            # The host was full: any of its URLs may go on now.
            for other in list(self._endpoints.values()):
                if other.host == host and other is not endpoint:
                    self._mark_ready(other)
        self._mark_ready(endpoint)
        self._forget_if_idle(endpoint)
        self._schedule_pump()

    def _start_retry(self, delay: float, items: list[_Item]) -> None:
        """Hold C{items} for C{delay} seconds, then queue them again."""
        holder: list[IDelayedCall] = []

        def fire() -> None:
            self._retrying.pop(holder[0], None)
            for item in items:
                item.retry_call = None
                if not item.finished:
                    self._enqueue(item)

        call = self.clock.callLater(delay, fire)
        holder.append(call)
        self._retrying[call] = items
        for item in items:
            item.retry_call = call

    def retry_delay(
        self, attempts: int, retry_after_s: float | None = None, delivery: Delivery | None = None
    ) -> float:
        """
        The wait before the retry that follows attempt number C{attempts}:
        the first retry delay times C{2**(attempts-1)}, capped -- the
        executor's, or those of C{delivery}'s policy when it sets them --
        or the server's C{Retry-After} when that is longer (up to one hour).
        """
        first, cap = self.retry_delay_s, self.retry_delay_cap_s
        if delivery is not None:
            policy = delivery.policy
            if policy.retry_delay_s is not None:
                first = policy.retry_delay_s
            if policy.retry_max_delay_s is not None:
                cap = policy.retry_max_delay_s
        exponent = min(max(attempts - 1, 0), 62)
        delay = min(first * (2**exponent), cap)
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
        exclusive = self._exclusive
        if exclusive and exclusive.get(item.delivery.job_uuid) is item:
            del exclusive[item.delivery.job_uuid]
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
            response_body=item.response_body,
        )
        try:
            self.on_outcome(outcome)
        except Exception:
            log.failure(
                "on_outcome failed for execution {execution_id}",
                execution_id=item.delivery.execution_id,
            )
