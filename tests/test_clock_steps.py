"""
End to end: a real C{twistd scheduler0} node whose wall clock is stepped
back and then forward under libfaketime (its monotonic clock left real, as
NTP leaves it), with a real receiver and an C{@every 1s} job.
"""

from __future__ import annotations

import os
from collections import Counter

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, TestCase

from harness.process import client_headers, http_client, prepare_single_node
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
# The backward step is kept short so the test stays short: after it the job
# is silent until the wall clock is back where it was (see README, "Clock steps").
BACK_S = 5
FORWARD_S = 120


class ClockStepTests(TestCase):
    timeout = 120

    async def test_a_stepped_wall_clock(self) -> None:
        """
        Back 5 s: no execution id arrives twice, the next call comes within
        the period plus the step, /next lists only slots still to be sent,
        and the step is in /healthcheck, /metrics and the log, once.
        Forward 120 s: no burst, and no slot recorded outside_catch_up_window.
        """
        if not os.path.exists(LIBFAKETIME):
            raise SkipTest(
                f"libfaketime is not installed ({LIBFAKETIME}; apt-get install faketime)"
            )
        offset_file = os.path.abspath(self.mktemp())
        self._offset(offset_file, "+0")
        http = http_client(reactor)
        receiver = CallbackReceiver(reactor)
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        node.env = {
            "LD_PRELOAD": LIBFAKETIME,
            "FAKETIME_TIMESTAMP_FILE": offset_file,
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
        self.addCleanup(node.kill)
        await node.start()
        headers = await client_headers(node)
        response = await http.post(
            node.url + "/projects", json={"name": "clock", "description": ""}, headers=headers
        )
        project = (await response.json())["data"]["uuid"]
        response = await http.post(
            node.url + "/jobs",
            json={
                "project_uuid": project,
                "name": "every second",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{port}/tick",
            },
            headers=headers,
        )
        job = (await response.json())["data"]["uuid"]
        await self._arrivals(receiver, 3)

        self._offset(offset_file, f"-{BACK_S}s")
        health = await wait_for(
            reactor,
            lambda: self._health(node.url),
            timeout=10,
            what="the backward step in /healthcheck",
        )
        self.assertAlmostEqual(health["clock"]["last_step_s"], -BACK_S, delta=0.5)
        sent = max(a.item["scheduled_at"] for a in receiver.arrivals)
        response = await http.get(node.url + f"/jobs/{job}/next?n=3", headers=headers)
        upcoming = [item["utc"] for item in (await response.json())["data"]["items"]]
        self.assertTrue(all(instant > sent for instant in upcoming), (sent, upcoming))
        stepped_back_at = reactor.seconds()
        count = len(receiver.arrivals)
        await self._arrivals(receiver, count + 3, timeout=BACK_S + 10)
        after = [a.at for a in receiver.arrivals[count - 1 :]]
        gaps = [b - a for a, b in zip(after, after[1:], strict=False)]
        self.assertLess(max(gaps), 1 + BACK_S + 1.5, gaps)
        self.assertLess(receiver.arrivals[count].at - stepped_back_at, 1 + BACK_S + 1.5)

        count = len(receiver.arrivals)
        self._offset(offset_file, f"+{FORWARD_S - BACK_S}s")
        stepped_forward_at = reactor.seconds()
        await self._arrivals(receiver, count + 4, timeout=15)
        later = [a.at for a in receiver.arrivals[count:]]
        # No burst: the job's first slot in the time jumped over, then one a second.
        burst = max(sum(1 for t in later if s <= t < s + 1) for s in later)
        self.assertLessEqual(burst, 3, [t - stepped_forward_at for t in later])

        ids = Counter(a.item["execution_id"] for a in receiver.arrivals)
        self.assertEqual([i for i, n in ids.items() if n > 1], [])
        response = await http.get(
            node.url + f"/jobs/{job}/executions?limit=1000&state=skipped", headers=headers
        )
        reasons = Counter(e["skip_reason"] for e in (await response.json())["data"]["items"])
        self.assertEqual(reasons["outside_catch_up_window"], 0, reasons)
        self.assertGreater(reasons["clock_stepped"], 50, reasons)
        response = await http.get(node.url + "/metrics", headers=headers)
        metrics = (await response.content()).decode()
        self.assertIn('scheduler0_clock_steps_total{direction="backward"} 1.0', metrics)
        self.assertIn('scheduler0_clock_steps_total{direction="forward"} 1.0', metrics)
        with open(os.path.join(node.workdir, "node-1.log")) as f:
            log = f.read()
        self.assertEqual(log.count("the wall clock stepped backward"), 1)
        self.assertEqual(log.count("the wall clock stepped forward"), 1)

    def _offset(self, path: str, offset: str) -> None:
        """
        Set the node's wall clock offset from real time (libfaketime reads
        it at every call: the file is replaced whole, never seen half written).
        """
        with open(path + ".new", "w") as f:
            f.write(offset + "\n")
        os.replace(path + ".new", path)

    async def _arrivals(self, receiver: CallbackReceiver, count: int, timeout: float = 10) -> None:
        await wait_for(
            reactor,
            lambda: len(receiver.arrivals) >= count,
            timeout=timeout,
            what=f"{count} callbacks",
        )

    async def _health(self, url: str) -> dict | None:
        response = await http_client(reactor).get(url + "/healthcheck", timeout=2)
        data = (await response.json())["data"]
        return data if data.get("clock", {}).get("last_step_s") is not None else None
