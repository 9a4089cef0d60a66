"""
A write a data directory cannot store, in a cluster: a follower forwards
the write to its leader over peer HTTP (the real PeerClient and PeerAPI,
in memory through StubTreq), the leader refuses it before it reaches Raft,
and the follower's client gets the leader's 507; a follower whose own
directory is refused answers 507 itself without asking the leader.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.cluster.forwarding import Forwarding
from scheduler0.cluster.peer import PeerAPI, PeerClient
from scheduler0.diskspace import BELOW_FLOOR, DiskWatcher
from scheduler0.errors import WritesRefused
from scheduler0.raft.core import FOLLOWER, LEADER
from scheduler0.store.commands import Command
from tests.support.api import Admin, Harness, basic
from tests.support.cluster import FakeCore, FakeDriver

MB = 1024 * 1024
LEADER_DATA = "/srv/leader-data"
FOLLOWER_DATA = "/srv/follower-data"


@attrs.frozen
class Config:
    node_id: int = 1
    raft_apply_timeout: float = 5.0
    peer_connect_retry_max: int = 3


def statvfs(free_bytes: int) -> Any:
    """A statvfs that always reports C{free_bytes} free on a writable file system."""

    def stat(path: str) -> Any:
        return SimpleNamespace(f_bavail=free_bytes // 4096, f_frsize=4096, f_flag=0)

    return stat


@attrs.define
class NoRaft:
    """A Raft proposer that must not be reached: a refused write is refused before it."""

    proposed: list[Command] = attrs.field(factory=list)

    def propose(self, command: Command) -> Deferred:
        self.proposed.append(command)
        return fail(AssertionError("a refused write reached Raft"))


@attrs.define
class AskedPeers:
    """A peer client that records what it is asked and never answers."""

    asked: list[tuple[int, Command]] = attrs.field(factory=list)

    def propose(self, node_id: int, command: Command, timeout: float) -> Deferred:
        self.asked.append((node_id, command))
        return Deferred()


def forwarding(
    role: str, peers: Any, raft: Any, disk: DiskWatcher | None, clock: Any
) -> Forwarding:
    """A Forwarding on node 1 whose leader is node 2, with fakes around it."""
    return Forwarding(
        clock,
        Config(),  # type: ignore[arg-type]
        FakeCore(role=role, leader_id="2"),  # type: ignore[arg-type]
        raft,
        FakeDriver(),  # type: ignore[arg-type]
        peers,
        None,  # type: ignore[arg-type]  # leases: only a change appended here uses them
        disk=disk,
    )


class LeaderRefusesTests(SynchronousTestCase):
    """Node 1 follows node 2, whose data directory is below DataDirMinFreeMB."""

    def setUp(self) -> None:
        self.api = Harness()
        clock = self.api.clock
        self.leader_raft = NoRaft()
        self.leader_disk = DiskWatcher(clock, LEADER_DATA, 64 * MB, statvfs=statvfs(2 * MB))
        leader = forwarding(LEADER, None, self.leader_raft, self.leader_disk, clock)
        self.leader_asked: list[Command] = []

        def propose_as_leader(command: Command) -> Deferred:
            self.leader_asked.append(command)
            return Deferred.fromCoroutine(leader.propose_as_leader(command))

        peer_api = PeerAPI(SimpleNamespace(propose_as_leader=propose_as_leader), Admin())  # type: ignore[arg-type]
        self.peer_http = StubTreq(peer_api.resource())
        peers = PeerClient(self.peer_http, Admin(), lambda node_id: "http://node2.test")
        follower = forwarding(FOLLOWER, peers, NoRaft(), None, clock)
        # The follower's API proposes through its Forwarding (and so the leader).
        self.api.proposer.inner = follower

    def follower_request(self, method: str, path: str, body: Any) -> tuple[int, dict]:
        """One request to the follower's API, with the peer HTTP it makes served in between."""
        d = self.api.treq.request(  # type: ignore[attr-defined]
            method,
            "http://node1.test" + path,
            headers={**self.api.client_headers, "Content-Type": "application/json"},
            data=json.dumps(body).encode(),
        )
        for _ in range(3):
            self.api.treq.flush()
            self.peer_http.flush()
        response = self.successResultOf(d)
        content = response.content()
        self.api.treq.flush()
        return response.code, json.loads(self.successResultOf(content))

    def test_the_leaders_refusal_reaches_the_followers_client_as_507(self) -> None:
        """
        A follower's client gets 507 naming the leader's data directory and
        its free space, in the message and in data; the leader was asked once
        (a refusal is not retried), nothing reached Raft, nothing changed.
        """
        before = self.api.dump()
        status, body = self.follower_request("POST", "/projects", {"name": "p", "description": "d"})
        self.assertEqual(status, 507, body)
        self.assertEqual(body["error"]["code"], "insufficient_storage")
        message = body["error"]["message"]
        self.assertIn(LEADER_DATA, message)
        self.assertIn("2.0 MB free", message)
        self.assertIn("changed nothing", message)
        self.assertEqual(
            body["data"],
            {
                "data_dir": LEADER_DATA,
                "free_bytes": 2 * MB,
                "floor_bytes": 64 * MB,
                "cause": BELOW_FLOOR,
            },
        )
        self.assertEqual(len(self.leader_asked), 1)
        self.assertEqual(self.leader_raft.proposed, [])
        self.assertEqual(self.api.dump(), before)


class PeerAPIRefusedTests(SynchronousTestCase):
    def test_writes_refused_becomes_507_with_its_data(self) -> None:
        """POST /peer/propose answers a WritesRefused with 507, its message and its numbers."""
        message = f"this write was not stored and changed nothing: {LEADER_DATA} is full"

        def propose_as_leader(command: Command) -> Deferred:
            return fail(
                WritesRefused(
                    message,
                    data_dir=LEADER_DATA,
                    free_bytes=12345,
                    floor_bytes=0,
                    cause="disk_full",
                )
            )

        api = PeerAPI(SimpleNamespace(propose_as_leader=propose_as_leader), Admin())  # type: ignore[arg-type]
        treq = StubTreq(api.resource())
        command = Command("create_project", {"uuid": "u", "name": "p"})
        d = treq.post("http://node2.test/peer/propose", data=command.to_bytes(), headers=basic())
        treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 507)
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(
            body,
            {
                "success": False,
                "data": {
                    "data_dir": LEADER_DATA,
                    "free_bytes": 12345,
                    "floor_bytes": 0,
                    "cause": "disk_full",
                },
                "error": {
                    "code": "insufficient_storage",
                    "message": message,
                },
            },
        )

    def test_the_peer_client_raises_the_leaders_refusal(self) -> None:
        """PeerClient turns the leader's 507 into WritesRefused with the leader's numbers."""

        def propose_as_leader(command: Command) -> Deferred:
            return fail(
                WritesRefused("refused", data_dir=LEADER_DATA, free_bytes=7, cause="read_only")
            )

        api = PeerAPI(SimpleNamespace(propose_as_leader=propose_as_leader), Admin())  # type: ignore[arg-type]
        treq = StubTreq(api.resource())
        client = PeerClient(treq, Admin(), lambda node_id: "http://node2.test")
        d = client.propose(2, Command("create_project", {"uuid": "u", "name": "p"}), 1.0)
        treq.flush()
        error = self.failureResultOf(d, WritesRefused).value
        self.assertEqual(
            (str(error), error.data_dir, error.free_bytes, error.cause),
            ("refused", LEADER_DATA, 7, "read_only"),
        )


class FollowerRefusesTests(SynchronousTestCase):
    def test_a_follower_whose_own_disk_is_refused_answers_507_without_the_leader(self) -> None:
        """
        A follower answers a write only once it has applied it; when its own
        data directory cannot store writes it answers 507 naming that
        directory, and the leader is never asked.
        """
        api = Harness()
        peers = AskedPeers()
        disk = DiskWatcher(api.clock, FOLLOWER_DATA, 64 * MB, statvfs=statvfs(3 * MB))
        api.proposer.inner = forwarding(FOLLOWER, peers, NoRaft(), disk, api.clock)
        before = api.dump()
        status, _, body = api.request("POST", "/projects", {"name": "p", "description": "d"})
        self.assertEqual(status, 507, body)
        self.assertEqual(body["error"]["code"], "insufficient_storage")
        self.assertIn(FOLLOWER_DATA, body["error"]["message"])
        self.assertIn("3.0 MB free", body["error"]["message"])
        self.assertEqual(body["data"]["data_dir"], FOLLOWER_DATA)
        self.assertEqual(body["data"]["free_bytes"], 3 * MB)
        self.assertEqual(peers.asked, [])
        self.assertEqual(api.dump(), before)
