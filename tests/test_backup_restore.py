"""
Backup and restore end to end, with real parts: a three-node cluster of real
C{twistd} processes fires C{@every 1s} jobs (one with a one-second catch-up
window), a paused job and a cron job at a real HTTP receiver; the real CLI
backs it up from a follower; every node is stopped and its data directory
deleted; the real CLI restores the file into each data directory of a new
three-node cluster (new ports, new Raft logs); the new cluster serves the
same jobs to the same API key and fires them again, each slot with the
execution id derived from the job and the slot, never a slot at or before
the job's progress mark in the backup, every later one inside the catch-up
window, and the one-second-window job's older ones recorded as skipped; a
fourth node joining with an empty data directory is sent the restored state.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from harness.cluster import Cluster
from harness.process import (
    PEER_PASSWORD,
    PEER_USERNAME,
    NodeProcess,
    free_port,
    http_client,
    init_peer_credentials,
    run_cli,
)
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from scheduler0.scheduler.spec import execution_id
from scheduler0.store.backup import read_header, unpack_payload
from scheduler0.timeutil import parse_instant

EVERY = 3  # @every 1s jobs with the default catch-up window


class BackupRestoreEndToEndTests(TestCase):
    timeout = 150

    async def test_a_restored_cluster_fires_the_same_jobs_from_their_progress(self) -> None:
        self.http = http_client(reactor)
        self.receiver = CallbackReceiver(reactor)
        port = await self.receiver.listen(reactor)
        self.addCleanup(self.receiver.stop)
        callback = f"http://127.0.0.1:{port}/callback"
        base = os.path.abspath(self.mktemp())

        old = await self.start_cluster(os.path.join(base, "old"))
        headers = await old.make_headers()
        jobs = await self.create_jobs(old, headers, callback)
        active = [job for job in jobs if not job["paused"]]
        await self.wait_arrivals(active, at_least=5, what="five slots of each active job")

        # The backup, from a follower, through the real CLI; taken again
        # (bounded) until it holds a progress mark for every active job, so
        # the checks against the marks below check every job.
        old_leader = await old.wait_leader(30)
        follower = next(n for n in old.ids if n != old_leader)
        path = os.path.join(base, "cluster.s0")

        async def backup() -> tuple[dict, dict[str, str]] | None:
            out, err, code = await run_cli(
                old.workdir(follower),
                "backup",
                "--output",
                path,
                "--config",
                old.config_path(follower),
            )
            self.assertEqual(code, 0, err)
            self.assertIn(f"1 projects, {len(jobs)} jobs", out)
            header, marks = self.read_backup(path, os.path.join(base, "check"))
            return (header, marks) if all(job["uuid"] in marks for job in active) else None

        header, marks = await wait_for(
            reactor, backup, timeout=20, what="a backup with a progress mark for every job"
        )

        await old.stop_all()
        self.old_count = old_count = len(self.receiver.arrivals)
        for node_id in old.ids:
            shutil.rmtree(os.path.join(old.workdir(node_id), "data"))

        # A new cluster: new ports and configs, the same .scheduler0 (as
        # every test cluster has), each data directory restored from the file.
        new = Cluster(reactor, os.path.join(base, "new"), 3)
        self.addCleanup(new.close)
        await new.prepare()
        for node_id in new.ids:
            out, err, code = await run_cli(
                new.workdir(node_id),
                "restore",
                "--input",
                path,
                "--config",
                new.config_path(node_id),
            )
            self.assertEqual(code, 0, err)
            self.assertIn(f"index {header['index']}", out)
        await new.start()
        started = datetime.fromtimestamp(reactor.seconds(), UTC)
        leader = await new.wait_leader(30)

        # The same jobs, to the same API key.
        code, body = await self.call(new, leader, "GET", "/jobs?limit=100", headers)
        self.assertEqual(code, 200, body)
        fields = ("uuid", "spec", "paused", "callback_url", "catch_up_window_s", "anchor_at")
        self.assertEqual(
            sorted(tuple(job[f] for f in fields) for job in body["data"]["items"]),
            sorted(tuple(job[f] for f in fields) for job in jobs),
        )

        # Firing again: every active job gets slots after the start.
        after = started + timedelta(seconds=2)
        await self.wait_arrivals(active, after=after, what="slots of each job after the restore")
        new_arrivals = self.receiver.arrivals[old_count:]
        paused = {job["uuid"] for job in jobs if job["paused"]}
        for arrival in self.receiver.arrivals:
            item = arrival.item
            self.assertNotIn(item["job_uuid"], paused)
            slot = parse_instant(item["scheduled_at"])
            # Old and new deliveries alike: the id is the job's and the slot's.
            self.assertEqual(item["execution_id"], execution_id(item["job_uuid"], slot))
        for arrival in new_arrivals:
            item = arrival.item
            mark = marks.get(item["job_uuid"])
            # Nothing at or before the job's progress mark is sent again.
            self.assertTrue(mark is None or item["scheduled_at"] > mark, (item, mark))
        for job in active:
            if job["catch_up_window_s"] >= 60:
                # Every slot after the mark (all inside the window) arrived.
                self.assert_no_gap(job, until=after)
        short = next(job for job in active if job["catch_up_window_s"] < 60)
        await self.assert_skipped_outside_window(new, leader, headers, short, marks[short["uuid"]])
        await self.assert_a_joining_node_gets_the_restored_state(new, leader, headers, jobs)

    async def assert_a_joining_node_gets_the_restored_state(
        self, cluster: Cluster, leader: int, headers: dict, jobs: list[dict]
    ) -> None:
        """
        A fourth node started on an empty data directory and added through
        /cluster/members is sent the restored state (the Raft log starts
        with it as a snapshot): its own copy serves the jobs to the old key.
        """
        workdir = os.path.join(os.path.dirname(cluster.workdir(1)), "node-4")
        os.makedirs(workdir)
        http_port, raft_port = free_port(), free_port()
        me = {"Address": f"http://127.0.0.1:{http_port}", "RaftAddress": f"127.0.0.1:{raft_port}"}
        replicas = [
            {"Address": a.address, "RaftAddress": a.raft_address, "NodeId": n}
            for n, a in cluster.addresses.items()
        ]
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
        url = f"http://127.0.0.1:{cluster.addresses[leader].http_port}/cluster/members"
        response = await self.http.post(
            url,
            json={"node_id": 4, "address": me["Address"], "raft_address": me["RaftAddress"]},
            auth=(PEER_USERNAME, PEER_PASSWORD),
            timeout=10,
        )
        self.assertEqual(response.code, 201, await response.text())

        async def served() -> list | None:
            stale = f"{fourth.url}/jobs?limit=100&consistency=stale"
            answer = await self.http.get(stale, headers=headers, timeout=5)
            body = await answer.json()
            items = body["data"]["items"] if answer.code == 200 else []
            return items if len(items) == len(jobs) else None

        items = await wait_for(reactor, served, timeout=30, what="node 4 to hold the jobs")
        self.assertEqual(sorted(j["uuid"] for j in items), sorted(j["uuid"] for j in jobs))

    # -- helpers ------------------------------------------------------------------

    async def start_cluster(self, base: str) -> Cluster:
        cluster = Cluster(reactor, base, 3)
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        await cluster.wait_leader(30)
        return cluster

    async def call(
        self, cluster: Cluster, node_id: int, method: str, path: str, headers: dict, **kw: Any
    ) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{cluster.addresses[node_id].http_port}{path}"
        response = await self.http.request(method, url, headers=headers, timeout=10, **kw)
        return response.code, await response.json()

    async def create_jobs(self, cluster: Cluster, headers: dict, callback: str) -> list[dict]:
        leader = await cluster.wait_leader(30)
        code, body = await self.call(
            cluster, leader, "POST", "/projects", headers, json={"name": "b", "description": "d"}
        )
        self.assertEqual(code, 201, body)
        project = body["data"]["uuid"]
        specs = [{"spec": "@every 1s"} for _ in range(EVERY)]
        specs += [
            {"spec": "@every 1s", "catch_up_window_s": 1},
            {"spec": "@every 1s", "paused": True},
            {"spec": "* * * * * *"},
        ]
        batch = [
            {"project_uuid": project, "name": f"job {n}", "callback_url": callback, **fields}
            for n, fields in enumerate(specs)
        ]
        code, body = await self.call(cluster, leader, "POST", "/jobs", headers, json=batch)
        self.assertEqual(code, 201, body)
        return body["data"]

    def slots_of(self, job_uuid: str, arrivals: list | None = None) -> set[str]:
        return {
            a.item["scheduled_at"]
            for a in (self.receiver.arrivals if arrivals is None else arrivals)
            if a.item["job_uuid"] == job_uuid
        }

    async def wait_arrivals(
        self,
        jobs: list[dict],
        *,
        at_least: int = 1,
        after: datetime | None = None,
        what: str,
    ) -> None:
        def done() -> bool:
            for job in jobs:
                slots = self.slots_of(job["uuid"])
                if after is not None:
                    slots = {s for s in slots if parse_instant(s) >= after}
                if len(slots) < at_least:
                    return False
            return True

        await wait_for(reactor, done, timeout=40, what=what)

    def read_backup(self, path: str, scratch: str) -> tuple[dict, dict[str, str]]:
        """The backup's header and each job's progress mark in it."""
        shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(scratch)
        image = os.path.join(scratch, "state.db")
        with open(path, "rb") as source:
            header = read_header(source, path)
            unpack_payload(source, header, image, path)
        connection = sqlite3.connect(image)
        try:
            marks = dict(connection.execute("SELECT job_uuid, last_slot FROM job_progress"))
        finally:
            connection.close()
        return header, marks

    def assert_no_gap(self, job: dict, until: datetime) -> None:
        """Every slot of C{job} from its first delivered one through C{until} arrived."""
        seen = sorted(parse_instant(s) for s in self.slots_of(job["uuid"]))
        self.assertTrue(seen, job)
        step = timedelta(seconds=1)
        missing = []
        slot = seen[0]
        present = set(seen)
        while slot <= until:
            if slot not in present:
                missing.append(slot.isoformat())
            slot += step
        self.assertEqual(missing, [], job["uuid"])

    async def assert_skipped_outside_window(
        self, cluster: Cluster, node_id: int, headers: dict, job: dict, mark: str
    ) -> None:
        """
        The one-second-window job's slots between its mark and the restore
        are recorded as skipped by the new cluster, not sent by it.
        """
        path = f"/executions?job_uuid={job['uuid']}&state=skipped&limit=1000"

        async def skipped() -> list | None:
            code, body = await self.call(cluster, node_id, "GET", path, headers)
            items = body["data"]["items"] if code == 200 else []
            return items or None

        items = await wait_for(reactor, skipped, timeout=20, what="skipped slots of the job")
        sent = self.slots_of(job["uuid"], self.receiver.arrivals[self.old_count :])
        for item in items:
            self.assertEqual(item["skip_reason"], "outside_catch_up_window")
            self.assertGreater(item["scheduled_at"], mark)
            self.assertNotIn(item["scheduled_at"], sent)
