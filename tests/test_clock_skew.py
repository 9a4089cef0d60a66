"""
Clocks that disagree in a cluster, with real parts: three real C{twistd}
nodes on 127.0.0.1, one of them under libfaketime (its wall clock moved by
rewriting a file, its monotonic clock real, as NTP would leave it), real
SQLite files and a real HTTP receiver for the callbacks.

The skewed node says so in its health check (503, C{clock_skew}), fires
nothing while its clock is out of bounds, and its jobs move to the others;
once its clock agrees again it is ready and fires again. Every slot of the
C{@every 1s} jobs arrives, and none arrives twice (under one id or two).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from datetime import timedelta
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, TestCase

from harness.cluster import Cluster
from harness.process import http_client
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from scheduler0.timeutil import parse_instant

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
JOBS = 6
SKEWED = 3


class ClockSkewTests(TestCase):
    timeout = 150

    def setUp(self) -> None:
        if not os.path.exists(LIBFAKETIME):
            raise SkipTest(
                f"libfaketime is not installed ({LIBFAKETIME}; apt-get install faketime)"
            )

    def skew(self, setting: str) -> None:
        """Move the skewed node's wall clock: libfaketime reads this file every second."""
        with open(self.faketime_file, "w", encoding="ascii") as f:
            f.write(setting + "\n")

    async def call(self, method: str, node_id: int, path: str, **kwargs: Any) -> tuple[int, Any]:
        kwargs.setdefault("headers", self.cluster.headers)
        url = self.cluster.addresses[node_id].address + path
        response = await self.http.request(method, url, timeout=10, **kwargs)
        return response.code, await response.json()

    async def owned(self) -> dict[int, int]:
        code, body = await self.call("GET", self.leader, "/cluster")
        self.assertEqual(code, 200, body)
        return {m["node_id"]: m["owned_jobs"] for m in body["data"]["members"]}

    async def wait(self, probe: Any, what: str, timeout: float = 30) -> Any:
        try:
            return await wait_for(reactor, probe, timeout=timeout, what=what)
        except Exception as e:
            raise AssertionError(f"{e}\n{self.cluster.logs(25)}") from None

    async def test_a_skewed_node_stops_firing_its_jobs_move_and_it_comes_back(self) -> None:
        self.http = http_client(reactor)
        receiver = CallbackReceiver(reactor)
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        base = os.path.abspath(self.mktemp())
        self.faketime_file = os.path.join(base, "faketime")
        os.makedirs(base)
        self.skew("+0")
        cluster = Cluster(
            reactor,
            base,
            3,
            node_env={
                SKEWED: {
                    "LD_PRELOAD": LIBFAKETIME,
                    "FAKETIME_TIMESTAMP_FILE": self.faketime_file,
                    # Read again every second (reading it on every call,
                    # FAKETIME_NO_CACHE, slows the node enough to lose leases).
                    "FAKETIME_CACHE_DURATION": "1",
                    "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                }
            },
        )
        self.cluster = cluster
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        self.leader = await cluster.wait_leader(30)
        if self.leader == SKEWED:
            # The leader is the reference clock: skew a follower instead.
            await cluster.restart(SKEWED)
            self.leader = await cluster.wait_leader(30)
        self.assertNotEqual(self.leader, SKEWED)
        await cluster.make_headers()
        code, body = await self.call("POST", self.leader, "/projects", json={"name": "skew"})
        self.assertEqual(code, 201, body)
        jobs = [
            {
                "project_uuid": body["data"]["uuid"],
                "name": f"job {n}",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{port}/callback",
            }
            for n in range(JOBS)
        ]

        async def knows_the_credential() -> bool | None:
            return True if (await self.call("GET", SKEWED, "/projects"))[0] == 200 else None

        await self.wait(knows_the_credential, "node 3 to know the client credential")
        # Created through the node to be skewed (forwarded to the leader).
        code, body = await self.call("POST", SKEWED, "/jobs", json=jobs)
        self.assertEqual(code, 201, body)
        created = body["data"]

        def fired_by(node_id: int, after: int = 0) -> bool:
            return any(
                a.headers.get("x-scheduler0-node") == str(node_id)
                for a in receiver.arrivals[after:]
            )

        await self.wait(lambda: fired_by(SKEWED) or None, "the node to be skewed to fire")
        health = await cluster.health(SKEWED)
        assert health is not None
        self.assertLess(abs(health["clock_offset_s"]), 0.1, health)

        # Five seconds ahead: it stops firing, says why, and its jobs move.
        # (Before this, a node slowed by the machine's load can lose its
        # lease while the jobs are first placed and send a slot its
        # successor sends too: SPEC section 1's failover window, which
        # test_cluster_e2e covers.)
        self.skew("+5")

        async def skewed() -> dict | None:
            answer = await cluster.health_answer(SKEWED, timeout=1.0)
            if answer is None or answer[0] != 503:
                return None
            codes = [r["code"] for r in answer[1]["reasons"]]
            return answer[1] if "clock_skew" in codes else None

        health = await self.wait(skewed, "node 3 to report clock_skew")
        # Until node 3 has a lease answer it cannot know its clock moved, and
        # it fires; the leader, which sees the offset on the same renewal,
        # hands its jobs over at once, as for a failed node, so a slot node 3
        # sent in that window may be sent again by its successor (SPEC section
        # 1's failover window; seen under a loaded -j2 run). Once it reports
        # clock_skew, nothing arrives twice.
        known_at = reactor.seconds()
        self.assertGreater(health["clock_offset_s"], 4.5, health)
        self.assertFalse(health["lease_valid"], health)
        await self.wait(lambda: self.owned_none(SKEWED), "node 3's jobs to move to the other nodes")
        during = len(receiver.arrivals)
        code, metrics = await self.metrics(SKEWED)
        (offset,) = re.findall(r"^scheduler0_clock_offset_seconds (\S+)$", metrics, re.M)
        self.assertGreater(float(offset), 4.5)

        # Its clock agrees again: ready, it gets jobs back and fires them.
        self.skew("+0")

        async def ready() -> bool | None:
            answer = await cluster.health_answer(SKEWED, timeout=1.0)
            return True if answer is not None and answer[0] == 200 else None

        await self.wait(ready, "node 3 to be ready again", timeout=40)
        await self.wait(
            lambda: fired_by(SKEWED, during) or None, "node 3 to fire again", timeout=40
        )
        self.assertEqual(fired_by(SKEWED, during), True)

        # Every slot up to a moment after the return arrived, each id once.
        until = reactor.seconds() - 2
        await self.wait(
            lambda: self.delivered_through(receiver, created, until) or None,
            f"every slot up to {until}",
        )
        per_job: dict[str, set[float]] = {}
        ids: Counter = Counter()
        slots: Counter = Counter()
        for arrival in receiver.arrivals:
            item = arrival.item
            at = parse_instant(item["scheduled_at"]).timestamp()
            per_job.setdefault(item["job_uuid"], set()).add(at)
            if at >= known_at:
                ids[item["execution_id"]] += 1
                slots[(item["job_uuid"], at)] += 1
        missed = []
        for job in created:
            slot = parse_instant(job["anchor_at"]) + timedelta(seconds=1)
            while slot <= parse_instant(job["created_at"]):
                slot += timedelta(seconds=1)
            while slot.timestamp() <= until:
                if slot.timestamp() not in per_job.get(job["uuid"], set()):
                    missed.append((job["uuid"], slot.isoformat()))
                slot += timedelta(seconds=1)
        self.assertEqual(missed, [], cluster.logs(20))
        twice = [i for i, n in ids.items() if n > 1]
        self.assertEqual(
            twice,
            [],
            [
                (a.headers.get("x-scheduler0-node"), a.at, a.item["scheduled_at"])
                for a in receiver.arrivals
                if a.item["execution_id"] in twice
            ],
        )
        self.assertEqual([s for s, n in slots.items() if n > 1], [], slots.most_common(3))

    async def owned_none(self, node_id: int) -> bool | None:
        owned = await self.owned()
        return True if owned.get(node_id, 0) == 0 and sum(owned.values()) == JOBS else None

    async def metrics(self, node_id: int) -> tuple[int, str]:
        url = self.cluster.addresses[node_id].address + "/metrics"
        response = await self.http.get(url, headers=self.cluster.headers, timeout=10)
        return response.code, (await response.content()).decode()

    @staticmethod
    def delivered_through(receiver: CallbackReceiver, jobs: list[dict], instant: float) -> bool:
        latest: dict[str, float] = {}
        for arrival in receiver.arrivals:
            slot = parse_instant(arrival.item["scheduled_at"]).timestamp()
            job = arrival.item["job_uuid"]
            latest[job] = max(latest.get(job, 0), slot)
        return all(latest.get(job["uuid"], 0) >= instant for job in jobs)
