"""
Copies of a node's execution history on its keeper (scheduler0.cluster.copies),
over real SQLite files on the synchronous pool, two nodes wired to each other.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.cluster import copies as copies_module
from scheduler0.cluster.copies import (
    CHECKPOINT_PAUSE_S,
    MAX_PENDING_ROWS,
    SHIP_INTERVAL_S,
    HistoryCopies,
    check_meta,
    decode,
    encode,
    keeper_of,
)
from scheduler0.errors import WritesRefused
from scheduler0.store.executions import ExecutionStore


def record(n: int, job_uuid: str = "j1", node_id: int = 1, state: str = "succeeded") -> dict:
    at = f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}.000Z"
    return {
        "execution_id": f"{job_uuid}-{n}",
        "job_uuid": job_uuid,
        "project_uuid": "p1",
        "scheduled_at": at,
        "state": state,
        "attempts": 1,
        "node_id": node_id,
        "started_at": at,
        "finished_at": at,
        "status_code": 200,
        "error": None,
        "skip_reason": None,
        "response_body": None,
    }


def now(fn: Any, *args: Any) -> Deferred:
    try:
        return succeed(fn(*args))
    except Exception:
        return fail()


class Node:
    """One node's execution store and copies, on a real file."""

    def __init__(self, case: SynchronousTestCase, node_id: int, clock: task.Clock) -> None:
        directory = case.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "executions.db")
        self.pool = SynchronousConnectionPool(self.path)
        case.addCleanup(self.pool.close)
        self.store = ExecutionStore(self.pool, clock)
        case.successResultOf(self.store.open())
        self.members = {1, 2, 3}
        self.peers: dict[int, Node] = {}
        self.reachable = True
        self.copies = HistoryCopies(
            clock, self.store, node_id, lambda: set(self.members), self.send, now
        )
        case.successResultOf(Deferred.fromCoroutine(self.copies.open()))
        self.store.tap = self.copies.tap
        self.sent: list[tuple[int, dict]] = []

    def send(self, node_id: int, meta: dict, data: bytes) -> Deferred:
        self.sent.append((node_id, meta))
        if not self.reachable or node_id not in self.peers:
            return fail(ConnectionRefusedError("unreachable"))
        return Deferred.fromCoroutine(self.peers[node_id].copies.receive(check_meta(meta), data))

    def copies_held(self) -> list[tuple]:
        return self.pool._connection.execute(
            "SELECT origin, incarnation, generation, seq, kind, rows FROM history_copies"
            " ORDER BY origin, generation, seq"
        ).fetchall()

    def ids(self) -> set[str]:
        rows = self.pool._connection.execute("SELECT execution_id, node_id FROM executions")
        return {f"{eid}@{node}" for eid, node in rows}


class CopiesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_767_225_600)
        self.one = Node(self, 1, self.clock)
        self.two = Node(self, 2, self.clock)
        self.one.peers = {2: self.two}
        self.two.peers = {1: self.one}

    def drive(self, coroutine: Any) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def write(self, node: Node, numbers: range, job_uuid: str = "j1", node_id: int = 1) -> None:
        for n in numbers:
            node.store.record(record(n, job_uuid, node_id), trusted=True)
        self.successResultOf(node.store.flush())

    def test_the_keeper_is_the_next_member_by_id(self) -> None:
        """Each node's keeper is the member after it by id, wrapping round; none alone."""
        self.assertEqual(keeper_of(1, {1, 2, 3}), 2)
        self.assertEqual(keeper_of(3, {1, 2, 3}), 1)
        self.assertEqual(keeper_of(2, {1, 3, 5}), 3)
        self.assertEqual(keeper_of(1, {1}), None)

    def test_batches_of_a_release_before_response_body_decode(self) -> None:
        """Rows without the last column (response_body) read as records with it empty."""
        old = [list(record(n).values())[:-1] for n in range(3)]
        data = zlib.compress(json.dumps(old).encode())
        self.assertEqual(decode(data), [record(n) for n in range(3)])
        with self.assertRaises(ValueError):
            decode(zlib.compress(json.dumps([old[0][:-1]]).encode()))

    def test_batches_round_trip(self) -> None:
        """A batch decodes to the records it was made of."""
        rows = [tuple(record(n).values()) for n in range(3)]
        self.assertEqual(decode(encode(rows)), [record(n) for n in range(3)])

    def test_records_are_kept_by_the_keeper_as_batches_not_rows(self) -> None:
        """
        What a node records reaches its keeper as a checkpoint and then one
        row per batch, however many records; the keeper's own records are
        untouched.
        """
        self.write(self.one, range(5))
        self.drive(self.one.copies.ship())
        self.write(self.one, range(5, 105))
        self.drive(self.one.copies.ship())
        held = self.two.copies_held()
        self.assertEqual([(kind, rows) for *_, kind, rows in held], [("last", 5), ("batch", 100)])
        self.assertEqual(self.two.ids(), set())
        self.assertEqual(self.one.copies.sent_rows, 105)

    def test_a_checkpoint_is_sent_in_paced_chunks(self) -> None:
        """
        A checkpoint goes in chunks of CHECKPOINT_ROWS, CHECKPOINT_PAUSE_S
        apart (background work), the last one marked as such.
        """
        self.patch(copies_module, "CHECKPOINT_ROWS", 3)
        self.write(self.one, range(7))
        shipped = Deferred.fromCoroutine(self.one.copies.ship())
        kinds = lambda: [(kind, rows) for *_, kind, rows in self.two.copies_held()]  # noqa: E731
        self.assertEqual(kinds(), [("checkpoint", 3)])
        self.clock.advance(CHECKPOINT_PAUSE_S)
        self.assertEqual(kinds(), [("checkpoint", 3), ("checkpoint", 3)])
        self.clock.advance(CHECKPOINT_PAUSE_S)
        self.successResultOf(shipped)
        self.assertEqual(kinds(), [("checkpoint", 3), ("checkpoint", 3), ("last", 1)])

    def test_the_keeper_adopts_the_records_of_a_node_that_left(self) -> None:
        """
        Once a node is no longer a member, its keeper adds the copies to its
        own records, with the node's id, and forgets the copies.
        """
        self.write(self.one, range(10))
        self.drive(self.one.copies.ship())
        self.write(self.one, range(10, 20), job_uuid="j2")
        self.drive(self.one.copies.ship())
        # Still a member: nothing is adopted.
        self.drive(self.two.copies.adopt_departed())
        self.assertEqual(self.two.ids(), set())
        self.two.members = {2, 3}
        self.drive(self.two.copies.adopt_departed())
        expected = {f"j1-{n}@1" for n in range(10)} | {f"j2-{n}@1" for n in range(10, 20)}
        self.assertEqual(self.two.ids(), expected)
        self.assertEqual(self.two.copies_held(), [])
        self.assertEqual(self.two.copies.adopted_rows, 20)

    def test_a_newer_checkpoint_replaces_the_older_generations(self) -> None:
        """
        Once a node has sent as many records after its checkpoint as the
        renewal asks, it sends a new checkpoint; once that is whole, the
        keeper drops the older generation (and what was pruned is gone).
        """
        self.patch(copies_module, "MIN_RENEW_ROWS", 10)
        self.patch(copies_module, "RENEW_FACTOR", 1)
        self.write(self.one, range(10))
        self.drive(self.one.copies.ship())
        self.write(self.one, range(10, 30))
        self.drive(self.one.copies.ship())
        self.pool_delete(self.one, "j1-0")
        self.clock.advance(SHIP_INTERVAL_S)
        self.write(self.one, range(30, 31))
        self.drive(self.one.copies.ship())
        held = self.two.copies_held()
        generations = {generation for _, _, generation, *_ in held}
        self.assertEqual(len(generations), 1)
        self.assertEqual([(kind, rows) for *_, kind, rows in held], [("last", 30)])
        self.two.members = {2, 3}
        self.drive(self.two.copies.adopt_departed())
        self.assertEqual(self.two.ids(), {f"j1-{n}@1" for n in range(1, 31)})

    def pool_delete(self, node: Node, execution_id: str) -> None:
        node.pool._connection.execute(
            "DELETE FROM executions WHERE execution_id = ?", (execution_id,)
        )

    def test_a_node_back_with_a_new_data_directory(self) -> None:
        """
        A node that comes back with a new data directory (a new
        incarnation) is still a member, but the copies of its old one are
        adopted: nobody else has them any more.
        """
        self.write(self.one, range(4))
        self.drive(self.one.copies.ship())
        reborn = Node(self, 1, self.clock)
        reborn.peers = {2: self.two}
        self.assertNotEqual(reborn.copies.incarnation, self.one.copies.incarnation)
        self.clock.advance(SHIP_INTERVAL_S)
        self.write(reborn, range(100, 102))
        self.drive(reborn.copies.ship())
        self.drive(self.two.copies.adopt_departed())
        self.assertEqual(self.two.ids(), {f"j1-{n}@1" for n in range(4)})
        held = self.two.copies_held()
        self.assertEqual({incarnation for _, incarnation, *_ in held}, {reborn.copies.incarnation})

    def test_a_new_keeper_gets_a_checkpoint_and_the_old_one_drops_its_copies(self) -> None:
        """When the keeper changes, the new one gets everything and the old one lets go."""
        three = Node(self, 3, self.clock)
        self.one.peers = {2: self.two, 3: three}
        self.write(self.one, range(3))
        self.drive(self.one.copies.ship())
        self.assertEqual(len(self.two.copies_held()), 1)
        self.one.members = {1, 3}
        self.write(self.one, range(3, 5))
        self.drive(self.one.copies.ship())
        self.assertEqual([(kind, rows) for *_, kind, rows in three.copies_held()], [("last", 5)])
        self.assertEqual(self.two.copies_held(), [])

    def test_an_unreachable_keeper_is_retried_later_and_what_waits_is_bounded(self) -> None:
        """
        Sends that fail are tried again after a growing delay; what waits
        meanwhile is bounded (past it, the next checkpoint carries it).
        """
        self.one.reachable = False
        self.write(self.one, range(3))
        self.drive(self.one.copies.ship())
        tries = len(self.one.sent)
        self.drive(self.one.copies.ship())
        self.assertEqual(len(self.one.sent), tries)
        self.one.copies.tap([tuple(record(n).values()) for n in range(MAX_PENDING_ROWS + 1)])
        self.assertEqual(self.one.copies._pending, [])
        self.assertGreater(self.one.copies.dropped_rows, MAX_PENDING_ROWS)
        self.one.reachable = True
        self.clock.advance(SHIP_INTERVAL_S * 4)
        self.drive(self.one.copies.ship())
        self.assertEqual([(kind, rows) for *_, kind, rows in self.two.copies_held()], [("last", 3)])

    def test_a_keeper_whose_disk_is_full_is_one_event_each_way(self) -> None:
        """
        A keeper that cannot store a batch (its disk is full) refuses it as
        WritesRefused (507 on the peer route, no traceback); the sender says
        so once however many tries fail, and once when a batch is stored again.
        """
        keeper_pool = self.two.pool
        store = keeper_pool.runInteraction

        def full(*args: Any, **kwargs: Any) -> Deferred:
            return fail(sqlite3.OperationalError("database or disk is full"))

        keeper_pool.runInteraction = full  # type: ignore[method-assign]
        meta = {"origin": 1, "incarnation": "i", "generation": 1, "seq": 0, "kind": "last"}
        refused = Deferred.fromCoroutine(self.two.copies.receive({**meta, "rows": 0}, b""))
        self.assertIn("disk_full", self.failureResultOf(refused, WritesRefused).value.cause)
        with capturedLogs() as events:
            for n in range(40):
                self.write(self.one, range(n, n + 1))
                self.drive(self.one.copies.ship())
                self.clock.advance(SHIP_INTERVAL_S * 4)
            failed_tries = self.one.copies._failures
            keeper_pool.runInteraction = store  # type: ignore[method-assign]
            self.clock.advance(copies_module.MAX_RETRY_S)
            self.drive(self.one.copies.ship())
        self.assertGreater(failed_tries, 10)
        said = [e.get("event") for e in events]
        self.assertEqual(said, ["history_copies_failing", "history_copies_sent"])
        self.assertEqual(events[1]["failures"], failed_tries)
        self.assertEqual(sum(rows for *_, rows in self.two.copies_held()), 40)

    def test_copies_wait_while_the_node_is_busy(self) -> None:
        """
        Copies are background work: while the node is busy (past its
        capacity) nothing is sent, and what was recorded goes once it is not.
        """
        busy = [True]
        self.one.copies.busy = lambda: busy[0]
        self.write(self.one, range(4))
        self.drive(self.one.copies.ship())
        self.assertEqual(self.one.sent, [])
        busy[0] = False
        self.drive(self.one.copies.ship())
        self.assertEqual([(kind, rows) for *_, kind, rows in self.two.copies_held()], [("last", 4)])

    def test_batch_descriptions_are_checked(self) -> None:
        """A malformed batch description is refused, naming the field."""
        good = {
            "origin": 1,
            "incarnation": "x",
            "generation": 5,
            "seq": 0,
            "kind": "batch",
            "rows": 3,
        }
        self.assertEqual(check_meta(good), good)
        for field, value in (
            ("origin", 0),
            ("origin", True),
            ("incarnation", ""),
            ("generation", -1),
            ("seq", "1"),
            ("kind", "other"),
            ("rows", None),
        ):
            with self.assertRaises(ValueError) as caught:
                check_meta({**good, field: value})
            self.assertTrue(str(caught.exception).startswith(field), caught.exception)
        with self.assertRaises(ValueError):
            check_meta([])  # type: ignore[arg-type]
