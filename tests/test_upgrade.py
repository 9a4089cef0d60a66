"""
Upgrading a cluster from the release before progress marks (README,
"Upgrading a cluster from a release before progress marks"), over data
directories that release really wrote: tests/fixtures/pre-progress-cluster.tar.gz,
made by tests/fixtures/make_pre_progress_cluster.py with commit 5921c62 (see
there for what it holds and how to make it again).

The three nodes are started on this code with fresh ports and must come up,
elect a leader, keep every job, answer the history the old release committed
(and the records it had not committed yet) from every node without
duplicates, fire the jobs again with every slot of the catch-up window,
commit progress marks, and apply the commit_executions entries the old
release logged to the node that had stopped before they were made.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tarfile
from contextlib import closing
from datetime import timedelta
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.trial.unittest import TestCase

from harness.cluster import Cluster, NodeAddresses
from harness.process import NodeProcess, free_port, http_client
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from scheduler0.timeutil import parse_instant

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "pre-progress-cluster.tar.gz")
# Slots this close to the catch-up window's start (60 s before the first
# late delivery) are not checked: the window is judged when a slot fires.
WINDOW_MARGIN_S = 2.0


def read_only(path: str) -> closing[sqlite3.Connection]:
    """A read-only connection to a running node's SQLite file, closed after the block."""
    return closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True))


def rows(path: str, query: str, args: tuple = ()) -> list[tuple]:
    with read_only(path) as db:
        return db.execute(query, args).fetchall()


class UpgradeFromPreProgressReleaseTests(TestCase):
    timeout = 120

    def unpack(self) -> tuple[str, dict]:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        with tarfile.open(FIXTURE) as tar:
            # The "data" filter (Python 3.11.4 on) refuses links and paths out of base.
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(base, **safe)  # type: ignore[arg-type]
        with open(os.path.join(base, "manifest.json"), encoding="utf-8") as f:
            return base, json.load(f)

    def cluster_on(self, base: str) -> Cluster:
        """
        The fixture's three nodes, each config.yml rewritten with fresh
        ports (every other key as the old release's harness wrote it).
        """
        cluster = Cluster(reactor, base, 3, direct=True)
        fresh = {}
        for node_id in cluster.ids:
            fresh[node_id] = NodeAddresses(node_id, free_port(), free_port())
        for node_id in cluster.ids:
            path = cluster.config_path(node_id)
            with open(path, encoding="utf-8") as f:
                config = yaml.safe_load(f)
            self.assertEqual(config["DataDir"], "data")  # relative to config.yml
            self.assertEqual(config["NodeId"], node_id)
            own = fresh[node_id]
            config["Port"] = own.http_port
            config["RaftAddress"] = own.raft_address
            for replica in config["Replicas"]:
                other = fresh[replica["NodeId"]]
                replica["Address"] = other.address
                replica["RaftAddress"] = other.raft_address
            with open(path, "w", encoding="utf-8") as f:
                f.write(yaml.safe_dump(config, sort_keys=False))
            cluster.addresses[node_id] = own
            cluster.nodes.append(
                NodeProcess(reactor, cluster.workdir(node_id), path, own.http_port)
            )
        return cluster

    def data(self, cluster: Cluster, node_id: int, name: str) -> str:
        return os.path.join(cluster.workdir(node_id), "data", name)

    async def get(self, cluster: Cluster, node_id: int, path: str) -> Any:
        response = await self.http.get(
            cluster.addresses[node_id].address + path, headers=self.headers, timeout=10
        )
        body = json.loads(await response.content())
        self.assertEqual(response.code, 200, (node_id, path, body))
        return body["data"]

    async def test_old_data_directories_open_and_keep_their_history(self) -> None:
        base, manifest = self.unpack()
        self.http = http_client(reactor)
        # The client credential the old release made: it must still work.
        self.headers = manifest["credential"]
        project_uuid = manifest["project"]["uuid"]
        jobs = {job["uuid"]: job for job in manifest["jobs"]}
        ok_jobs = [job for job in manifest["jobs"] if job["callback_url"].endswith("/ok")]
        fail_jobs = [job for job in manifest["jobs"] if job["callback_url"].endswith("/fail")]
        self.assertEqual((len(ok_jobs), len(fail_jobs)), (6, 1))

        # The jobs call back to the port the fixture's receiver had.
        receiver = CallbackReceiver(reactor, status_for=lambda p: 500 if p == "/fail" else 200)
        try:
            await receiver.listen(reactor, manifest["receiver_port"])
        except CannotListenError as e:
            self.fail(f"the fixture's callback port is taken on this machine: {e}")
        self.addCleanup(receiver.stop)

        # The last slot of each job the old release recorded, on any node.
        old_last: dict[str, float] = {}
        for node_id in (1, 2, 3):
            for name in ("state.db", "executions.db"):
                path = os.path.join(base, f"node-{node_id}", "data", name)
                query = "SELECT job_uuid, MAX(scheduled_at) FROM executions GROUP BY job_uuid"
                for uuid, last in rows(path, query):
                    at = parse_instant(last).timestamp()
                    old_last[uuid] = max(old_last.get(uuid, 0.0), at)
        self.assertEqual(set(old_last), set(jobs))

        cluster = self.cluster_on(base)
        self.addCleanup(cluster.close)

        # (a) All three come up on this release and agree on a leader.
        started = reactor.seconds()
        await cluster.start(timeout=30)
        await cluster.wait_leader(30)

        # (b) Every job is still there, with its uuid, on every node.
        for node_id in cluster.ids:
            page = await self.get(cluster, node_id, f"/jobs?project_uuid={project_uuid}&limit=100")
            self.assertEqual(page["total"], len(jobs), (node_id, page))
            listed = {job["uuid"]: job for job in page["items"]}
            self.assertEqual(set(listed), set(jobs), node_id)
            for uuid, job in listed.items():
                for key in ("name", "spec", "callback_url", "project_uuid", "anchor_at"):
                    self.assertEqual(job[key], jobs[uuid][key], (node_id, uuid, key))

        # (c) The failed executions the old release committed (in every
        # node's state.db), those it had not committed yet (a node's
        # executions.db), and those its API answered, are answered by every
        # node, each once.
        expected: set[str] = set()
        for files in manifest["nodes"].values():
            expected |= set(files["committed_failed"]) | set(files["executions_db_failed"])
        served = {
            r["execution_id"]: r for items in manifest["failed_served"].values() for r in items
        }
        expected |= set(served)
        self.assertGreaterEqual(len(expected), 5)
        for node_id in cluster.ids:

            async def complete_page(node_id: int = node_id) -> dict | None:
                page = await self.get(cluster, node_id, "/executions?state=failed&limit=1000")
                return None if page.get("missing_nodes") else page

            page = await wait_for(
                reactor,
                complete_page,
                timeout=15,
                what=f"node {node_id}'s failed executions with every member answering",
            )
            ids = [item["execution_id"] for item in page["items"]]
            self.assertEqual(len(ids), len(set(ids)), f"node {node_id} lists a record twice")
            self.assertEqual(page["total"], len(ids), f"node {node_id} counts a record twice")
            self.assertEqual({item["state"] for item in page["items"]}, {"failed"}, node_id)
            self.assertEqual(sorted(expected - set(ids)), [], f"node {node_id} lost history")
            answered = {item["execution_id"]: item for item in page["items"]}
            for execution_id, old in served.items():
                for key in ("job_uuid", "project_uuid", "scheduled_at", "state"):
                    self.assertEqual(answered[execution_id][key], old[key], (node_id, key))

        # (d) The jobs fire again: every job reaches the receiver, and every
        # slot of an ok job from the start of its catch-up window on arrives.
        until = reactor.seconds() + 2

        def latest_slots() -> dict[str, float]:
            latest: dict[str, float] = {}
            for arrival in receiver.arrivals:
                slot = parse_instant(arrival.item["scheduled_at"]).timestamp()
                uuid = arrival.item["job_uuid"]
                latest[uuid] = max(latest.get(uuid, 0.0), slot)
            return latest

        await wait_for(
            reactor,
            lambda: all(latest_slots().get(uuid, 0) >= until for uuid in jobs),
            timeout=30,
            what="every job of the fixture to fire on this release",
        )
        firsts: dict[str, float] = {}
        for job in ok_jobs:
            arrivals = [a for a in receiver.arrivals if a.item["job_uuid"] == job["uuid"]]
            first = firsts[job["uuid"]] = min(a.at for a in arrivals)
            self.assertGreaterEqual(first, started)
            seen = {parse_instant(a.item["scheduled_at"]).timestamp() for a in arrivals}
            slot = parse_instant(job["anchor_at"])
            # Slots the old release had fired are not owed again.
            window_start = max(first - 60 + WINDOW_MARGIN_S, old_last[job["uuid"]] + 1)
            step = timedelta(seconds=1)
            slot += step * max(0, int(window_start - slot.timestamp()))
            missed = []
            while slot.timestamp() <= until:
                if slot.timestamp() >= window_start and slot.timestamp() not in seen:
                    missed.append(slot.isoformat())
                slot += step
            self.assertEqual(missed, [], f"job {job['name']}: slots of the catch-up window")
            # The window was caught up late, not skipped.
            late = [s for s in seen if window_start <= s < first - 5]
            self.assertGreaterEqual(
                len(late), min(20, first - 5 - window_start), f"job {job['name']}: no catch-up"
            )

        # Slots owed from before the window (the fixture is older than it)
        # are recorded as skipped, as after any restart.
        job = ok_jobs[0]
        if firsts[job["uuid"]] - 60 > old_last[job["uuid"]] + 1:

            async def skipped() -> list:
                page = await self.get(
                    cluster, 1, f"/executions?job_uuid={job['uuid']}&state=skipped&limit=1000"
                )
                return [
                    item
                    for item in page["items"]
                    if item["skip_reason"] == "outside_catch_up_window"
                    and parse_instant(item["scheduled_at"]).timestamp() > old_last[job["uuid"]]
                ]

            await wait_for(
                reactor, skipped, timeout=15, what="slots before the window recorded as skipped"
            )

        # (e) Progress marks are committed: every node applies record_progress.
        def marks_everywhere() -> bool:
            return all(
                rows(self.data(cluster, n, "state.db"), "SELECT COUNT(*) FROM node_progress")[0][0]
                > 0
                for n in cluster.ids
            )

        await wait_for(
            reactor, marks_everywhere, timeout=15, what="node_progress rows on every node"
        )
        # Each node's run loaded its jobs from the state it had on disk, so
        # its marks say so: a run's loaded_at is never before that index (a
        # mark claiming an earlier run would speak for jobs moved off the
        # node before this run, which it never loaded).
        for n in cluster.ids:
            loaded_at = rows(
                self.data(cluster, n, "state.db"),
                "SELECT loaded_at FROM node_progress WHERE node_id = ?",
                (n,),
            )
            if loaded_at:
                on_disk = manifest["nodes"][str(n)]["state_applied_index"]
                self.assertGreaterEqual(loaded_at[0][0], on_disk, f"node {n}")

        # (f) The old release's client credential had a pbkdf2 hash; its use
        # above replaced it by the keyed hash through Raft, on every node.
        def keyed_everywhere() -> bool:
            query = "SELECT api_secret_hash FROM credentials WHERE api_key = ?"
            return all(
                rows(self.data(cluster, n, "state.db"), query, (self.headers["x-api-key"],))[0][
                    0
                ].startswith("hmac-sha256$")
                for n in cluster.ids
            )

        await wait_for(
            reactor, keyed_everywhere, timeout=15, what="the keyed secret hash on every node"
        )

        # The commit_executions entries the old release logged after its
        # first node stopped reach that node through Raft and apply there.
        stopped = manifest["stopped_first"]
        self.assertGreaterEqual(manifest["logged_after_stopped_first"]["commit_executions"], 1)
        ahead = set(manifest["nodes"][str(manifest["leader"])]["committed_failed"])
        behind = set(manifest["nodes"][str(stopped)]["committed_failed"])
        self.assertTrue(ahead - behind)

        def applied_on_stopped() -> bool:
            have = {
                r[0]
                for r in rows(
                    self.data(cluster, stopped, "state.db"),
                    "SELECT execution_id FROM executions WHERE state = 'failed'",
                )
            }
            return ahead <= have

        await wait_for(
            reactor,
            applied_on_stopped,
            timeout=15,
            what=f"the old commit_executions entries applied on node {stopped}",
        )

        # Migrated in place: the new job columns, no outbox index.
        for node_id in cluster.ids:
            columns = {
                r[1]
                for r in rows(self.data(cluster, node_id, "state.db"), "PRAGMA table_info(jobs)")
            }
            self.assertLessEqual({"owner_since", "prev_owner", "prev_owner_since"}, columns)
            indexes = {
                r[0]
                for r in rows(
                    self.data(cluster, node_id, "executions.db"),
                    "SELECT name FROM sqlite_master WHERE type = 'index'",
                )
            }
            self.assertNotIn("executions_by_seq", indexes, node_id)
