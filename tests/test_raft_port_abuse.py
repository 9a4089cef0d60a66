"""
The Raft port of a real 3-node cluster under abuse: garbage, a huge length
prefix and about fifty idle unauthenticated connections, sent to a
follower's and the leader's Raft port (real C{twistd} processes on
127.0.0.1, real SQLite files, a real callback receiver). Every such
connection is dropped within 5 s, the term and the leader do not change, and
an C{@every 1s} job keeps firing throughout.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from harness.cluster import Cluster
from harness.process import http_client
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for

#: How long the Raft port may hold a connection that never authenticates.
DROP_WITHIN_S = 5.0
IDLE_PER_NODE = 25


class _Abuser(Protocol):
    """An unauthenticated connection: sends C{payload} (maybe nothing), notes when it is dropped."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.opened_at: float | None = None
        self.closed_at: float | None = None
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.opened_at = reactor.seconds()
        if self.payload:
            self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        pass  # whatever the node answers (a handshake frame) is ignored

    def connectionLost(self, reason: Any = None) -> None:
        self.closed_at = reactor.seconds()
        self.closed.callback(None)


class RaftPortAbuseTests(TestCase):
    timeout = 120

    async def abuse(self, port: int, payload: bytes) -> _Abuser:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
        protocol = _Abuser(payload)
        await connectProtocol(endpoint, protocol)
        self.addCleanup(self._drop, protocol)
        return protocol

    @staticmethod
    def _drop(protocol: _Abuser) -> None:
        if protocol.closed_at is None and protocol.transport is not None:
            protocol.transport.abortConnection()

    async def views(self, cluster: Cluster) -> tuple[set[Any], set[Any]]:
        """The leader ids and the terms the nodes report (one of each when they agree)."""
        answers = await gatherResults(
            [Deferred.fromCoroutine(cluster.health(n)) for n in cluster.ids]
        )
        return {(a or {}).get("leader_id") for a in answers}, {
            (a or {}).get("term") for a in answers
        }

    async def test_garbage_huge_frames_and_idle_connections_are_dropped(self) -> None:
        """
        Garbage, a 4 GiB length prefix and 25 idle connections to each of a
        follower's and the leader's Raft port are all dropped within 5 s; the
        leader and the term stay as they were and the job keeps firing.
        """
        receiver = CallbackReceiver(reactor)
        receiver_port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), 3)
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        leader = await cluster.wait_leader(30)
        headers = await cluster.make_headers()
        http = http_client(reactor)
        base = cluster.addresses[leader].address + "/api/v1"
        response = await http.post(f"{base}/projects", json={"name": "abuse"}, headers=headers)
        self.assertEqual(response.code, 201, await response.text())
        project = (await response.json())["data"]["uuid"]
        job = {
            "project_uuid": project,
            "name": "tick",
            "spec": "@every 1s",
            "callback_url": f"http://127.0.0.1:{receiver_port}/tick",
        }
        response = await http.post(f"{base}/jobs", json=job, headers=headers)
        self.assertEqual(response.code, 201, await response.text())
        await wait_for(reactor, lambda: len(receiver.arrivals) >= 2, timeout=15, what="firing")
        before_views = await self.views(cluster)
        self.assertEqual(before_views, ({leader}, before_views[1]))
        self.assertEqual(len(before_views[1]), 1)

        follower = next(n for n in cluster.ids if n != leader)
        payloads = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(200),
            struct.pack(">I", 0xFFFFFFFF) + b"\x01" * 64,
            struct.pack(">I", 16 * 2**20) + b"\x10" * 1024,
        ]
        fired_before = len(receiver.arrivals)
        abusers = []
        for node in (follower, leader):
            port = cluster.addresses[node].raft_port
            for payload in payloads + [b""] * IDLE_PER_NODE:
                abusers.append(await self.abuse(port, payload))
        await wait_for(
            reactor,
            lambda: all(a.closed_at is not None for a in abusers),
            timeout=DROP_WITHIN_S + 2,
            interval=0.1,
            what="every abusive connection dropped",
        )
        held = max(a.closed_at - a.opened_at for a in abusers)  # type: ignore[operator]
        self.assertLessEqual(held, DROP_WITHIN_S)

        after_views = await self.views(cluster)
        self.assertEqual(after_views, before_views)
        # The job fired on through the abuse (about one slot a second).
        await wait_for(
            reactor,
            lambda: len(receiver.arrivals) >= fired_before + 3,
            timeout=10,
            what="the job firing after the abuse",
        )
        print(f"longest abusive connection held {held:.2f} s; {len(abusers)} connections")
