"""
A cluster under test: N real C{twistd scheduler0} nodes on 127.0.0.1 that
reach each other directly (L{Cluster} with C{direct=True}: no fault proxy
between them, which would add a hop to every Raft and peer-HTTP message),
with the bench project, its jobs created on the leader, and each node
process's CPU and RSS measured the way the single-node meter does it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import attrs

from bench.common import (
    Job,
    JobsClient,
    NodeUnderTest,
    ProcessMeter,
    profile_args,
    sleep,
    within,
)
from harness.cluster import Cluster
from harness.process import http_client

#: The cluster bench's node config: quiet logs (BENCH_LOG_LEVEL=INFO makes
#: the nodes say what the leader moved and when leases lapse), no API rate
#: limit (the benchmark client is one credential making many requests), and
#: any YAML lines in BENCH_EXTRA_CONFIG (an experiment: "Key: value; Key: value").
CLUSTER_CONFIG = (
    f"LogLevel: {os.environ.get('BENCH_LOG_LEVEL', 'WARN')}\nRateLimitPerSecond: 0\n"
    + "".join(
        f"{line.strip()}\n"
        for line in os.environ.get("BENCH_EXTRA_CONFIG", "").split(";")
        if line.strip()
    )
)


@attrs.define(eq=False)
class ClusterMeter:
    """
    CPU and RSS of every node process, read between two marks like
    L{ProcessMeter}; the totals add the CPU of all nodes (percent of one
    core) and take the largest RSS, and C{per_node} has each one's figures.
    A node that ended (killed) keeps what was read before it ended.
    """

    meters: dict[int, ProcessMeter | None] = attrs.field(factory=dict)
    _last: dict[int, dict[str, float]] = attrs.field(factory=dict)

    def attach(self, node_id: int, pid: int) -> None:
        """Measure node C{node_id} at C{pid} from now on (a restarted node has a new pid)."""
        self.meters[node_id] = ProcessMeter(pid)
        self._last.pop(node_id, None)

    def detach(self, node_id: int) -> None:
        """Node C{node_id} is gone: keep its last figures, read it no more."""
        meter = self.meters.get(node_id)
        if meter is not None:
            self._read_one(node_id, meter)
        self.meters[node_id] = None

    def mark(self) -> None:
        self._last.clear()
        for node_id, meter in self.meters.items():
            if meter is not None:
                try:
                    meter.mark()
                except Exception:
                    self.meters[node_id] = None

    def sample_rss(self) -> None:
        for node_id, meter in self.meters.items():
            if meter is not None:
                try:
                    meter.sample_rss()
                except Exception:
                    self.meters[node_id] = None

    def _read_one(self, node_id: int, meter: ProcessMeter) -> None:
        try:
            self._last[node_id] = meter.read()
        except Exception:
            self.meters[node_id] = None

    def read(self) -> dict[str, Any]:
        for node_id, meter in self.meters.items():
            if meter is not None:
                self._read_one(node_id, meter)
        per_node = {str(n): figures for n, figures in sorted(self._last.items())}
        values = list(self._last.values())
        return {
            "cpu_s": round(sum(v["cpu_s"] for v in values), 2),
            "cpu_percent_of_one_core": round(sum(v["cpu_percent_of_one_core"] for v in values), 1),
            "rss_mib": max((v["rss_mib"] for v in values), default=None),
            "peak_rss_mib": max((v["peak_rss_mib"] for v in values), default=None),
            "per_node": per_node,
        }


@attrs.define(eq=False)
class ClusterUnderTest(JobsClient):
    """
    C{size} fresh nodes under C{workdir}: start them, wait for a leader, make
    a client credential and the bench project, create jobs on the leader
    (L{JobsClient.add_jobs}), kill and restart nodes, and stop them all.
    With C{profile} every node runs under cProfile and saves its stats to
    C{<profile>.node<id>} when it stops.
    """

    reactor: Any
    workdir: str
    size: int = 3
    profile: str | None = None
    extra_config: str = CLUSTER_CONFIG
    cluster: Cluster | None = None
    leader_id: int | None = None
    headers: dict[str, str] = attrs.field(factory=dict)
    project_uuid: str = ""
    jobs: list[Job] = attrs.field(factory=list)
    meter: ClusterMeter = attrs.field(factory=ClusterMeter)
    stop_note: str | None = None
    _client: Any = None

    @property
    def api_url(self) -> str:
        """The leader's HTTP address (jobs are created there)."""
        return self.url(self.leader_id)

    def url(self, node_id: int | None) -> str:
        if self.cluster is None or node_id is None:
            raise RuntimeError("the cluster under test has not started")
        return self.cluster.addresses[node_id].address

    def pid(self, node_id: int) -> int:
        return self.cluster.node(node_id)._transport.pid

    def profile_path(self, node_id: int) -> str | None:
        return f"{self.profile}.node{node_id}" if self.profile else None

    async def start(self, timeout: float = 60.0) -> None:
        last: Exception | None = None
        for attempt in range(3):
            # Fresh ports per attempt: another process may take one in between.
            base = os.path.join(self.workdir, f"cluster-{attempt}")
            self.cluster = Cluster(
                self.reactor, base, self.size, extra_config=self.extra_config, direct=True
            )
            try:
                await self.cluster.prepare()
                for node_id in self.cluster.ids:
                    self.cluster.node(node_id).twistd_args = profile_args(
                        self.profile_path(node_id)
                    )
                await self.cluster.start(timeout)
                self.leader_id = await self.cluster.wait_leader(timeout)
                break
            except Exception as e:
                last = e
                await self.cluster.close()
                print(f"cluster start failed (attempt {attempt + 1}): {e}", file=sys.stderr)
        else:
            raise RuntimeError(f"the cluster did not start: {last}") from last
        for node_id in self.cluster.ids:
            self.meter.attach(node_id, self.pid(node_id))
        self.headers = await self.cluster.make_headers(timeout)
        self._client = http_client(self.reactor)
        await self.create_project()

    async def find_leader(self, timeout: float = 30.0) -> int:
        """Wait until the running nodes agree on a leader; remember and return its id."""
        self.leader_id = await self.cluster.wait_leader(timeout)
        return self.leader_id

    def followers(self) -> list[int]:
        """The running nodes other than the last known leader."""
        return [n for n in self.cluster.ids if n != self.leader_id and self.cluster.is_running(n)]

    async def kill(self, node_id: int) -> None:
        """SIGKILL node C{node_id} and wait until it is gone."""
        self.meter.detach(node_id)
        await self.cluster.kill(node_id)

    async def restart(self, node_id: int, timeout: float = 60.0) -> None:
        """Start node C{node_id} again on its data; wait until it answers its health check."""
        await self.cluster.restart(node_id, timeout)
        self.meter.attach(node_id, self.pid(node_id))

    async def members(self) -> list[dict[str, Any]]:
        """C{GET /cluster} on the leader: each member's role, reachability and owned jobs."""
        response = await self._client.get(
            self.api_url + "/cluster", headers=self.headers, timeout=10
        )
        text = await within(self.reactor, response.text(), 10, "the GET /cluster answer")
        if response.code != 200:
            raise RuntimeError(f"GET /cluster: {response.code} {text}")
        return json.loads(text)["data"]["members"]

    async def owned(self) -> dict[int, int]:
        """Jobs owned by each member, from the leader's view."""
        return {m["node_id"]: m["owned_jobs"] for m in await self.members()}

    async def add_jobs(
        self,
        count: int,
        receiver_port: int,
        urls: int,
        spec: str = "@every 1s",
        phases: int = 1,
        path: str = "/cb/{n}",
    ) -> float:
        """
        Create the jobs on the leader (L{JobsClient.add_jobs}), then wait until
        the leader has spread them evenly over the nodes; the seconds of both.
        """
        started = time.monotonic()
        await JobsClient.add_jobs(self, count, receiver_port, urls, spec, phases, path)
        await self.wait_balanced()
        return time.monotonic() - started

    async def wait_balanced(self, timeout: float = 120.0) -> float:
        """Wait until every member is reachable and owns total // members or one more job."""
        started = time.monotonic()
        seen: Any = None
        while time.monotonic() - started < timeout:
            try:
                members = await self.members()
                counts = [m["owned_jobs"] for m in members]
                seen = {m["node_id"]: (m["owned_jobs"], m["reachable"]) for m in members}
                if (
                    all(m["reachable"] for m in members)
                    and sum(counts) >= len(self.jobs)
                    and max(counts) - min(counts) <= 1
                ):
                    return time.monotonic() - started
            except Exception as e:
                seen = repr(e)
            await sleep(self.reactor, 0.25)
        raise TimeoutError(
            f"the {len(self.jobs)} jobs were not spread evenly within {timeout:g} s; "
            f"last view (owned, reachable) per node: {seen}"
        )

    async def wait_share(self, node_id: int, timeout: float = 60.0) -> float:
        """
        Wait until node C{node_id} owns its even share of the jobs
        (total // members) and every member is reachable; return the seconds
        it took.
        """
        started = time.monotonic()
        seen: Any = None
        while time.monotonic() - started < timeout:
            try:
                await self.find_leader(10)
                members = await self.members()
                seen = {m["node_id"]: (m["owned_jobs"], m["reachable"]) for m in members}
                total = sum(m["owned_jobs"] for m in members)
                mine = next((m for m in members if m["node_id"] == node_id), None)
                if (
                    mine is not None
                    and all(m["reachable"] for m in members)
                    and mine["owned_jobs"] >= total // len(members)
                    and total >= len(self.jobs)
                ):
                    return time.monotonic() - started
            except Exception as e:
                seen = repr(e)
            await sleep(self.reactor, 0.25)
        raise TimeoutError(
            f"node {node_id} did not get its share of {len(self.jobs)} jobs within {timeout:g} s; "
            f"last view (owned, reachable) per node: {seen}"
        )

    def logs(self, lines: int = 20) -> str:
        return self.cluster.logs(lines) if self.cluster is not None else ""

    async def stop(self, grace_s: float = 60.0) -> None:
        """SIGTERM every running node; SIGKILL those still running C{grace_s} later."""
        cluster = self.cluster
        if cluster is None:
            return
        running = [n for n in cluster.ids if cluster.is_running(n)]
        for node_id in running:
            cluster.node(node_id).signal("TERM")
        started = time.monotonic()
        while any(cluster.is_running(n) for n in running) and time.monotonic() - started < grace_s:
            await sleep(self.reactor, 0.2)
        late = [n for n in running if cluster.is_running(n)]
        if late:
            self.stop_note = f"nodes {late} had not ended {grace_s:g} s after SIGTERM: SIGKILLed"
            print(self.stop_note, file=sys.stderr)
        await cluster.close()


async def under_test(reactor: Any, workdir: str, nodes: int, profile: str | None = None) -> Any:
    """A started node under test: one node for C{nodes} == 1, else a direct cluster."""
    if nodes == 1:
        node: Any = NodeUnderTest(reactor, os.path.join(workdir, "node"), profile=profile)
    else:
        node = ClusterUnderTest(reactor, os.path.join(workdir, "cluster"), nodes, profile=profile)
    try:
        await node.start()
    except BaseException:
        await node.stop()
        raise
    return node
