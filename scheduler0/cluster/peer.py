"""
Peer HTTP: what nodes of one cluster ask each other, over the same listener
as the API, under C{/peer/}, with the admin (peer) credentials as HTTP Basic.

- C{POST /peer/propose}: a follower forwards a write (a L{Command}'s bytes)
  to the leader and gets the leader's answer and the log index to wait for.
- C{POST /peer/read_index}: a follower asks the leader for a ReadIndex.
- C{POST /peer/lease}: a node renews its lease (SPEC §7). The answer offers
  the cheaper renewal over the Raft links (L{scheduler0.cluster.lease_channel}),
  which a follower of this release takes; one of an earlier release keeps
  renewing here.
- C{GET /peer/progress}: the leader asks how far a node got with its jobs
  (the progress fan-in).
- C{POST /peer/history}, C{POST /peer/latest}: a page of this node's own
  execution records, and the newest record of some jobs, for the API's
  cluster-wide history.
- C{POST /peer/history_copy}: a batch of another node's execution records
  to keep (L{scheduler0.cluster.copies}); its description is JSON in the
  C{x-scheduler0-copy} header, the batch the body.
- C{GET /peer/status}: this node's Raft view, for C{GET /cluster}.
- C{GET /peer/summary}: this node's per-minute execution counts, for
  C{GET /executions/summary}.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from scheduler0.cluster.copies import check_meta
from scheduler0.cluster.lease_channel import HTTP_OFFER, HTTP_OFFER_KEY, HTTP_SKEWED_KEY
from scheduler0.errors import NotLeader, ProposalTimeout, StoreUnavailable, WritesRefused
from scheduler0.store.apply import HANDLERS
from scheduler0.store.commands import Command
from scheduler0.versions import (
    FIRST_ENTRY_VERSION,
    EntryVersionTooLow,
    UnsupportedVersion,
    unknown_op,
)

if TYPE_CHECKING:
    from scheduler0.cluster.copies import HistoryCopies
    from scheduler0.cluster.node import ClusterNode
    from scheduler0.summary import ExecutionSummary

log = Logger()

PEER_PREFIX = b"/peer/"
COPY_HEADER = b"x-scheduler0-copy"


class PeerUnavailable(StoreUnavailable):
    """A peer could not be reached, or answered with something other than success."""


class PeerNotLeader(PeerUnavailable):
    """The peer asked is not the leader (any more)."""


def _basic(username: str, password: str) -> bytes:
    token = base64.b64encode(f"{username}:{password}".encode())
    return b"Basic " + token


@attrs.define(eq=False)
class PeerClient:
    """
    Calls other nodes' C{/peer/} routes. C{address_of(node_id)} gives a
    node's HTTP base address (C{http://host:port}) or None.
    """

    http: Any
    admin: Any
    address_of: Callable[[int], str | None]
    timeout_s: float = 2.0

    async def _call(
        self,
        node_id: int,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        extra_headers: dict[bytes, list[bytes]] | None = None,
    ) -> Any:
        address = self.address_of(node_id)
        if not address:
            raise PeerUnavailable(f"no address known for node {node_id}")
        headers = {
            b"authorization": [_basic(self.admin.username, self.admin.password)],
            b"content-type": [b"application/json"],
        }
        if extra_headers:
            headers.update(extra_headers)
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        try:
            response = await self.http.request(
                method,
                address.rstrip("/") + path,
                headers=headers,
                data=data,
                timeout=timeout or self.timeout_s,
            )
            raw = await response.content()
        except Exception as e:
            raise PeerUnavailable(f"node {node_id} at {address}: {e.__class__.__name__}") from None
        try:
            payload = json.loads(raw)
        except ValueError:
            raise PeerUnavailable(
                f"node {node_id} answered {response.code} with a body that is not JSON"
            ) from None
        if response.code == 409 and payload.get("error", {}).get("code") == "not_leader":
            raise PeerNotLeader(payload["error"]["message"])
        if response.code == 409 and payload.get("error", {}).get("code") == _TOO_LOW:
            # The leader refused a command of a newer entry version than the
            # cluster writes: the client gets the same 409 from this node.
            raise _too_low_at_peer(payload.get("data") or {})
        if response.code == 507:
            # The leader could not store the write: nothing changed, and
            # asking again at once would not help. Its answer goes back as is.
            raise _refused_by_peer(payload)
        if response.code != 200 or not payload.get("success"):
            message = payload.get("error", {}).get("message", "")
            raise PeerUnavailable(f"node {node_id} answered {response.code}: {message}")
        return payload["data"]

    def propose(self, node_id: int, command: Command, timeout: float) -> Deferred:
        """Fire with C{{"result": ..., "index": n}} from the leader C{node_id}."""
        return Deferred.fromCoroutine(
            self._call(node_id, "POST", "/peer/propose", command.to_bytes(), timeout)
        )

    def read_index(self, node_id: int, timeout: float) -> Deferred:
        """Fire with the leader's read index."""
        return Deferred.fromCoroutine(
            self._call(node_id, "POST", "/peer/read_index", {}, timeout)
        ).addCallback(lambda data: int(data["index"]))

    def lease(self, node_id: int, request: dict, timeout: float) -> Deferred:
        return Deferred.fromCoroutine(self._call(node_id, "POST", "/peer/lease", request, timeout))

    def progress(self, node_id: int, timeout: float | None = None) -> Deferred:
        """Fire with C{{"mark": [done_before, loaded_at, as_of] or None}} of node C{node_id}."""
        return Deferred.fromCoroutine(self._call(node_id, "GET", "/peer/progress", None, timeout))

    def history(self, node_id: int, query: dict, timeout: float | None = None) -> Deferred:
        """Fire with C{{"items", "total"}}: a page of node C{node_id}'s own records."""
        return Deferred.fromCoroutine(self._call(node_id, "POST", "/peer/history", query, timeout))

    def latest(self, node_id: int, job_uuids: list[str], timeout: float | None = None) -> Deferred:
        """Fire with job_uuid -> newest record, of node C{node_id}'s own records."""
        return Deferred.fromCoroutine(
            self._call(node_id, "POST", "/peer/latest", {"job_uuids": job_uuids}, timeout)
        )

    def history_copy(self, node_id: int, meta: dict, data: bytes, timeout: float) -> Deferred:
        """Give node C{node_id} a batch of this node's records to keep."""
        header = {COPY_HEADER: [json.dumps(meta).encode("utf-8")]}
        return Deferred.fromCoroutine(
            self._call(node_id, "POST", "/peer/history_copy", data, timeout, header)
        )

    def members(self, node_id: int, body: dict) -> Deferred:
        return Deferred.fromCoroutine(self._call(node_id, "POST", "/peer/members", body, 10.0))

    def status(self, node_id: int, timeout: float | None = None) -> Deferred:
        return Deferred.fromCoroutine(self._call(node_id, "GET", "/peer/status", None, timeout))

    def summary(self, node_id: int, minutes: int, timeout: float | None = None) -> Deferred:
        """Fire with node C{node_id}'s own execution summary of the last C{minutes} minutes."""
        return Deferred.fromCoroutine(
            self._call(node_id, "GET", f"/peer/summary?minutes={int(minutes)}", None, timeout)
        )


def member_versions(status: dict | None) -> dict:
    """
    A member's release and the entry version it reads, from its
    C{/peer/status} (None: it did not answer, so not known). A release
    before entry versions says neither: it reads version 1.
    """
    if not status:
        return {"release": None, "reads_entry_version": None}
    reads = status.get("reads_entry_version", FIRST_ENTRY_VERSION)
    return {"release": status.get("release"), "reads_entry_version": reads}


_TOO_LOW = "entry_version_too_low"


def _too_low_at_peer(data: dict) -> EntryVersionTooLow:
    return EntryVersionTooLow(
        str(data.get("feature") or "this request"),
        int(data.get("needed") or 0),
        int(data.get("current") or 0),
    )


def _refused_by_peer(payload: dict) -> WritesRefused:
    error = payload.get("error") or {}
    data = payload.get("data") or {}
    return WritesRefused(
        str(error.get("message") or "the leader refused the write: its disk cannot store it"),
        data_dir=str(data.get("data_dir") or ""),
        free_bytes=int(data.get("free_bytes") or 0),
        floor_bytes=int(data.get("floor_bytes") or 0),
        cause=str(data.get("cause") or ""),
    )


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


@attrs.define(eq=False)
class PeerAPI:
    """
    The C{/peer/} routes of one node. C{node} is its L{ClusterNode} (role,
    proposals, reads, leases, local executions); C{history_copies} and
    C{summary}, when it keeps them, are the copies of other nodes' history
    and its per-minute execution counts.
    """

    node: ClusterNode
    admin: Any
    history_copies: HistoryCopies | None = None
    summary: ExecutionSummary | None = None
    app: Klein = attrs.field(init=False, factory=Klein)

    def __attrs_post_init__(self) -> None:
        routes = (
            ("/peer/propose", "POST", self._propose),
            ("/peer/read_index", "POST", self._read_index),
            ("/peer/lease", "POST", self._lease),
            ("/peer/progress", "GET", self._progress),
            ("/peer/history", "POST", self._history),
            ("/peer/latest", "POST", self._latest),
            ("/peer/history_copy", "POST", self._history_copy),
            ("/peer/status", "GET", self._status),
            ("/peer/members", "POST", self._members),
            ("/peer/summary", "GET", self._summary),
        )
        for path, method, handler in routes:
            self.app.route(path, methods=[method], endpoint=path)(self._view(handler))

    def resource(self) -> Any:
        return self.app.resource()

    def _view(self, handler: Callable[[Any], Any]) -> Callable[..., Deferred]:
        def view(request: Any) -> Deferred:
            return Deferred.fromCoroutine(self._serve(handler, request))

        return view

    async def _serve(self, handler: Callable[[Any], Any], request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        data: Any = None
        try:
            if not self._authorized(request):
                request.setHeader(b"www-authenticate", b'Basic realm="scheduler0"')
                raise _Refused(401, "unauthorized", "peer routes need the peer credentials")
            data = await handler(request)
            request.setResponseCode(200)
            return json.dumps({"success": True, "data": data}).encode("utf-8")
        except _Refused as refused:
            status, code, message = refused.status, refused.code, str(refused)
        except NotLeader as e:
            status, code, message = 409, "not_leader", str(e)
        except EntryVersionTooLow as e:
            status, code, message = 409, _TOO_LOW, str(e)
            data = {"feature": e.feature, "needed": e.needed, "current": e.current}
        except WritesRefused as e:
            status, code, message = 507, "insufficient_storage", str(e)
            data = {
                "data_dir": e.data_dir,
                "free_bytes": e.free_bytes,
                "floor_bytes": e.floor_bytes,
                "cause": e.cause,
            }
        except (ProposalTimeout, StoreUnavailable) as e:
            status, code, message = 503, "unavailable", str(e)
        except CancelledError:
            # The asking node gave up (its timeout) and closed the connection.
            return b""
        except Exception:
            log.failure("a peer request failed", Failure())
            status, code, message = 500, "internal", "internal error"
        request.setResponseCode(status)
        return json.dumps(
            {"success": False, "data": data, "error": {"code": code, "message": message}}
        ).encode("utf-8")

    def _authorized(self, request: Any) -> bool:
        header = request.getHeader(b"authorization") or b""
        expected = _basic(self.admin.username, self.admin.password)
        return bool(self.admin.password) and hmac.compare_digest(bytes(header), expected)

    @staticmethod
    def _body(request: Any) -> bytes:
        request.content.seek(0)
        return request.content.read()

    def _json(self, request: Any) -> dict:
        try:
            value = json.loads(self._body(request) or b"{}")
        except ValueError:
            raise _Refused(400, "invalid", "body: not JSON") from None
        if not isinstance(value, dict):
            raise _Refused(400, "invalid", "body: must be a JSON object")
        return value

    async def _propose(self, request: Any) -> Any:
        try:
            command = Command.from_bytes(self._body(request))
        except ValueError as e:
            raise _Refused(400, "invalid", f"body: {e}") from None
        except UnsupportedVersion as e:
            # A member of a newer release: this leader would not apply it.
            raise _Refused(409, "unsupported_version", f"body: {e}") from None
        if command.op not in HANDLERS:
            raise _Refused(409, "unsupported_version", f"body: {unknown_op(command.op)}")
        return await self.node.propose_as_leader(command)

    async def _read_index(self, request: Any) -> Any:
        return {"index": await self.node.read_index_as_leader()}

    async def _lease(self, request: Any) -> Any:
        body = self._json(request)
        node_id = body.get("node_id")
        if not isinstance(node_id, int) or isinstance(node_id, bool):
            raise _Refused(400, "invalid", "node_id: must be an integer")
        grant = self.node.grant_lease(
            node_id,
            bool(body.get("paused")),
            int(body.get("applied_index") or 0),
            body.get(HTTP_SKEWED_KEY) is True,
        )
        # This release takes renewals over the Raft links too (cheaper); a
        # follower of an earlier release ignores the offer and stays here.
        return {**grant, HTTP_OFFER_KEY: HTTP_OFFER}

    async def _progress(self, request: Any) -> Any:
        mark = self.node.progress_mark()
        return {"mark": list(mark) if mark is not None else None}

    async def _history(self, request: Any) -> Any:
        body = self._json(request)
        unknown = set(body) - _HISTORY_FILTERS
        if unknown:
            raise _Refused(400, "invalid", f"{sorted(unknown)[0]}: not a history filter")
        try:
            items, total = await self.node.local_history(**body)
        except (TypeError, ValueError) as e:
            raise _Refused(400, "invalid", str(e)) from None
        return {"items": items, "total": total}

    async def _latest(self, request: Any) -> Any:
        job_uuids = self._json(request).get("job_uuids")
        if not isinstance(job_uuids, list) or not all(isinstance(u, str) for u in job_uuids):
            raise _Refused(400, "invalid", "job_uuids: must be a list of strings")
        return await self.node.local_latest(job_uuids)

    async def _history_copy(self, request: Any) -> Any:
        copies = self.history_copies
        if copies is None:
            raise _Refused(404, "not_found", "this node keeps no history copies")
        try:
            meta = check_meta(json.loads(request.getHeader(COPY_HEADER) or b"{}"))
        except ValueError as e:
            raise _Refused(400, "invalid", f"{COPY_HEADER.decode()}: {e}") from None
        return await copies.receive(meta, self._body(request))

    async def _members(self, request: Any) -> Any:
        return await self.node.change_members_as_leader(self._json(request))

    async def _status(self, request: Any) -> Any:
        return self.node.local_status()

    async def _summary(self, request: Any) -> Any:
        summary = self.summary
        if summary is None:
            raise _Refused(404, "not_found", "this node keeps no execution summary")
        try:
            minutes = int(request.args.get(b"minutes", [b"60"])[0])
            return summary.snapshot(minutes)
        except ValueError:
            raise _Refused(400, "invalid", "minutes: must be an integer from 1 to 60") from None


_HISTORY_FILTERS = frozenset(
    ("job_uuid", "project_uuid", "state", "since", "until", "limit", "offset")
)


class PeerDispatch(Resource):
    """
    The site's root: C{/peer/...} goes to the peer routes, everything else to
    the API (both are Klein resources that route on the whole path).
    """

    isLeaf = True

    def __init__(self, api: Any, peer: Any):
        Resource.__init__(self)
        self._api = api
        self._peer = peer

    def render(self, request: Any) -> Any:
        if request.path.startswith(PEER_PREFIX):
            return self._peer.render(request)
        return self._api.render(request)
