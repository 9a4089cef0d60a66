"""
The cluster end to end, with real parts: three (or four) real C{twistd}
nodes on 127.0.0.1 whose Raft and peer-HTTP links run through fault
proxies, real SQLite files, and a real HTTP server receiving the callbacks.

Each test runs C{@every 1s} jobs through a fault and then checks, slot by
slot, that nothing was missed (late is allowed: a job whose owner fails is
caught up by its new owner with the same execution ids), and that a slot
fired twice is one the failed owner sent before its records reached the
cluster (the only window SPEC §1 allows).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from datetime import timedelta
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from harness.cluster import Cluster
from harness.process import NodeProcess, free_port, http_client, init_peer_credentials
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from scheduler0.cluster.copies import SHIP_INTERVAL_S
from scheduler0.timeutil import parse_instant

JOBS = 6
ADMIN = ("admin", "admin-password")


class ClusterTestCase(TestCase):
    timeout = 180

    async def start_cluster(self, size: int = 3, extra_config: str = "") -> Cluster:
        self.http = http_client(reactor)
        self.receiver = CallbackReceiver(reactor)
        self.receiver_port = await self.receiver.listen(reactor)
        self.addCleanup(self.receiver.stop)
        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), size, extra_config)
        self.cluster = cluster
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        self.leader = await cluster.wait_leader(30)
        self.headers = await cluster.make_headers()
        return cluster

    def url(self, node_id: int, path: str) -> str:
        return f"http://127.0.0.1:{self.cluster.addresses[node_id].http_port}{path}"

    async def call(self, method: str, node_id: int, path: str, **kwargs: Any) -> tuple[int, Any]:
        kwargs.setdefault("headers", self.headers)
        response = await self.http.request(method, self.url(node_id, path), timeout=10, **kwargs)
        return response.code, await response.json()

    async def create_jobs(self, node_id: int, count: int = JOBS) -> list[dict]:
        code, body = await self.call(
            "POST", node_id, "/projects", json={"name": "cluster", "description": "e2e"}
        )
        self.assertEqual(code, 201, body)
        project = body["data"]["uuid"]
        jobs = [
            {
                "project_uuid": project,
                "name": f"job {n}",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{self.receiver_port}/callback",
            }
            for n in range(count)
        ]
        code, body = await self.call("POST", node_id, "/jobs", json=jobs)
        self.assertEqual(code, 201, body)
        self.jobs = body["data"]
        return self.jobs

    def now(self) -> float:
        return reactor.seconds()

    async def delivered_through(self, instant: float, timeout: float = 30) -> None:
        """Wait until every job's slots up to C{instant} arrived."""

        def done() -> bool:
            latest: dict[str, float] = {}
            for arrival in self.receiver.arrivals:
                slot = parse_instant(arrival.item["scheduled_at"]).timestamp()
                job = arrival.item["job_uuid"]
                latest[job] = max(latest.get(job, 0), slot)
            return all(latest.get(job["uuid"], 0) >= instant for job in self.jobs)

        await wait_for(reactor, done, timeout=timeout, what=f"every slot up to {instant}")

    def check_slots(self, until: float) -> tuple[list, Counter]:
        """
        Every job's slots from its first through C{until}: (missed slots,
        delivery count per execution id).
        """
        per_job: dict[str, set[float]] = {}
        ids: Counter = Counter()
        for arrival in self.receiver.arrivals:
            item = arrival.item
            ids[item["execution_id"]] += 1
            per_job.setdefault(item["job_uuid"], set()).add(
                parse_instant(item["scheduled_at"]).timestamp()
            )
        missed = []
        for job in self.jobs:
            anchor = parse_instant(job["anchor_at"])
            created = parse_instant(job["created_at"])
            slot = anchor + timedelta(seconds=1)
            while slot <= created:
                slot += timedelta(seconds=1)
            seen = per_job.get(job["uuid"], set())
            while slot.timestamp() <= until:
                if slot.timestamp() not in seen:
                    missed.append((job["uuid"], slot.isoformat()))
                slot += timedelta(seconds=1)
        return missed, ids

    def assert_every_slot(self, until: float, allowed_duplicates: int = 0) -> None:
        missed, ids = self.check_slots(until)
        self.assertEqual(missed, [], self.cluster.logs(20))
        duplicates = sum(1 for count in ids.values() if count > 1)
        self.assertLessEqual(duplicates, allowed_duplicates, ids.most_common(5))

    async def wait_health(self, node_id: int, predicate: Any, what: str) -> dict:
        async def probe() -> dict | None:
            health = await self.cluster.health(node_id, timeout=1.0)
            return health if health is not None and predicate(health) else None

        return await wait_for(reactor, probe, timeout=30, what=what)


class ClusterEndToEndTests(ClusterTestCase):
    async def test_writes_on_followers_are_forwarded_and_read_back(self) -> None:
        """
        A write sent to a follower is committed by the leader and answered
        with the leader's answer; the follower reads its own write at once,
        and a linearizable read on the other follower sees it too.
        """
        # The largest batch a client may send takes 2-4 s through a follower
        # on a loaded 2-core machine (before and after issue 15 alike), past
        # the default RaftApplyTimeout of 2 s: what is checked here is that it
        # is forwarded and answered, not how fast.
        await self.start_cluster(extra_config="RaftApplyTimeout: 15\n")
        follower, other = [n for n in self.cluster.ids if n != self.leader]
        code, body = await self.call(
            "POST", follower, "/projects", json={"name": "forwarded", "description": "x"}
        )
        self.assertEqual(code, 201, body)
        project = body["data"]
        code, body = await self.call("GET", follower, f"/projects/{project['uuid']}")
        self.assertEqual((code, body["data"]["name"]), (200, "forwarded"))
        code, body = await self.call("GET", other, f"/projects/{project['uuid']}")
        self.assertEqual((code, body["data"]["name"]), (200, "forwarded"))
        # Rejected on the leader, rejected through a follower the same way.
        code, body = await self.call(
            "POST", other, "/projects", json={"name": "forwarded", "description": "again"}
        )
        self.assertEqual(code, 409, body)
        # The largest array a client may send, through a follower: the
        # forwarded command is larger than the client's body.
        jobs = [
            {
                "project_uuid": project["uuid"],
                "name": f"bulk {n}",
                "spec": "@every 1h",
                "callback_url": "http://127.0.0.1:9/bulk",
                "data": {"n": n, "padding": "x" * 60},
            }
            for n in range(10_000)
        ]
        code, body = await self.call("POST", follower, "/jobs", json=jobs)
        self.assertEqual(code, 201, str(body)[:300])
        code, body = await self.call("GET", other, f"/jobs?project_uuid={project['uuid']}")
        self.assertEqual((code, body["data"]["total"]), (200, 10_000))
        # A credential made through one node works at once on another, and
        # once its archive is acknowledged no node takes it any more.
        code, body = await self.call("POST", follower, "/credentials", headers={}, auth=ADMIN)
        self.assertEqual(code, 201, body)
        credential = body["data"]
        own = {"x-api-key": credential["api_key"], "x-secret-key": credential["api_secret"]}
        code, body = await self.call("GET", other, "/projects", headers=own)
        self.assertEqual(code, 200, body)
        code, body = await self.call("GET", self.leader, "/projects", headers=own)
        self.assertEqual(code, 200, body)
        # One follower hears from the leader 0.4 s late: the archive commits
        # without it, and is acknowledged only once it has applied it too.
        self.cluster.link(self.leader, follower).raft.delay(0.4)
        code, body = await self.call(
            "DELETE", other, f"/credentials/{credential['uuid']}", headers={}, auth=ADMIN
        )
        self.assertEqual(code, 200, body)
        for node_id in self.cluster.ids:
            code, body = await self.call("GET", node_id, "/projects?consistency=stale", headers=own)
            self.assertEqual(code, 401, (node_id, body))
        self.cluster.heal()
        code, body = await self.call("GET", follower, "/cluster")
        self.assertEqual(code, 200, body)
        self.assertEqual(
            sorted((m["node_id"], m["voter"], m["reachable"]) for m in body["data"]["members"]),
            [(1, True, True), (2, True, True), (3, True, True)],
        )

    async def test_leader_sigkill_misses_no_slot(self) -> None:
        """
        With the leader SIGKILLed, another is elected, the dead leader's jobs
        move, and every slot of every job is delivered; writes work again.
        """
        await self.start_cluster()
        follower = next(n for n in self.cluster.ids if n != self.leader)
        await self.create_jobs(follower)
        await self.delivered_through(self.now() + 2)
        killed_at = self.now()
        await self.cluster.kill(self.leader)
        others = [n for n in self.cluster.ids if n != self.leader]
        new_leader = await self.cluster.wait_leader(30, among=others)
        self.assertNotEqual(new_leader, self.leader)
        code, body = await self.call(
            "POST", follower, "/projects", json={"name": "after failover", "description": ""}
        )
        self.assertEqual(code, 201, body)
        until = self.now() + 3
        await self.delivered_through(until)
        # Slots the dead leader sent but had not reported may come again.
        self.assert_every_slot(until, allowed_duplicates=JOBS)
        late = [
            a.at - parse_instant(a.item["scheduled_at"]).timestamp()
            for a in self.receiver.arrivals
            if parse_instant(a.item["scheduled_at"]).timestamp() >= killed_at
        ]
        self.assertLess(max(late), 5.0)

    async def test_follower_sigkill_and_restart_miss_no_slot(self) -> None:
        """
        A SIGKILLed follower's jobs move to the live nodes; restarted, it gets
        its share back through handovers that neither miss nor repeat a slot.
        """
        await self.start_cluster()
        await self.create_jobs(self.leader)
        await self.delivered_through(self.now() + 2)
        follower = next(n for n in self.cluster.ids if n != self.leader)
        await self.cluster.kill(follower)
        await self.delivered_through(self.now() + 3)
        before_restart = len(self.receiver.arrivals)
        await self.cluster.restart(follower)

        async def owns_jobs() -> bool:
            code, body = await self.call("GET", self.leader, "/cluster")
            members = {m["node_id"]: m for m in body["data"]["members"]}
            return code == 200 and members[follower]["owned_jobs"] > 0

        await wait_for(reactor, owns_jobs, timeout=30, what="the restarted node to own jobs")
        until = self.now() + 3
        await self.delivered_through(until)
        self.assert_every_slot(until, allowed_duplicates=JOBS)
        # The handover back to the restarted node repeats nothing.
        later = Counter(a.item["execution_id"] for a in self.receiver.arrivals[before_restart:])
        earlier = {a.item["execution_id"] for a in self.receiver.arrivals[:before_restart]}
        self.assertEqual([i for i, c in later.items() if c > 1 or i in earlier], [])

    async def test_isolated_leader_commits_nothing_and_stops_firing(self) -> None:
        """
        A leader cut off from the others commits no write (503), loses its
        lease and stops firing; the majority elects a leader and fires its
        jobs without a slot missed or fired twice by both sides.
        """
        await self.start_cluster()
        await self.create_jobs(self.leader)
        await self.delivered_through(self.now() + 2)
        old = self.leader
        isolated_at = self.now()
        self.cluster.isolate(old)
        code, body = await self.call(
            "POST", old, "/projects", json={"name": "minority", "description": ""}
        )
        self.assertEqual(code, 503, body)
        response = await self.http.get(self.url(old, "/projects"), headers=self.headers, timeout=10)
        self.assertEqual(response.code, 503)
        self.assertTrue(response.headers.getRawHeaders("retry-after"))
        code, body = await self.call("GET", old, "/projects?consistency=stale")
        self.assertEqual(code, 200, body)
        others = [n for n in self.cluster.ids if n != old]
        new_leader = await self.cluster.wait_leader(30, among=others)
        health = await self.wait_health(
            old, lambda h: not h.get("lease_valid"), "the isolated node to lose its lease"
        )
        self.assertNotEqual(health["role"], "leader")
        until = self.now() + 3
        await self.delivered_through(until)
        self.cluster.heal()
        await self.cluster.wait_leader(30)
        code, body = await self.call("GET", new_leader, "/projects?consistency=linearizable")
        self.assertNotIn("minority", [p["name"] for p in body["data"]["items"]])
        missed, ids = self.check_slots(until)
        self.assertEqual(missed, [])
        # A slot both sides fired would be a duplicate of a slot after the
        # isolation; those before it may repeat (sent, not yet reported).
        twice_after = [
            a.item["scheduled_at"]
            for a in self.receiver.arrivals
            if ids[a.item["execution_id"]] > 1
            and parse_instant(a.item["scheduled_at"]).timestamp() > isolated_at + 1
        ]
        self.assertEqual(twice_after, [])

    async def test_whole_cluster_restart_catches_up(self) -> None:
        """
        Every node SIGKILLed at once and started again: the slots of the
        downtime arrive late with their own ids, none is missed.
        """
        await self.start_cluster()
        await self.create_jobs(self.leader)
        await self.delivered_through(self.now() + 2)
        for node_id in self.cluster.ids:
            await self.cluster.kill(node_id)
        down_at = self.now()
        await wait_for(reactor, lambda: self.now() > down_at + 3, timeout=10, what="downtime")
        await self.cluster.start()
        await self.cluster.wait_leader(30)
        until = self.now() + 3
        await self.delivered_through(until)
        self.assert_every_slot(until, allowed_duplicates=JOBS)
        caught_up = [
            a
            for a in self.receiver.arrivals
            if down_at < parse_instant(a.item["scheduled_at"]).timestamp() < down_at + 3
        ]
        self.assertGreaterEqual(len(caught_up), JOBS * 2)

    async def test_a_lagging_node_catches_up_through_a_snapshot(self) -> None:
        """
        A node down while the others compact their log past its position is
        sent a snapshot, and then holds every write, jobs firing throughout.
        """
        await self.start_cluster(extra_config="RaftSnapshotThreshold: 40\n")
        await self.create_jobs(self.leader)
        follower = next(n for n in self.cluster.ids if n != self.leader)
        await self.cluster.kill(follower)
        for n in range(100):
            code, body = await self.call(
                "POST", self.leader, "/projects", json={"name": f"p{n}", "description": ""}
            )
            self.assertEqual(code, 201, body)
        await self.cluster.restart(follower)
        leader_health = await self.cluster.health(self.leader)
        target = leader_health["commit_index"]
        await self.wait_health(
            follower, lambda h: h["applied_index"] >= target, "the follower to catch up"
        )
        log_path = os.path.join(
            self.cluster.node(follower).workdir, f"node-{self.cluster.node(follower).starts}.log"
        )
        with open(log_path) as f:
            self.assertIn("installed a snapshot", f.read())
        code, body = await self.call("GET", follower, "/projects?limit=1000&consistency=stale")
        self.assertEqual(body["data"]["total"], 101)
        until = self.now() + 2
        await self.delivered_through(until)
        self.assert_every_slot(until, allowed_duplicates=JOBS)


class MembershipTests(ClusterTestCase):
    async def test_a_fourth_node_joins_and_a_node_is_removed(self) -> None:
        """
        A new node added with POST /cluster/members joins, is promoted to
        voter and given a share of the jobs; a removed node's jobs move to
        the others; no slot is missed on the way.
        """
        cluster = await self.start_cluster()
        await self.create_jobs(self.leader, count=8)
        await self.delivered_through(self.now() + 2)
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        http_port, raft_port = free_port(), free_port()
        replicas = [
            {
                "Address": cluster.addresses[n].address,
                "RaftAddress": cluster.addresses[n].raft_address,
                "NodeId": n,
            }
            for n in cluster.ids
        ]
        me = {"Address": f"http://127.0.0.1:{http_port}", "RaftAddress": f"127.0.0.1:{raft_port}"}
        config = {
            "NodeId": 4,
            "Port": http_port,
            "RaftAddress": me["RaftAddress"],
            "Bootstrap": False,
            "DataDir": "data",
            "Replicas": [*replicas, {**me, "NodeId": 4}],
        }
        config_path = os.path.join(workdir, "config.yml")
        with open(config_path, "w") as f:
            yaml.safe_dump(config, f)
        await init_peer_credentials(workdir, config_path)
        fourth = NodeProcess(reactor, workdir, config_path, http_port)
        self.addCleanup(fourth.kill)
        await fourth.start()
        code, body = await self.call(
            "POST",
            self.leader,
            "/cluster/members",
            headers={},
            auth=ADMIN,
            json={"node_id": 4, "address": me["Address"], "raft_address": me["RaftAddress"]},
        )
        self.assertEqual(code, 201, body)

        async def members() -> dict[int, dict]:
            code, body = await self.call("GET", self.leader, "/cluster")
            return {m["node_id"]: m for m in body["data"]["members"]}

        async def fourth_votes_and_owns() -> bool:
            view = await members()
            return 4 in view and view[4]["voter"] and view[4]["owned_jobs"] > 0

        await wait_for(reactor, fourth_votes_and_owns, timeout=30, what="node 4 to join")
        removed = next(n for n in cluster.ids if n != self.leader)
        code, body = await self.call(
            "DELETE", self.leader, f"/cluster/members/{removed}", headers={}, auth=ADMIN
        )
        self.assertEqual(code, 200, body)

        async def removed_and_emptied() -> bool:
            view = await members()
            return removed not in view and sum(m["owned_jobs"] for m in view.values()) == 8

        await wait_for(reactor, removed_and_emptied, timeout=30, what="node removal")
        await cluster.kill(removed)
        until = self.now() + 3
        await self.delivered_through(until)
        self.assert_every_slot(until, allowed_duplicates=8)

    async def test_a_node_lost_for_good_keeps_its_history(self) -> None:
        """
        A node's execution records outlive it: SIGKILLed, its data directory
        deleted and removed from the cluster, what it recorded more than
        the copy interval before is still served by every node, with its id.
        """
        cluster = await self.start_cluster()
        await self.create_jobs(self.leader, count=6)
        lost = next(n for n in cluster.ids if n != self.leader)

        async def records_of(node_id: int, asked: int) -> dict[str, dict]:
            code, body = await self.call("GET", asked, "/executions?limit=1000")
            self.assertEqual(code, 200, body)
            return {r["execution_id"]: r for r in body["data"]["items"] if r["node_id"] == node_id}

        # Records made after the copies' first checkpoint (sent as batches),
        # and two copy intervals older than the loss.
        await self.delivered_through(self.now() + 2 * SHIP_INTERVAL_S, timeout=60)
        cut = self.now() - 1
        await self.delivered_through(cut + 2 * SHIP_INTERVAL_S + 1, timeout=60)
        expected = {
            eid
            for eid, r in (await records_of(lost, self.leader)).items()
            if cut - SHIP_INTERVAL_S < parse_instant(r["scheduled_at"]).timestamp() <= cut
            and r["state"] != "running"
        }
        self.assertGreaterEqual(len(expected), 4)
        await cluster.kill(lost)
        shutil.rmtree(os.path.join(cluster.node(lost).workdir, "data"))
        code, body = await self.call(
            "DELETE", self.leader, f"/cluster/members/{lost}", headers={}, auth=ADMIN
        )
        self.assertEqual(code, 200, body)
        asked = next(n for n in cluster.ids if n != lost)

        async def adopted() -> bool:
            return expected <= set(await records_of(lost, asked))

        await wait_for(
            reactor, adopted, timeout=60, what=f"node {lost}'s records adopted by its keeper"
        )


class FormationTests(ClusterTestCase):
    async def test_only_the_bootstrap_node_knows_the_members_at_first(self) -> None:
        """
        With Bootstrap on node 1 only, nodes 2 and 3 start knowing no voter,
        learn the members from node 1's log, and all three vote and fire.
        """
        self.http = http_client(reactor)
        self.receiver = CallbackReceiver(reactor)
        self.receiver_port = await self.receiver.listen(reactor)
        self.addCleanup(self.receiver.stop)
        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), 3, bootstrap="first")
        self.cluster = cluster
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        self.leader = await cluster.wait_leader(30)
        self.headers = await cluster.make_headers()
        for node_id in cluster.ids:
            code, body = await self.call("GET", node_id, "/cluster?consistency=stale")
            self.assertEqual(code, 200, body)
            self.assertEqual(
                sorted(m["node_id"] for m in body["data"]["members"] if m["voter"]), [1, 2, 3]
            )
        await self.create_jobs(self.leader)
        until = self.now() + 3
        await self.delivered_through(until)
        self.assert_every_slot(until)

    async def test_a_cluster_of_one_fires_its_jobs(self) -> None:
        """Replicas listing only the node itself is a one-voter Raft cluster that fires."""
        await self.start_cluster(size=1)
        await self.create_jobs(1)
        until = self.now() + 3
        await self.delivered_through(until)
        self.assert_every_slot(until)
