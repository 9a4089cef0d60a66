"""
Labels end to end, with real parts: real C{twistd scheduler0} processes on
127.0.0.1 with real SQLite files, and a real HTTP server receiving the
callbacks. A bulk pause by selector stops exactly the selected jobs firing
and a bulk resume starts them again; on a cluster a bulk change proposed
through a follower applies on every node alike.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from harness.cluster import Cluster
from harness.process import client_headers, http_client, prepare_single_node
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from scheduler0.timeutil import parse_instant


class LabelsEndToEndCase(TestCase):
    timeout = 180

    async def receive(self) -> int:
        self.http = http_client(reactor)
        self.receiver = CallbackReceiver(reactor)
        port = await self.receiver.listen(reactor)
        self.addCleanup(self.receiver.stop)
        return port

    async def call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        kwargs.setdefault("headers", self.headers)
        response = await self.http.request(method, url, timeout=10, **kwargs)
        return response.code, await response.json()

    async def make_jobs(self, base: str, port: int, labels: list[dict]) -> list[dict]:
        code, body = await self.call(
            "POST", base + "/projects", json={"name": "labels", "description": "e2e"}
        )
        self.assertEqual(code, 201, body)
        project = body["data"]["uuid"]
        jobs = [
            {
                "project_uuid": project,
                "name": f"job {n}",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{port}/callback",
                "labels": job_labels,
            }
            for n, job_labels in enumerate(labels)
        ]
        code, body = await self.call("POST", base + "/jobs", json=jobs)
        self.assertEqual(code, 201, body)
        return body["data"]

    def slots_of(self, job_uuid: str) -> list[float]:
        return [
            parse_instant(a.item["scheduled_at"]).timestamp()
            for a in self.receiver.arrivals
            if a.item["job_uuid"] == job_uuid
        ]

    async def fired_after(self, job_uuid: str, instant: float, what: str) -> None:
        await wait_for(
            reactor,
            lambda: any(slot > instant for slot in self.slots_of(job_uuid)),
            timeout=20,
            what=what,
        )


class SingleNodeLabelTests(LabelsEndToEndCase):
    async def test_bulk_pause_stops_firing_and_resume_restarts(self) -> None:
        """
        Of three @every 1s jobs, the two labelled team=billing stop firing
        once a bulk pause by selector answers, while the third fires on;
        they fire again after a bulk resume; labels and the index survive a
        restart; a bulk delete removes them.
        """
        port = await self.receive()
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(node.kill)
        await node.start()
        self.headers = await client_headers(node)
        base = node.url
        billing_a, billing_b, ops = await self.make_jobs(
            base, port, [{"team": "billing"}, {"team": "billing", "env": "dev"}, {"team": "ops"}]
        )
        for job in (billing_a, billing_b, ops):
            await self.fired_after(job["uuid"], 0, "every job to fire")

        code, body = await self.call("POST", base + "/jobs/bulk/pause?selector=team%3Dbilling")
        self.assertEqual(code, 200, body)
        paused_at = reactor.seconds()
        self.assertEqual(
            sorted(body["data"]["uuids"]), sorted([billing_a["uuid"], billing_b["uuid"]])
        )
        # The unselected job fires on for three more seconds; the paused ones do not.
        await self.fired_after(ops["uuid"], paused_at + 3, "the ops job to fire on")
        for job in (billing_a, billing_b):
            late = [slot for slot in self.slots_of(job["uuid"]) if slot > paused_at]
            self.assertEqual(late, [], f"{job['name']} fired while paused")
        code, body = await self.call("GET", base + "/jobs?selector=team%3Dbilling&paused=true")
        self.assertEqual(body["data"]["total"], 2)

        code, body = await self.call("POST", base + "/jobs/bulk/resume?selector=team=billing,env")
        self.assertEqual((code, body["data"]["uuids"]), (200, [billing_b["uuid"]]))
        resumed_at = reactor.seconds()
        await self.fired_after(billing_b["uuid"], resumed_at, "the resumed job to fire again")

        await node.kill()
        await node.start()
        code, body = await self.call("GET", base + "/jobs?selector=team%3Dbilling,!env")
        self.assertEqual(
            [(job["uuid"], job["labels"]) for job in body["data"]["items"]],
            [(billing_a["uuid"], {"team": "billing"})],
        )
        code, body = await self.call("POST", base + "/jobs/bulk/delete?selector=team")
        self.assertEqual((code, body["data"]["count"]), (200, 3))
        code, body = await self.call("GET", base + "/jobs")
        self.assertEqual(body["data"]["total"], 0)


class ClusterLabelTests(LabelsEndToEndCase):
    async def test_bulk_through_a_follower_applies_everywhere(self) -> None:
        """
        A bulk pause sent to a follower is forwarded to the leader; every
        node then holds the same paused jobs, a selected job stops firing
        wherever it is owned, and each node answers the selector alike.
        """
        port = await self.receive()
        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), 3)
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        leader = await cluster.wait_leader(30)
        self.headers = await cluster.make_headers()
        follower = next(n for n in cluster.ids if n != leader)

        def base(node_id: int) -> str:
            return f"http://127.0.0.1:{cluster.addresses[node_id].http_port}"

        labels = [{"tier": "web"}] * 3 + [{"tier": "db"}] * 3
        jobs = await self.make_jobs(base(follower), port, labels)
        for job in jobs:
            await self.fired_after(job["uuid"], 0, "every job to fire")
        code, body = await self.call(
            "POST", base(follower) + "/jobs/bulk/pause?selector=tier%3Dweb"
        )
        self.assertEqual((code, body["data"]["count"]), (200, 3), body)
        paused_at = reactor.seconds()
        web = {job["uuid"] for job in jobs[:3]}
        self.assertEqual(set(body["data"]["uuids"]), web)
        for node_id in cluster.ids:
            code, body = await self.call(
                "GET", base(node_id) + "/jobs?selector=tier%3Dweb&paused=true&consistency=stale"
            )
            self.assertEqual({job["uuid"] for job in body["data"]["items"]}, web, f"node {node_id}")
        for job in jobs[3:]:
            await self.fired_after(job["uuid"], paused_at + 3, "the db jobs to fire on")
        for uuid in web:
            late = [slot for slot in self.slots_of(uuid) if slot > paused_at]
            self.assertEqual(late, [], f"{uuid} fired while paused")
