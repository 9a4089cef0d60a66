"""
The cluster-wide history (scheduler0.cluster.history.ClusterHistory): every
member's own records merged into one page, over real ExecutionStores (one
per node, on the synchronous SQLite pool) and a peer client that reads the
other nodes' stores as the peer routes would, or fails as a dead node does.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.cluster.history import ClusterHistory
from scheduler0.cluster.peer import PeerUnavailable
from scheduler0.ports import ExecutionHistory
from scheduler0.store.executions import ExecutionStore
from scheduler0.store.state import StateStore


def record(eid: str, slot: int, node: int, state: str = "succeeded", **extra: Any) -> dict:
    value = {
        "execution_id": eid,
        "job_uuid": "j1" if slot % 2 else "j2",
        "project_uuid": "p1",
        "scheduled_at": f"2026-01-01T00:00:{slot:02d}.000Z",
        "state": state,
        "attempts": 1,
        "node_id": node,
        "started_at": f"2026-01-01T00:00:{slot:02d}.001Z",
        "finished_at": None if state == "running" else f"2026-01-01T00:00:{slot:02d}.002Z",
        "status_code": None,
        "error": None,
        "skip_reason": None,
    }
    value.update(extra)
    return value


@attrs.define(eq=False)
class Peers:
    """The peer client: each node's store read as /peer/history and /peer/latest do."""

    stores: dict[int, ExecutionStore]
    dead: set[int] = attrs.field(factory=set)
    asked: list[int] = attrs.field(factory=list)

    def history(self, node_id: int, query: dict, timeout: float) -> Deferred:
        self.asked.append(node_id)
        if node_id in self.dead:
            return fail(PeerUnavailable(f"node {node_id}: ConnectionRefusedError"))
        return (
            self.stores[node_id]
            .query(**query)
            .addCallback(lambda page: {"items": page[0], "total": page[1]})
        )

    def latest(self, node_id: int, job_uuids: list[str], timeout: float) -> Deferred:
        if node_id in self.dead:
            return fail(PeerUnavailable(f"node {node_id}: ConnectionRefusedError"))
        return self.stores[node_id].latest_per_job(job_uuids)


@attrs.define(eq=False)
class Node:
    config: Any
    peers: Peers

    def member_ids(self) -> set[int]:
        return set(self.peers.stores)


class ClusterHistoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.stores = {n: self.store(f"executions-{n}.db") for n in (1, 2, 3)}
        state_pool = SynchronousConnectionPool(os.path.join(self.directory, "state.db"))
        self.addCleanup(state_pool.close)
        self.state = StateStore(state_pool)
        self.successResultOf(self.state.open())
        self.peers = Peers(self.stores)
        node = Node(attrs.make_class("Config", {"node_id": attrs.field()})(1), self.peers)
        self.history: ExecutionHistory = ClusterHistory(node, self.stores[1], self.state)

    def store(self, name: str) -> ExecutionStore:
        pool = SynchronousConnectionPool(os.path.join(self.directory, name))
        self.addCleanup(pool.close)
        store = ExecutionStore(pool, task.Clock())
        self.successResultOf(store.open())
        return store

    def page(self, **filters: Any) -> tuple[list[str], int, list[int]]:
        items, total, missing = self.successResultOf(self.history.query(**filters))
        return [item["execution_id"] for item in items], total, missing

    def test_every_members_records_in_one_page_newest_first(self) -> None:
        """Records of three nodes come back merged, paged and counted as one history."""
        for slot in range(9):
            self.stores[slot % 3 + 1].record(record(f"e{slot}", slot, slot % 3 + 1))
        self.assertEqual(self.page(limit=4), (["e8", "e7", "e6", "e5"], 9, []))
        self.assertEqual(self.page(limit=4, offset=4), (["e4", "e3", "e2", "e1"], 9, []))
        self.assertEqual(self.page(job_uuid="j1", limit=10), (["e7", "e5", "e3", "e1"], 4, []))

    def test_an_execution_sent_by_two_nodes_is_listed_once_in_its_final_state(self) -> None:
        """
        A slot re-sent by a new owner after a failover is one execution: the
        page shows the version that finished, and the total counts it once.
        """
        self.stores[2].record(record("e1", 1, 2, state="running"))
        self.stores[3].record(record("e1", 1, 3, state="failed", status_code=500))
        self.stores[3].record(record("e2", 2, 3))
        items, total, _ = self.successResultOf(self.history.query())
        self.assertEqual(total, 2)
        self.assertEqual(
            [(i["execution_id"], i["state"]) for i in items],
            [("e2", "succeeded"), ("e1", "failed")],
        )
        latest = self.successResultOf(self.history.latest_per_job(["j1", "j2", "j9"]))
        self.assertEqual(
            {job: (r["execution_id"], r["state"]) for job, r in latest.items()},
            {"j1": ("e1", "failed"), "j2": ("e2", "succeeded")},
        )

    def test_a_member_that_does_not_answer_is_named(self) -> None:
        """The records of a node that does not answer are left out, and the page says whose."""
        for node in (1, 2, 3):
            self.stores[node].record(record(f"e{node}", node, node))
        self.peers.dead.add(3)
        self.assertEqual(self.page(), (["e2", "e1"], 2, [3]))
        latest = self.successResultOf(self.history.latest_per_job(["j1"]))
        self.assertEqual(latest["j1"]["execution_id"], "e1")

    def test_bad_filters_fail_the_read(self) -> None:
        """An invalid filter fails the read with the store's ValueError (not an empty page)."""
        self.failureResultOf(self.history.query(since="not a time"), ValueError)
        self.assertEqual(self.peers.asked, [])
