"""Tests for L{harness.receiver}, the callback receiver of the end-to-end tests."""

from __future__ import annotations

import treq.client
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from harness.receiver import CallbackReceiver, describe


class ReceiverTests(TestCase):
    async def test_records_and_stops_with_kept_alive_connections(self) -> None:
        """Items of each POST are recorded; stop() closes a kept-alive connection without error."""
        receiver = CallbackReceiver(reactor)
        port = await receiver.listen(reactor)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        http = treq.client.HTTPClient(Agent(reactor, pool=pool))
        for n in range(3):
            response = await http.post(
                f"http://127.0.0.1:{port}/cb", json=[{"execution_id": f"e{n}"}]
            )
            await response.content()
            self.assertEqual(response.code, 200)
        self.assertEqual([a.item["execution_id"] for a in receiver.arrivals], ["e0", "e1", "e2"])
        self.assertEqual(len(receiver._site.open), 1)
        await receiver.stop()
        self.assertEqual(receiver._site.open, {})

    async def test_demo_mode_reports_each_item_and_keeps_none(self) -> None:
        """With keep=False each item goes to on_arrival and nothing piles up in arrivals."""
        seen: list[str] = []
        receiver = CallbackReceiver(
            reactor, on_arrival=lambda a: seen.append(describe(a)), keep=False
        )
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        http = treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, False)))
        item = {"name": "beat", "job_uuid": "j-1", "scheduled_at": "2026-11-27T12:00:00.000Z"}
        response = await http.post(
            f"http://127.0.0.1:{port}/hook", json=[item, item], headers={"X-Scheduler0-Node": "2"}
        )
        await response.content()
        self.assertEqual(receiver.arrivals, [])
        self.assertEqual(len(seen), 2)
        self.assertIn("/hook job 'beat' (j-1) slot 2026-11-27T12:00:00.000Z", seen[0])
        self.assertTrue(seen[0].endswith("ms late, from node 2"), seen[0])
