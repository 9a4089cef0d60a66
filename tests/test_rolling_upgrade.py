"""
A rolling upgrade of a real three-node cluster from the previous release,
commit L{OLD_RELEASE} (installed from this repository's git history into a
virtualenv of its own by L{harness.release}; the first run installs it, in
some 10-40 s, later runs reuse it), to this code, one node at a time while
C{@every 1s} jobs fire (README, "Upgrading").

Each node in turn (a follower, the leader, the other follower) is stopped
with SIGTERM and started on this release with the same data directory and
config; the test waits until it is ready again (GET /healthcheck), not
for the jobs to be rebalanced: the next node may be stopped just before
the instant at which it was to hand jobs to the one back, and those jobs
move on again within the gap check. Snapshots are taken every few
entries, so a node that comes back is sent one by a leader of the
previous release; before the last node, a
leader of this release is made to lead it, and it is left behind (stopped
while the leader commits writes, then started again on the previous
release) so that it is sent a snapshot of this release's state, which it
installs.
While an old node remains a member the cluster goes on writing entry
version 1 (GET /cluster says so, the leader of this release refuses a
version-2 command with 409 C{entry_version_too_low}, and a write through
the old follower is forwarded and answered); once every node runs this
release the leader raises it to 2 on its own and the same command is
accepted and applied on every node. Every slot of every job from before the first stop to after the
last start is delivered (late is allowed: a stopped node's jobs are caught
up by their new owner). A slot delivered twice keeps its execution_id (the
at-least-once contract of README's Callbacks and Running a cluster); the
test reports how many.

Bounded: about a minute on an idle machine, C{timeout} at most.
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import TimeoutError
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from harness.cluster import Cluster
from harness.nemesis import slots_between
from harness.process import PEER_PASSWORD, PEER_USERNAME, http_client
from harness.receiver import CallbackReceiver
from harness.release import ReleaseUnavailable, release_python
from harness.waiting import wait_for
from scheduler0.store.commands import Command, Op
from scheduler0.timeutil import parse_instant

#: The release before entry versions (main before issue 18).
OLD_RELEASE = "7731dfb"
JOBS = 5
#: Slots this long before the first stop and after the last start are checked too.
MARGIN_S = 3.0
#: How long the slots may take to be complete after the last one checked
#: arrived: a handover's gap check (lease + two fan-in rounds of every
#: member + 1 s: about 10 s with the default config) and some slack.
GAP_CHECK_WAIT_S = 30.0
#: Writes committed while a follower of the previous release is stopped: more
#: than a leader keeps in its log past a snapshot (RaftSnapshotThreshold 3).
SNAPSHOT_WRITES = 12


def _slot(arrival: Any) -> float:
    return parse_instant(arrival.item["scheduled_at"]).timestamp()


class RollingUpgradeTests(TestCase):
    timeout = 240

    async def setUp(self) -> None:
        try:
            self.old_python = await deferToThread(release_python, OLD_RELEASE)
        except ReleaseUnavailable as e:
            self.fail(f"the previous release {OLD_RELEASE} could not be installed: {e}")
        self.http = http_client(reactor)
        self.receiver = CallbackReceiver(reactor)
        self.receiver_port = await self.receiver.listen(reactor)
        self.addCleanup(self.receiver.stop)
        # Snapshots every few entries: a restarted node is sent one, by a
        # leader of either release.
        self.cluster = Cluster(
            reactor, os.path.abspath(self.mktemp()), 3, extra_config="RaftSnapshotThreshold: 3\n"
        )
        self.addCleanup(self.cluster.close)
        await self.cluster.prepare()
        for node in self.cluster.nodes:
            node.python = self.old_python

    def url(self, node_id: int, path: str) -> str:
        return f"http://127.0.0.1:{self.cluster.addresses[node_id].http_port}{path}"

    async def call(self, method: str, node_id: int, path: str, **kwargs: Any) -> tuple[int, Any]:
        kwargs.setdefault("headers", self.headers)
        response = await self.http.request(method, self.url(node_id, path), timeout=10, **kwargs)
        return response.code, await response.json()

    async def create_jobs(self, node_id: int) -> None:
        code, body = await self.call(
            "POST", node_id, "/projects", json={"name": "upgrade", "description": "before"}
        )
        self.assertEqual(code, 201, body)
        self.project = body["data"]
        jobs = [
            {
                "project_uuid": self.project["uuid"],
                "name": f"job {n}",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{self.receiver_port}/callback",
            }
            for n in range(JOBS)
        ]
        code, body = await self.call("POST", node_id, "/jobs", json=jobs)
        self.assertEqual(code, 201, body)
        self.jobs = body["data"]

    async def delivered_through(self, instant: float, timeout: float = 30) -> None:
        """Wait until every job's slots up to C{instant} arrived."""

        def done() -> bool:
            latest: dict[str, float] = {}
            for arrival in self.receiver.arrivals:
                job = arrival.item["job_uuid"]
                latest[job] = max(latest.get(job, 0.0), _slot(arrival))
            return all(latest.get(job["uuid"], 0.0) >= instant for job in self.jobs)

        await wait_for(reactor, done, timeout=timeout, what=f"every slot up to {instant}")

    async def ready(self, node_id: int, timeout: float = 30) -> dict:
        """Wait until node C{node_id} answers ready (a leader, a lease, caught up)."""

        async def probe() -> dict | None:
            answer = await self.cluster.health_answer(node_id, timeout=1.0)
            return answer[1] if answer is not None and answer[0] == 200 else None

        return await wait_for(reactor, probe, timeout=timeout, what=f"node {node_id} ready")

    async def cluster_view(self, node_id: int) -> dict:
        code, body = await self.call("GET", node_id, "/cluster")
        self.assertEqual(code, 200, body)
        return body["data"]

    async def propose_directly(self, node_id: int, command: Command) -> tuple[int, dict]:
        """C{command} given to node C{node_id}'s peer route, as a follower forwards one."""
        token = base64.b64encode(f"{PEER_USERNAME}:{PEER_PASSWORD}".encode()).decode()
        response = await self.http.post(
            self.url(node_id, "/peer/propose"),
            data=command.to_bytes(),
            headers={"authorization": f"Basic {token}", "content-type": "application/json"},
            timeout=10,
        )
        return response.code, await response.json()

    def version_2_command(self, description: str) -> Command:
        """A small change, written as entry version 2 (what a new feature's command is)."""
        return Command(
            Op.UPDATE_PROJECT,
            {
                "uuid": self.project["uuid"],
                "changes": {"description": description},
                "updated_at": "2026-12-07T00:00:00.000Z",
            },
            version=2,
        )

    async def lead_with_this_release(self, old: int, new: list[int]) -> int:
        """
        Make one of the nodes C{new} (this release) the leader while node
        C{old} (the previous release) stays a member: if C{old} leads, it is
        paused (SIGSTOP) until one of them takes over, then resumed.
        """
        leader = await self.cluster.wait_leader(30)
        if leader == old:
            self.cluster.pause(old)
            try:
                leader = await self.cluster.wait_leader(30, among=new)
            finally:
                self.cluster.resume(old)
        await self.ready(old)
        return await self.cluster.wait_leader(30)

    async def snapshot_to_old_follower(self, old: int, leader: int) -> None:
        """
        Leave node C{old} (the previous release) behind, stopped, while the
        leader (this release) commits writes, then start it again (on the
        previous release still): it is sent a snapshot of this release's
        state, which it must install and go on from.
        """
        await self.cluster.stop(old)
        await self.write_behind(old)
        await self.cluster.start(ids=[old])
        await self.ready(old)
        await self.installed_a_snapshot(old)

    async def write_behind(self, stopped: int) -> None:
        """
        Commit more writes than a leader keeps in its log past a snapshot
        while node C{stopped} is down: it is sent a snapshot when it is back.
        """
        running = [n for n in self.cluster.ids if n != stopped]
        leader = await self.cluster.wait_leader(30, among=running)
        for n in range(SNAPSHOT_WRITES):
            code, body = await self.call(
                "PATCH",
                leader,
                f"/projects/{self.project['uuid']}",
                json={"description": f"write {n} while node {stopped} is down"},
            )
            self.assertEqual(code, 200, body)
        self.description = body["data"]["description"]

    async def installed_a_snapshot(self, node_id: int) -> None:
        """Node C{node_id}'s current run installed a snapshot and reads the writes it holds."""
        node = self.cluster.node(node_id)
        log = os.path.join(node.workdir, f"node-{node.starts}.log")

        def installed() -> bool:
            with open(log, errors="replace") as f:
                return "installed a snapshot" in f.read()

        await wait_for(reactor, installed, timeout=30, what=f"node {node_id} to install a snapshot")
        code, body = await self.call(
            "GET", node_id, f"/projects/{self.project['uuid']}?consistency=stale"
        )
        self.assertEqual((code, body["data"]["description"]), (200, self.description))

    async def test_rolling_upgrade_misses_no_slot_and_raises_the_entry_version(self) -> None:
        """
        A three-node cluster of the previous release upgraded one node at a
        time (a follower, the leader, the other follower, with a leader of
        this release over a follower of the previous one in between) fires
        every slot of its @every 1s jobs, keeps writing entry version 1
        while an old node is a member, and writes version 2 once all run
        this release.
        """
        cluster = self.cluster
        await cluster.start()
        leader = await cluster.wait_leader(30)
        self.headers = await cluster.make_headers()
        await self.create_jobs(leader)
        await self.delivered_through(reactor.seconds() + 2)
        first_stop = reactor.seconds()
        followers = [n for n in cluster.ids if n != leader]
        order = [followers[0], leader, followers[1]]
        for step, node_id in enumerate(order):
            await cluster.stop(node_id)
            await self.write_behind(node_id)
            cluster.node(node_id).python = None
            await cluster.start(ids=[node_id])
            health = await self.ready(node_id)
            self.assertEqual(health["reads_entry_version"], 2)
            # Sent by a leader of the previous release (the first time) or of
            # this one: this release installs either.
            await self.installed_a_snapshot(node_id)
            if step == len(order) - 1:
                break
            # An old node is still a member: the cluster writes version 1.
            view = await self.cluster_view(node_id)
            self.assertEqual(view["entry_version"], 1, view)
            reads = {m["node_id"]: m["reads_entry_version"] for m in view["members"]}
            self.assertEqual({reads[n] for n in order[: step + 1]}, {2}, view)
            self.assertEqual({reads[n] for n in order[step + 1 :]}, {1}, view)
            if step == 1:
                # Before the last one: a leader of this release over an old
                # follower refuses a version-2 command, and takes what the
                # old one forwards.
                old = order[2]
                new_leader = await self.lead_with_this_release(old, order[:2])
                await self.snapshot_to_old_follower(old, new_leader)
                new_leader = await self.cluster.wait_leader(30)
                code, body = await self.propose_directly(
                    new_leader, self.version_2_command("refused")
                )
                self.assertEqual(
                    (code, body["error"]["code"]), (409, "entry_version_too_low"), body
                )
                code, body = await self.call(
                    "PATCH",
                    old,
                    f"/projects/{self.project['uuid']}",
                    json={"description": "through an old follower"},
                )
                self.assertEqual(code, 200, body)
        last_start = reactor.seconds()

        async def raised() -> bool:
            views = [await self.cluster_view(n) for n in cluster.ids]
            return all(view.get("entry_version") == 2 for view in views)

        await wait_for(reactor, raised, timeout=20, what="entry version 2 on every node")
        leader = await cluster.wait_leader(30)
        code, body = await self.propose_directly(leader, self.version_2_command("accepted"))
        self.assertEqual(code, 200, body)
        self.assertTrue(body["data"]["result"]["ok"], body)

        async def applied_everywhere() -> bool:
            for node_id in cluster.ids:
                code, body = await self.call(
                    "GET", node_id, f"/projects/{self.project['uuid']}?consistency=stale"
                )
                if code != 200 or body["data"]["description"] != "accepted":
                    return False
            return True

        await wait_for(reactor, applied_everywhere, timeout=10, what="the v2 entry on every node")

        until = last_start + MARGIN_S
        await self.delivered_through(until, timeout=60)
        # A slot an owner stopped before it could send (its job was being
        # handed over) is sent by the new owner after its gap check, some
        # 10 s after the handover instant (README, Running a cluster).
        after = first_stop - MARGIN_S
        try:
            await wait_for(
                reactor,
                lambda: not self.check_slots(after, until)[0],
                timeout=GAP_CHECK_WAIT_S,
                what="every slot",
            )
        except TimeoutError:
            pass
        missed, duplicates = self.check_slots(after, until)
        self.assertEqual(missed, [], cluster.logs(20))
        # At least once: a slot sent again keeps its execution_id (counted per id).
        print(
            f"\nrolling upgrade: {len(order)} nodes in {last_start - first_stop:.1f} s,"
            f" 0 slots missed, {duplicates} delivered twice (same execution_id)"
        )

    def check_slots(self, after: float, until: float) -> tuple[list, int]:
        """Every job's slots in (after, until] not delivered, and how many came twice."""
        seen: dict[str, set[float]] = {}
        ids: Counter = Counter()
        for arrival in self.receiver.arrivals:
            seen.setdefault(arrival.item["job_uuid"], set()).add(_slot(arrival))
            ids[(arrival.item["execution_id"], arrival.item.get("attempt", 1))] += 1
        missed = []
        for job in self.jobs:
            anchor = parse_instant(job["anchor_at"]).timestamp()
            got = seen.get(job["uuid"], set())
            missed += [
                (job["uuid"], slot)
                for slot in slots_between(anchor, after, until)
                if not any(abs(slot - s) < 0.0015 for s in got)
            ]
        return missed, sum(1 for count in ids.values() if count > 1)
