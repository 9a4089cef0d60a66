"""
Scale on one node (issue 5, scenario 3): create a million jobs through the
array endpoint against a real node process, then measure what that costs.

    python -m bench.scale [--jobs 1000000] [--quick] [--profile DIR]

Most jobs have sparse schedules (@hourly, 0 */6 * * *, @every 10m) so the
node is not also a throughput test; a few hundred canary jobs fire
C{@every 1s} at a receiver in this process. Printed, and written to
C{bench/results/scale-<timestamp>.json}: creation time and rate, the node's
RSS after creation and after each restart, the data dir's files, C{GET /jobs}
latency (first page, 1000 rows, deep offset, cursor), and the time from
starting the node again after SIGTERM and after SIGKILL to the health check
answering, to the first canary callback and to every canary firing again.
Goal (issue 5): 1M jobs in <= 1 GiB RSS, created in <= 2 min, restart to
firing <= 30 s.

    python -m bench.scale --nodes 3 [--jobs 1000000] [--batch 10000] [--in-flight 3]

With C{--nodes N} (2..9; the issue asks for 3) the same jobs are created on
the leader of a fresh N-node cluster on 127.0.0.1 (bench/cluster.py, direct
links), and every figure is per node: RSS after creation and after each
restart, each node's data dir (every file, snapshots included), C{GET /jobs}
on the leader and on a follower, linearizable and C{?consistency=stale}.
The restarts stop every node at once (SIGTERM, then SIGKILL) and start them
all again: time to each health check, to an agreed leader, to the first
canary and to every canary. A 503 during creation is retried after its
Retry-After (C{--retries}) and counted, and the job count is checked after
creation. RSS of every node is sampled all along (C{rss_timeline_mib}); a
run that fails still writes its JSON with the error, the figures so far and
the tail of every node's log (C{--keep} or C{BENCH_KEEP=1} keeps the logs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import uuid
from typing import Any

import psutil
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredSemaphore, FirstError, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import LoopingCall, react
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from bench.cluster import CLUSTER_CONFIG, ClusterUnderTest
from bench.common import check_nodes, distribution, percentile, profile_args
from harness.process import REPO_ROOT, NodeProcess, free_port
from scheduler0.api.validation import encode_cursor
from scheduler0.timeutil import parse_instant

GOALS = {"jobs": 1_000_000, "rss_bytes": 1 << 30, "create_s": 120.0, "restart_to_firing_s": 30.0}
SPARSE_SPECS = ("@hourly", "0 */6 * * *", "@every 10m")
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def sleep(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class CanaryReceiver(Resource):
    """
    A bare callback receiver: per job uuid, when its first callback since the
    last L{mark} arrived.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.first_since_mark: dict[str, float] = {}
        self.posts = 0
        self.items = 0
        self.port: Any = None

    def mark(self) -> None:
        """Forget first arrivals: the next ones are those after this instant."""
        self.first_since_mark = {}

    def render_POST(self, request: Any) -> bytes:
        now = time.time()
        self.posts += 1
        body = json.loads(request.content.read() or b"null")
        first = self.first_since_mark
        for item in body if isinstance(body, list) else [body]:
            self.items += 1
            first.setdefault(item.get("job_uuid", "?"), now)
        request.setHeader(b"content-type", b"application/json")
        return b'{"ok":true}'

    def first(self) -> float | None:
        """The first arrival since the mark."""
        return min(self.first_since_mark.values(), default=None)

    def all_of(self, jobs: list[str]) -> float | None:
        """When the last of C{jobs} first fired since the mark (None: not all have)."""
        first = self.first_since_mark
        if any(job not in first for job in jobs):
            return None
        return max(first[job] for job in jobs)

    async def listen(self) -> int:
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(self))
        return int(self.port.getHost().port)


def job_body(project: str, start: int, count: int, callback: str) -> bytes:
    """One array request of sparse jobs; C{spec}s rotate over L{SPARSE_SPECS}."""
    return json.dumps(
        [
            {
                "project_uuid": project,
                "name": f"job-{i}",
                "spec": SPARSE_SPECS[i % len(SPARSE_SPECS)],
                "callback_url": callback,
            }
            for i in range(start, start + count)
        ],
        separators=(",", ":"),
    ).encode()


def disk_use(folder: str) -> dict[str, int]:
    return {
        name: os.path.getsize(os.path.join(folder, name))
        for name in sorted(os.listdir(folder))
        if os.path.isfile(os.path.join(folder, name))
    }


async def run_cli(workdir: str, *args: str) -> str:
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-m", "scheduler0", *args],
        env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        path=workdir,
    )
    if code:
        raise SystemExit(f"scheduler0 {' '.join(args)} failed: {err.decode()}")
    return out.decode()


def node_rss(node: NodeProcess) -> int:
    return int(psutil.Process(node._transport.pid).memory_info().rss)


async def wait_until(probe: Any, timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll C{probe()} until true; return the time.time() it first was."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe() if callable(probe) else probe
        if value:
            return time.time()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        await sleep(interval)


class _Run:
    """What both versions of the run hold: arguments, the client, the receiver, the figures."""

    def __init__(self, args: argparse.Namespace, workdir: str, receiver: CanaryReceiver) -> None:
        self.args = args
        self.workdir = workdir
        self.receiver = receiver
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 8
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.pool = pool
        self.headers: dict[str, str] = {}
        self.canaries: list[str] = []
        self.result: dict[str, Any] = {}


class Bench(_Run):
    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        super().__init__(args, workdir, CanaryReceiver())
        self.node: NodeProcess | None = None

    def profile_args(self, label: str) -> tuple[str, ...]:
        if not self.args.profile:
            return ()
        os.makedirs(self.args.profile, exist_ok=True)
        path = os.path.abspath(os.path.join(self.args.profile, f"scale-{label}.prof"))
        return (f"--profile={path}", "--profiler=cprofile", "--savestats")

    async def healthy(self) -> bool:
        assert self.node is not None
        if self.node._watch is not None and self.node._watch.ended.called:
            raise SystemExit(f"the node exited:\n{self.node.output[-3000:]}")
        try:
            response = await self.http.get(self.node.url + "/healthcheck", timeout=2)
            await response.content()
        except Exception:
            return False
        return response.code == 200

    async def setup(self) -> None:
        port = await self.receiver.listen()
        self.callback = f"http://127.0.0.1:{port}/callback"
        http_port = free_port()
        config_path = os.path.join(self.workdir, "config.yml")
        with open(config_path, "w") as f:
            f.write(
                f"NodeId: 1\nPort: {http_port}\nRaftAddress: 127.0.0.1:{free_port()}\n"
                "DataDir: data\nLogLevel: WARN\nRateLimitPerSecond: 0\n"
                "MaxRequestBodyBytes: 33554432\nMaxJobsPerRequest: 100000\n"
            )
        await run_cli(self.workdir, "credential", "init", "--config", config_path, "--generate")
        self.node = NodeProcess(
            reactor, self.workdir, config_path, http_port, twistd_args=self.profile_args("create")
        )
        await self.node.start(timeout=60)
        credential = json.loads(
            await run_cli(self.workdir, "create", "credential", "--json", "--config", config_path)
        )
        self.headers = {
            "x-api-key": credential["api_key"],
            "x-secret-key": credential["api_secret"],
            "content-type": "application/json",
        }
        response = await self.http.post(
            self.node.url + "/projects",
            data=json.dumps({"name": "scale", "description": ""}).encode(),
            headers=self.headers,
        )
        self.project = (await response.json())["data"]["uuid"]

    async def post_jobs(self, body: bytes) -> list | None:
        assert self.node is not None
        response = await self.http.post(
            self.node.url + "/jobs", data=body, headers=self.headers, timeout=600
        )
        content = await response.content()
        if response.code != 201:
            raise SystemExit(f"POST /jobs: {response.code} {content[:500]!r}")
        return None

    async def create(self) -> None:
        args = self.args
        body = json.dumps(
            [
                {
                    "project_uuid": self.project,
                    "name": f"canary-{i}",
                    "spec": "@every 1s",
                    "callback_url": self.callback,
                }
                for i in range(args.canaries)
            ]
        ).encode()
        response = await self.http.post(self.node.url + "/jobs", data=body, headers=self.headers)
        self.canaries = [job["uuid"] for job in (await response.json())["data"]]
        total = args.jobs - args.canaries
        semaphore = DeferredSemaphore(args.in_flight)
        starts = range(0, total, args.batch)
        rss_peak = 0
        done = 0

        async def one(start: int) -> None:
            nonlocal rss_peak, done
            count = min(args.batch, total - start)
            await self.post_jobs(job_body(self.project, start, count, self.callback))
            done += count
            rss_peak = max(rss_peak, node_rss(self.node))
            if (start // args.batch) % 10 == 9:
                print(
                    f"  created {done:,} jobs, {time.monotonic() - began:.1f} s,"
                    f" node RSS {rss_peak / 2**20:.0f} MiB",
                    flush=True,
                )

        cpu0 = psutil.Process(self.node._transport.pid).cpu_times()
        began = time.monotonic()
        await gatherResults(
            [
                semaphore.run(lambda s=s: Deferred.fromCoroutine(one(s)))  # type: ignore[misc]
                for s in starts
            ]
        )
        took = time.monotonic() - began
        cpu1 = psutil.Process(self.node._transport.pid).cpu_times()
        self.result["create"] = {
            "jobs": args.jobs,
            "canaries": args.canaries,
            "batch": args.batch,
            "in_flight": args.in_flight,
            "seconds": round(took, 2),
            "jobs_per_s": round(total / took),
            "node_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 2),
            "node_rss_peak_seen_bytes": rss_peak,
        }

    async def settle(self, since: float, label: str) -> dict:
        """Wait for canaries to fire after C{since}; report RSS."""
        start = time.time()
        self.receiver.mark()
        await wait_until(
            lambda: _now(self.receiver.all_of(self.canaries)),
            600,
            "every canary to fire",
        )
        await sleep(2)
        return {"rss_bytes": node_rss(self.node), "waited_s": round(time.time() - start, 2)}

    async def timed_get(self, path: str) -> tuple[float, dict]:
        began = time.perf_counter()
        response = await self.http.get(self.node.url + path, headers=self.headers, timeout=120)
        body = await response.content()
        took = time.perf_counter() - began
        if response.code != 200:
            raise SystemExit(f"GET {path}: {response.code} {body[:300]!r}")
        return took, json.loads(body)

    async def listing(self) -> dict:
        total = self.args.jobs
        out: dict[str, Any] = {}
        calls = self.args.get_calls

        async def series(name: str, paths: Any, n: int) -> None:
            times = []
            for path in itertools.islice(paths, n):
                took, _ = await self.timed_get(path)
                times.append(took * 1000)
            out[name] = {
                "calls": len(times),
                "p50_ms": round(percentile(times, 50), 2),
                "p99_ms": round(percentile(times, 99), 2),
                "max_ms": round(max(times), 2),
            }
            print(f"  GET {name}: p50 {out[name]['p50_ms']} ms, p99 {out[name]['p99_ms']} ms")

        await series("limit=50", itertools.repeat("/jobs?limit=50"), calls)
        await series("limit=1000", itertools.repeat("/jobs?limit=1000"), max(10, calls // 5))
        deep = max(0, total - 100)
        await series("deep offset", itertools.repeat(f"/jobs?limit=50&offset={deep}"), calls)
        await series(
            "deep cursor",
            itertools.repeat(f"/jobs?limit=50&cursor={encode_cursor(deep)}"),
            calls,
        )

        # Walking pages by following next_cursor from the start.
        times = []
        path = "/jobs?limit=50"
        for _ in range(calls):
            took, page = await self.timed_get(path)
            times.append(took * 1000)
            cursor = page["data"]["next_cursor"]
            if not cursor:
                break
            path = f"/jobs?limit=50&cursor={cursor}"
        out["cursor walk"] = {
            "calls": len(times),
            "p50_ms": round(percentile(times, 50), 2),
            "p99_ms": round(percentile(times, 99), 2),
            "max_ms": round(max(times), 2),
        }
        return out

    async def restart(self, how: str) -> dict:
        """Stop the node (SIGTERM or SIGKILL), start it again, time the way back."""
        node = self.node
        assert node is not None
        began = time.monotonic()
        if how == "SIGTERM":
            await node.stop()
        else:
            await node.kill()
        stopped_s = time.monotonic() - began
        await self.pool.closeCachedConnections()
        node.twistd_args = self.profile_args(f"after-{how.lower()}")
        self.receiver.mark()
        spawned = time.time()
        node.spawn()
        healthy = await wait_until(self.healthy, 900, "the health check")
        await wait_until(lambda: _now(self.receiver.first()), 900, "a canary callback")
        await wait_until(
            lambda: _now(self.receiver.all_of(self.canaries)), 900, "every canary to fire"
        )
        first_at = self.receiver.first()
        every_at = self.receiver.all_of(self.canaries)
        assert first_at is not None and every_at is not None
        await sleep(2)
        out = {
            "stop_s": round(stopped_s, 2),
            "to_healthcheck_s": round(healthy - spawned, 2),
            "to_first_canary_s": round(first_at - spawned, 2),
            "to_every_canary_s": round(every_at - spawned, 2),
            "rss_bytes": node_rss(node),
        }
        print(f"  after {how}: {out}", flush=True)
        return out

    async def run(self) -> dict:
        args = self.args
        self.result.update(
            {
                "scenario": "scale",
                "nodes": 1,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_average_at_start": os.getloadavg(),
                    "python": sys.version.split()[0],
                },
                "goals": GOALS,
            }
        )
        await self.setup()
        try:
            print(f"creating {args.jobs:,} jobs ({args.canaries} canaries @every 1s)", flush=True)
            await self.create()
            c = self.result["create"]
            print(f"  {c['seconds']} s, {c['jobs_per_s']:,} jobs/s", flush=True)
            self.result["after_create"] = await self.settle(time.time(), "create")
            print(f"  node RSS {self.result['after_create']['rss_bytes'] / 2**20:.0f} MiB")
            self.result["get_jobs"] = await self.listing()
            self.result["disk_bytes"] = disk_use(os.path.join(self.workdir, "data"))
            self.result["restart_sigterm"] = await self.restart("SIGTERM")
            self.result["restart_sigkill"] = await self.restart("SIGKILL")
            self.result["disk_bytes_end"] = disk_use(os.path.join(self.workdir, "data"))
        finally:
            if self.node is not None:
                await self.node.stop()
            await self.pool.closeCachedConnections()
            if self.receiver.port is not None:
                await self.receiver.port.stopListening()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.result["bench_process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
        self.result["receiver_items"] = self.receiver.items
        self.result["verdict"] = verdict(self.result)
        return self.result


def _now(value: Any) -> Deferred:
    d: Deferred = Deferred()
    d.callback(value)
    return d


def verdict(result: dict) -> dict:
    rss = max(
        result["after_create"]["rss_bytes"],
        result["restart_sigterm"]["rss_bytes"],
        result["restart_sigkill"]["rss_bytes"],
    )
    firing = max(
        result["restart_sigterm"]["to_every_canary_s"],
        result["restart_sigkill"]["to_every_canary_s"],
    )
    scale = result["create"]["jobs"] / GOALS["jobs"]
    return {
        "rss_max_bytes": rss,
        "rss_ok": rss <= GOALS["rss_bytes"],
        "create_ok": result["create"]["seconds"] <= GOALS["create_s"] * scale,
        "restart_to_firing_ok": firing <= GOALS["restart_to_firing_s"],
        "note": "create goal scaled to the job count (2 min per million)",
    }


def print_table(result: dict) -> None:
    c = result["create"]
    mib = 2**20
    rows = [
        ("jobs created", f"{c['jobs']:,}", "1,000,000"),
        ("creation", f"{c['seconds']} s ({c['jobs_per_s']:,}/s)", "<= 120 s per 1M"),
        ("node CPU during creation", f"{c['node_cpu_s']} s", ""),
        ("RSS after creation", f"{result['after_create']['rss_bytes'] / mib:.0f} MiB", "<= 1024"),
        (
            "RSS after SIGTERM restart",
            f"{result['restart_sigterm']['rss_bytes'] / mib:.0f} MiB",
            "<= 1024",
        ),
        (
            "RSS after SIGKILL restart",
            f"{result['restart_sigkill']['rss_bytes'] / mib:.0f} MiB",
            "<= 1024",
        ),
    ]
    for how in ("sigterm", "sigkill"):
        r = result[f"restart_{how}"]
        rows.append(
            (
                f"{how.upper()}: health / first / all canaries",
                f"{r['to_healthcheck_s']} / {r['to_first_canary_s']} / {r['to_every_canary_s']} s",
                "all <= 30 s",
            )
        )
    for name, g in result["get_jobs"].items():
        rows.append((f"GET /jobs {name}", f"p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms", ""))
    for name, size in result["disk_bytes"].items():
        rows.append((f"disk {name}", f"{size / mib:.1f} MiB", ""))
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:<36} {goal}")
    print(f"verdict: {result['verdict']}")


# -- a cluster of N nodes (--nodes N > 1) --------------------------------------

#: What the cluster's nodes get on top of the cluster bench's config: the
#: same request limits the one-node version sets, so one POST carries a batch.
SCALE_CLUSTER_CONFIG = "MaxRequestBodyBytes: 33554432\nMaxJobsPerRequest: 100000\n"


class RecordingReceiver(CanaryReceiver):
    """
    L{CanaryReceiver} that also keeps (arrival, job uuid, scheduled_at) of
    every item while C{recording}, so the canaries' lateness and gaps while
    the jobs are created can be reported.
    """

    def __init__(self) -> None:
        super().__init__()
        self.recording = False
        self.arrivals: list[tuple[float, str, str]] = []

    def render_POST(self, request: Any) -> bytes:
        if not self.recording:
            return super().render_POST(request)
        now = time.time()
        raw = request.content.read() or b"null"
        request.content.seek(0)
        body = json.loads(raw)
        for item in body if isinstance(body, list) else [body]:
            self.arrivals.append((now, item.get("job_uuid", "?"), item.get("scheduled_at", "")))
        return super().render_POST(request)


def canary_figures(
    arrivals: list[tuple[float, str, str]], canaries: list[str], t0: float, t1: float
) -> dict[str, Any]:
    """
    Lateness (arrival - scheduled_at) of the canary slots scheduled in
    [t0, t1), the slots missing from what @every 1s asks for there, and per
    canary the longest time between two of its arrivals in that window.
    """
    wanted = set(canaries)
    late_ms: list[float] = []
    slots: set[tuple[str, str]] = set()
    times: dict[str, list[float]] = {}
    for arrival, job, scheduled in arrivals:
        if job not in wanted or not scheduled:
            continue
        at = parse_instant(scheduled).timestamp()
        if t0 <= at < t1:
            late_ms.append((arrival - at) * 1000)
            slots.add((job, scheduled))
        if t0 <= arrival < t1:
            times.setdefault(job, []).append(arrival)
    gaps = []
    for job in canaries:
        points = [t0, *sorted(times.get(job, [])), t1]
        gaps.append(max(b - a for a, b in itertools.pairwise(points)))
    expected = len(canaries) * max(0, int(t1 - t0) - 1)
    return {
        "window_s": round(t1 - t0, 2),
        "slots_delivered": len(slots),
        "slots_expected_about": expected,
        "lateness_ms": distribution(late_ms),
        "longest_gap_per_canary_s": distribution(gaps),
    }


def tree_use(folder: str) -> dict[str, int]:
    """Bytes of every file under C{folder}, by path relative to it (subfolders too)."""
    out: dict[str, int] = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                out[os.path.relpath(path, folder)] = os.path.getsize(path)
            except OSError:
                continue
    return dict(sorted(out.items()))


def leader_of(answers: dict[int, dict | None]) -> int | None:
    """
    The leader a majority of the cluster agrees on, from each node's health
    answer (None: no answer): a node saying it is leader in some term, and
    more than half of all the nodes naming it as leader in that term.
    """
    size = len(answers)
    for node_id, answer in answers.items():
        if not answer or answer.get("role") != "leader":
            continue
        term = answer.get("term")
        agree = sum(
            1
            for other in answers.values()
            if other and other.get("leader_id") == node_id and other.get("term") == term
        )
        if 2 * agree > size:
            return node_id
    return None


def latency_figures(times_ms: list[float]) -> dict[str, Any]:
    return {
        "calls": len(times_ms),
        "p50_ms": round(percentile(times_ms, 50), 2),
        "p99_ms": round(percentile(times_ms, 99), 2),
        "max_ms": round(max(times_ms), 2) if times_ms else None,
    }


class ClusterBench(_Run):
    """
    The scale scenario on a fresh cluster of C{args.nodes} nodes
    (L{ClusterUnderTest}, direct links): jobs created on the leader, RSS and
    disk per node, C{GET /jobs} against the leader and a follower (default
    linearizable and C{?consistency=stale}), then a full-cluster restart
    after SIGTERM and after SIGKILL of every node. RSS of every node is also
    sampled every C{args.sample_s} seconds (the C{rss_timeline_mib}), so a
    run that fails still shows how memory grew.
    """

    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        super().__init__(args, workdir, RecordingReceiver())
        self.cut: Any = None
        self.phase = "start"
        self.timeline: list[dict[str, Any]] = []
        self.began = time.monotonic()
        self._sampler: Any = None
        self.batch_ms: list[float] = []
        self.unavailable: list[dict[str, Any]] = []

    # -- the nodes --------------------------------------------------------

    @property
    def cluster(self) -> Any:
        return self.cut.cluster

    def url(self, node_id: int) -> str:
        return self.cut.url(node_id)

    def rss(self, node_id: int) -> int | None:
        """RSS of node C{node_id}'s process, None when it does not run."""
        if not self.cluster.is_running(node_id):
            return None
        try:
            return int(psutil.Process(self.cut.pid(node_id)).memory_info().rss)
        except psutil.Error:
            return None

    def rss_all(self) -> dict[str, int | None]:
        return {str(n): self.rss(n) for n in self.cluster.ids}

    def cpu_s(self) -> dict[str, float]:
        out = {}
        for n in self.cluster.ids:
            try:
                times = psutil.Process(self.cut.pid(n)).cpu_times()
                out[str(n)] = times.user + times.system
            except (psutil.Error, AttributeError):
                out[str(n)] = 0.0
        return out

    def sample(self) -> None:
        """One RSS sample of every node, with the phase the run is in."""
        if self.cut is None or self.cut.cluster is None or not self.cluster.nodes:
            return
        row: dict[str, Any] = {"t_s": round(time.monotonic() - self.began, 1), "phase": self.phase}
        for n, rss in self.rss_all().items():
            row[n] = None if rss is None else round(rss / 2**20, 1)
        self.timeline.append(row)

    def profile_path(self, label: str, node_id: int) -> str | None:
        if not self.args.profile:
            return None
        os.makedirs(self.args.profile, exist_ok=True)
        return os.path.abspath(os.path.join(self.args.profile, f"scale-{label}-node{node_id}.prof"))

    async def setup(self) -> None:
        port = await self.receiver.listen()
        self.callback = f"http://127.0.0.1:{port}/callback"
        profile = None
        if self.args.profile:
            os.makedirs(self.args.profile, exist_ok=True)
            # ClusterUnderTest adds ".node<id>"; see print_cluster_profiles.
            profile = os.path.abspath(os.path.join(self.args.profile, "scale-create"))
        self.cut = ClusterUnderTest(
            reactor,
            os.path.join(self.workdir, "cluster"),
            self.args.nodes,
            profile=profile,
            extra_config=CLUSTER_CONFIG + SCALE_CLUSTER_CONFIG,
        )
        self._sampler = LoopingCall(self.sample)
        self._sampler.start(self.args.sample_s, now=False)
        await self.cut.start()
        self.headers = {**self.cut.headers, "content-type": "application/json"}
        self.project = self.cut.project_uuid
        self.result["leader_after_start"] = self.cut.leader_id

    # -- creation ---------------------------------------------------------

    async def post_jobs(self, body: bytes) -> list:
        """
        POST one array to the node last known as leader. A 503 (no leader or
        no quorum within RaftApplyTimeout) is retried after its Retry-After,
        as a client would, up to C{args.retries} times; each one is counted
        in C{self.unavailable}, since a write that answered 503 may still
        commit. Every attempt carries the batch's Idempotency-Key, so a retry
        of a batch that did commit creates nothing more (the job count after
        creation checks it).
        """
        headers = {**self.headers, "Idempotency-Key": f"scale-{uuid.uuid4().hex}"}
        for attempt in range(self.args.retries + 1):
            if "create_failed_after" in self.result:
                raise RuntimeError("not sent: another batch failed")
            node_id = self.cut.leader_id
            began = time.perf_counter()
            response = await self.http.post(
                self.url(node_id) + "/jobs", data=body, headers=headers, timeout=600
            )
            content = await response.content()
            took = time.perf_counter() - began
            if response.code == 201:
                self.batch_ms.append(took * 1000)
                return json.loads(content)["data"]
            if response.code == 503:
                self.unavailable.append(
                    {
                        "at_s": round(time.monotonic() - self.began, 2),
                        "node_id": node_id,
                        "after_ms": round(took * 1000),
                        "answer": content[:300].decode("utf-8", "replace"),
                    }
                )
            if response.code != 503 or attempt == self.args.retries:
                raise RuntimeError(
                    f"POST /jobs on node {node_id}: {response.code} {content[:500]!r}"
                )
            print(f"  503 from node {node_id} after {took:.2f} s; retrying", flush=True)
            retry_after = response.headers.getRawHeaders(b"retry-after", [b"1"])[0]
            await sleep(float(retry_after))
            try:
                await self.cut.find_leader(30)
            except Exception:
                pass
        raise AssertionError("not reached")

    async def stored_jobs(self) -> int:
        """The job count the leader reports (C{total} of C{GET /jobs})."""
        _took, page = await self.timed_get(self.cut.leader_id, "/jobs?limit=1")
        return int(page["data"]["total"])

    async def term(self) -> dict[str, Any]:
        answers = await gatherResults(
            [Deferred.fromCoroutine(self.cluster.health(n)) for n in self.cluster.ids]
        )
        return {
            str(n): None if a is None else {"role": a.get("role"), "term": a.get("term")}
            for n, a in zip(self.cluster.ids, answers, strict=True)
        }

    async def create(self) -> None:
        args = self.args
        self.phase = "create"
        canaries = [
            {
                "project_uuid": self.project,
                "name": f"canary-{i}",
                "spec": "@every 1s",
                "callback_url": self.callback,
            }
            for i in range(args.canaries)
        ]
        self.canaries = [job["uuid"] for job in await self.post_jobs(json.dumps(canaries).encode())]
        # Let the canaries start firing, then watch them while the rest is created.
        self.receiver.mark()
        await wait_until(
            lambda: _now(self.receiver.all_of(self.canaries)),
            self.args.restart_timeout_s,
            "every canary to fire before the creation",
        )
        self.receiver.recording = True
        total = args.jobs - args.canaries
        semaphore = DeferredSemaphore(args.in_flight)
        peak: dict[str, int] = {}
        done = 0
        batches = 0

        async def one(start: int) -> None:
            nonlocal done, batches
            if "create_failed_after" in self.result:
                return  # another batch failed: send no more
            count = min(args.batch, total - start)
            try:
                await self.post_jobs(job_body(self.project, start, count, self.callback))
            except Exception:
                self.result.setdefault(
                    "create_failed_after",
                    {"jobs_acknowledged": done, "seconds": round(time.monotonic() - began, 2)},
                )
                raise
            done += count
            batches += 1
            for n, rss in self.rss_all().items():
                peak[n] = max(peak.get(n, 0), rss or 0)
            if batches % 10 == 0:
                print(
                    f"  created {done:,} jobs, {time.monotonic() - began:.1f} s, RSS MiB "
                    + ", ".join(f"node {n} {v / 2**20:.0f}" for n, v in sorted(peak.items())),
                    flush=True,
                )

        roles_before = await self.term()
        leader_before = self.cut.leader_id
        cpu0 = self.cpu_s()
        began = time.monotonic()
        try:
            await gatherResults(
                [
                    semaphore.run(lambda s=s: Deferred.fromCoroutine(one(s)))  # type: ignore[misc]
                    for s in range(0, total, args.batch)
                ],
                consumeErrors=True,
            )
        except FirstError as e:
            self.result["create_failed_after"]["answers_503"] = len(self.unavailable)
            self.result["create_failed_after"]["answers_503_detail"] = self.unavailable[:50]
            self.result["create_failed_after"]["batch_latency_ms"] = distribution(self.batch_ms)
            e.subFailure.raiseException()
        took = time.monotonic() - began
        window = (time.time() - took, time.time())
        self.receiver.recording = False
        cpu1 = self.cpu_s()
        await self.cut.find_leader(60)
        stored = await self.stored_jobs()
        self.result["create"] = {
            "jobs": args.jobs,
            "canaries": args.canaries,
            "batch": args.batch,
            "in_flight": args.in_flight,
            "on_node": leader_before,
            "leader_after": self.cut.leader_id,
            "seconds": round(took, 2),
            "jobs_per_s": round(total / took),
            "node_cpu_s": {n: round(cpu1[n] - cpu0.get(n, 0.0), 2) for n in cpu1},
            "node_rss_peak_seen_bytes": peak,
            "batch_latency_ms": distribution(self.batch_ms),
            "answers_503": len(self.unavailable),
            "answers_503_detail": self.unavailable[:50],
            "jobs_stored": stored,
            "jobs_extra": stored - args.jobs,
            "roles_terms_before": roles_before,
            "roles_terms_after": await self.term(),
            "canaries_during_creation": canary_figures(
                self.receiver.arrivals, self.canaries, *window
            ),
        }
        self.receiver.arrivals = []

    async def wait_spread(self, timeout: float) -> dict[str, Any]:
        """
        Wait until the leader's C{GET /cluster} shows every job owned, spread
        evenly (counts differ by at most one) over reachable members.
        """
        started = time.monotonic()
        seen: Any = None
        calls: list[float] = []
        while time.monotonic() - started < timeout:
            try:
                t = time.perf_counter()
                members = await self.cut.members()
                calls.append((time.perf_counter() - t) * 1000)
                counts = {m["node_id"]: m["owned_jobs"] for m in members}
                seen = {m["node_id"]: (m["owned_jobs"], m["reachable"]) for m in members}
                if (
                    all(m["reachable"] for m in members)
                    and sum(counts.values()) >= self.args.jobs
                    and max(counts.values()) - min(counts.values()) <= 1
                ):
                    return {
                        "seconds": round(time.monotonic() - started, 2),
                        "owned": {str(k): v for k, v in sorted(counts.items())},
                        "get_cluster_ms": latency_figures(calls),
                    }
            except Exception as e:
                seen = repr(e)
            await sleep(0.5)
        raise TimeoutError(
            f"the {self.args.jobs:,} jobs were not spread evenly within {timeout:g} s; "
            f"last view (owned, reachable) per node: {seen}"
        )

    async def settle(self) -> dict[str, Any]:
        """Wait for every canary to fire; RSS and role of each node."""
        self.phase = "settle"
        start = time.time()
        self.receiver.mark()
        await wait_until(
            lambda: _now(self.receiver.all_of(self.canaries)),
            self.args.restart_timeout_s,
            "every canary to fire",
        )
        await sleep(2)
        return {"rss_bytes": self.rss_all(), "waited_s": round(time.time() - start, 2)}

    # -- reads ------------------------------------------------------------

    async def timed_get(self, node_id: int, path: str) -> tuple[float, dict]:
        began = time.perf_counter()
        response = await self.http.get(self.url(node_id) + path, headers=self.headers, timeout=120)
        body = await response.content()
        took = time.perf_counter() - began
        if response.code != 200:
            raise RuntimeError(f"GET {path} on node {node_id}: {response.code} {body[:300]!r}")
        return took, json.loads(body)

    async def listing(self, node_id: int, consistency: str) -> dict[str, Any]:
        """The one-node version's C{GET /jobs} series against one node, one consistency."""
        extra = "" if consistency == "linearizable" else f"&consistency={consistency}"
        calls = self.args.get_calls
        deep = max(0, self.args.jobs - 100)
        out: dict[str, Any] = {}
        plans = [
            ("limit=50", "/jobs?limit=50", calls),
            ("limit=1000", "/jobs?limit=1000", max(10, calls // 5)),
            ("deep offset", f"/jobs?limit=50&offset={deep}", calls),
            ("deep cursor", f"/jobs?limit=50&cursor={encode_cursor(deep)}", calls),
        ]
        # The cursor a page deep in the list hands out (keyset, not an offset).
        keyset = None
        if deep > 0:
            _took, page = await self.timed_get(node_id, f"/jobs?limit=1&offset={deep - 1}{extra}")
            keyset = page["data"].get("next_cursor")
        if keyset:
            plans.append(("deep keyset cursor", f"/jobs?limit=50&cursor={keyset}", calls))
        for name, path, n in plans:
            times = []
            for _ in range(n):
                took, _page = await self.timed_get(node_id, path + extra)
                times.append(took * 1000)
            out[name] = latency_figures(times)
        times = []
        path = "/jobs?limit=50"
        for _ in range(calls):
            took, page = await self.timed_get(node_id, path + extra)
            times.append(took * 1000)
            cursor = page["data"].get("next_cursor")
            if not cursor:
                break
            path = f"/jobs?limit=50&cursor={cursor}"
        out["cursor walk"] = latency_figures(times)
        return out

    async def listings(self) -> dict[str, Any]:
        self.phase = "get-jobs"
        leader = await self.cut.find_leader(60)
        follower = self.cut.followers()[0]
        out: dict[str, Any] = {}
        for role, node_id in (("leader", leader), ("follower", follower)):
            for consistency in ("linearizable", "stale"):
                key = f"{role} {consistency}"
                figures = await self.listing(node_id, consistency)
                out[key] = {"node_id": node_id, **figures}
                print(
                    f"  GET /jobs on the {role} (node {node_id}), {consistency}: "
                    + ", ".join(f"{k} p50 {v['p50_ms']} ms" for k, v in figures.items()),
                    flush=True,
                )
        return out

    def disk(self) -> dict[str, dict[str, int]]:
        return {
            str(n): tree_use(os.path.join(self.cluster.workdir(n), "data"))
            for n in self.cluster.ids
        }

    # -- restarts ---------------------------------------------------------

    async def stop_all(self, how: str) -> dict[str, Any]:
        """SIGTERM (grace C{args.stop_grace_s}, then SIGKILL) or SIGKILL every node."""
        cluster = self.cluster
        began = time.monotonic()
        ended: dict[str, float] = {}
        note = None
        running = [n for n in cluster.ids if cluster.is_running(n)]
        for n in running:
            if how == "SIGTERM":
                cluster.node(n).signal("TERM")
            else:
                os.kill(self.cut.pid(n), signal.SIGKILL)
        deadline = began + (self.args.stop_grace_s if how == "SIGTERM" else 60)
        while time.monotonic() < deadline:
            for n in running:
                if str(n) not in ended and not cluster.is_running(n):
                    ended[str(n)] = round(time.monotonic() - began, 2)
            if len(ended) == len(running):
                break
            await sleep(0.05)
        late = [n for n in running if cluster.is_running(n)]
        if late:
            note = f"nodes {late} had not ended {self.args.stop_grace_s:g} s after {how}: SIGKILLed"
            print(f"  {note}", flush=True)
            for n in late:
                await cluster.kill(n)
        stop_s = round(time.monotonic() - began, 2)
        return {"stop_s": stop_s, "per_node_stop_s": ended, "note": note}

    async def restart(self, how: str) -> dict[str, Any]:
        """
        Stop every node (SIGTERM or SIGKILL), start them all again on their
        data; time to each health check, to an agreed leader, to the first
        canary callback and to every canary firing again.
        """
        cluster = self.cluster
        self.phase = f"stop-{how.lower()}"
        stopped = await self.stop_all(how)
        await self.pool.closeCachedConnections()
        self.phase = f"restart-{how.lower()}"
        for n in cluster.ids:
            cluster.node(n).twistd_args = profile_args(self.profile_path(f"after-{how.lower()}", n))
        self.receiver.mark()
        spawned = time.time()
        for n in cluster.ids:
            cluster.node(n).spawn()
        healthy: dict[str, float] = {}
        latest: dict[int, dict | None] = {n: None for n in cluster.ids}
        found: dict[str, Any] = {}
        deadline = time.monotonic() + self.args.restart_timeout_s

        async def poll(n: int) -> None:
            # One poller per node, so a node slow to answer does not delay
            # what the others show (the leader is judged on every answer).
            while "leader" not in found or len(healthy) < len(cluster.ids):
                if "failed" in found:
                    return
                if not cluster.is_running(n):
                    found["failed"] = n
                    raise RuntimeError(f"node {n} exited after the {how} restart\n{cluster.logs()}")
                if time.monotonic() > deadline:
                    found["failed"] = n
                    raise TimeoutError(
                        f"after the {how} restart: healthy {healthy}, leader "
                        f"{found.get('leader')} within {self.args.restart_timeout_s:g} s\n"
                        f"{cluster.logs()}"
                    )
                answer = await cluster.health(n, timeout=2.0)
                now = time.time()
                if answer is not None:
                    healthy.setdefault(str(n), round(now - spawned, 2))
                    latest[n] = answer
                    if "leader" not in found:
                        leader = leader_of(latest)
                        if leader is not None:
                            found.update(leader=leader, at=now)
                await sleep(0.05)

        try:
            await gatherResults(
                [Deferred.fromCoroutine(poll(n)) for n in cluster.ids], consumeErrors=True
            )
        except FirstError as e:
            e.subFailure.raiseException()
        leader, leader_at = found["leader"], found["at"]
        self.cut.leader_id = leader
        timeout = self.args.restart_timeout_s
        await wait_until(lambda: _now(self.receiver.first()), timeout, "a canary callback")
        await wait_until(
            lambda: _now(self.receiver.all_of(self.canaries)), timeout, "every canary to fire"
        )
        first_at = self.receiver.first()
        every_at = self.receiver.all_of(self.canaries)
        assert first_at is not None and every_at is not None and leader_at is not None
        await sleep(2)
        out = {
            **stopped,
            "leader_id": leader,
            "to_healthcheck_s": healthy,
            "to_leader_s": round(leader_at - spawned, 2),
            "to_leader_note": "first health-check answers showing an agreed leader; a node's "
            "HTTP API starts only once it has loaded its jobs, so the election itself may be "
            "earlier (see the nodes' INFO logs)",
            "to_first_canary_s": round(first_at - spawned, 2),
            "to_every_canary_s": round(every_at - spawned, 2),
            "rss_bytes": self.rss_all(),
        }
        print(f"  after {how} of every node: {out}", flush=True)
        return out

    # -- the run ----------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        args = self.args
        self.result.update(
            {
                "scenario": "scale",
                "nodes": args.nodes,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_average_at_start": os.getloadavg(),
                    "python": sys.version.split()[0],
                },
                "goals": GOALS,
                "cluster": f"{args.nodes} nodes on 127.0.0.1, direct links (bench/cluster.py)",
            }
        )
        try:
            await self.setup()
            print(
                f"creating {args.jobs:,} jobs ({args.canaries} canaries @every 1s) on the leader,"
                f" node {self.cut.leader_id} of {args.nodes}",
                flush=True,
            )
            await self.create()
            c = self.result["create"]
            print(f"  {c['seconds']} s, {c['jobs_per_s']:,} jobs/s", flush=True)
            self.phase = "spread"
            self.result["spread"] = await self.wait_spread(args.restart_timeout_s)
            print(f"  ownership spread after {self.result['spread']['seconds']} s", flush=True)
            self.result["after_create"] = await self.settle()
            print(f"  RSS {_mib(self.result['after_create']['rss_bytes'])}", flush=True)
            self.result["get_jobs"] = await self.listings()
            self.result["disk_bytes"] = self.disk()
            self.result["restart_sigterm"] = await self.restart("SIGTERM")
            self.result["restart_sigkill"] = await self.restart("SIGKILL")
            self.result["disk_bytes_end"] = self.disk()
        except (Exception, SystemExit) as e:
            # A failed run is a result too: keep what was measured and why it stopped.
            self.result["error"] = f"{type(e).__name__} in phase {self.phase!r}: {e}"
            print(f"FAILED in phase {self.phase!r}: {e}", file=sys.stderr, flush=True)
            if self.cut is not None and self.cut.cluster is not None:
                self.result["rss_at_failure_bytes"] = self.rss_all()
                self.result["roles_terms_at_failure"] = await self.term()
                try:
                    await self.cut.find_leader(20)
                    self.result["jobs_stored_at_failure"] = await self.stored_jobs()
                except Exception as e2:
                    self.result["jobs_stored_at_failure"] = repr(e2)
                self.result["log_tail"] = self.cut.logs(60)
        finally:
            self.sample()
            if self._sampler is not None and self._sampler.running:
                self._sampler.stop()
            if self.cut is not None:
                await self.cut.stop(self.args.stop_grace_s)
                if self.cut.stop_note:
                    self.result["final_stop_note"] = self.cut.stop_note
            await self.pool.closeCachedConnections()
            if self.receiver.port is not None:
                await self.receiver.port.stopListening()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.result["bench_process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
        self.result["receiver_items"] = self.receiver.items
        self.result["rss_timeline_mib"] = self.timeline
        if "error" not in self.result:
            self.result["verdict"] = cluster_verdict(self.result)
        return self.result


def _mib(per_node: dict[str, int | None]) -> str:
    return ", ".join(
        f"node {n} {'-' if v is None else f'{v / 2**20:.0f}'} MiB" for n, v in per_node.items()
    )


def _top_term(roles: dict[str, Any]) -> int | None:
    """The highest Raft term any node reported (None: no node answered)."""
    terms = [v["term"] for v in roles.values() if v and v.get("term") is not None]
    return max(terms, default=None)


def cluster_verdict(result: dict) -> dict:
    """The goals, per node: the largest RSS of any node, the slowest way back to firing."""
    steady = [
        v
        for key in ("after_create", "restart_sigterm", "restart_sigkill")
        for v in result[key]["rss_bytes"].values()
        if v is not None
    ]
    peak_seen = max(
        [v or 0 for v in result["create"]["node_rss_peak_seen_bytes"].values()]
        + [
            round((row.get(n) or 0) * 2**20)
            for row in result.get("rss_timeline_mib", [])
            for n in map(str, range(1, result["nodes"] + 1))
        ]
    )
    firing = max(
        result["restart_sigterm"]["to_every_canary_s"],
        result["restart_sigkill"]["to_every_canary_s"],
    )
    scale = result["create"]["jobs"] / GOALS["jobs"]
    return {
        "rss_max_bytes": max(steady),
        "rss_ok": max(steady) <= GOALS["rss_bytes"],
        "rss_peak_seen_bytes": peak_seen,
        "rss_peak_ok": peak_seen <= GOALS["rss_bytes"],
        "create_ok": result["create"]["seconds"] <= GOALS["create_s"] * scale,
        "restart_to_firing_ok": firing <= GOALS["restart_to_firing_s"],
        "jobs_exact": result["create"]["jobs_extra"] == 0,
        "note": "create goal scaled to the job count (2 min per million); RSS per node: the "
        "largest of any node after creation and after each restart (rss_ok), and the largest "
        "sampled at any time (rss_peak_ok)",
    }


def print_cluster_table(result: dict) -> None:
    """The cluster run's figures, one row per figure, a column per node where it has one."""
    mib = 2**20
    ids = [str(n) for n in range(1, result["nodes"] + 1)]
    rows: list[tuple[str, str, str]] = []

    def per_node(values: dict[str, Any], form: Any) -> str:
        return " / ".join("-" if values.get(n) is None else form(values[n]) for n in ids)

    def rss(v: int) -> str:
        return f"{v / mib:.0f}"

    c = result.get("create")
    if c:
        rows.append(
            (
                "jobs created (leader before / after)",
                f"{c['jobs']:,} (node {c['on_node']} / node {c['leader_after']})",
                "1,000,000",
            )
        )
        rows.append(("creation", f"{c['seconds']} s ({c['jobs_per_s']:,}/s)", "<= 120 s per 1M"))
        b = c["batch_latency_ms"]
        rows.append(("POST /jobs batch latency", f"p50 {b['p50']} ms, max {b['max']} ms", ""))
        rows.append(("503 answers (retried)", str(c["answers_503"]), "0"))
        stored = f"{c['jobs_stored']:,} / {c['jobs_extra']:,}"
        rows.append(("jobs stored / extra", stored, "extra 0"))
        during = c["canaries_during_creation"]
        lateness, gap = during["lateness_ms"], during["longest_gap_per_canary_s"]
        rows.append(
            (
                "canaries during creation: late",
                f"p50 {lateness['p50']} ms, p99 {lateness['p99']} ms, max {lateness['max']} ms",
                "",
            )
        )
        rows.append(
            (
                "canaries during creation: gap",
                f"longest per canary p50 {gap['p50']} s, max {gap['max']} s",
                "1 s",
            )
        )
        rows.append(
            (
                "canary slots delivered / expected",
                f"{during['slots_delivered']:,} / ~{during['slots_expected_about']:,}",
                "",
            )
        )
        rows.append(
            (
                "Raft term before / after creation",
                f"{_top_term(c['roles_terms_before'])} / {_top_term(c['roles_terms_after'])}",
                "",
            )
        )
        rows.append(("node CPU during creation s", per_node(c["node_cpu_s"], str), ""))
        peak = per_node(c["node_rss_peak_seen_bytes"], rss)
        rows.append(("RSS peak seen, creation MiB", peak, ""))
    if "spread" in result:
        s = result["spread"]
        rows.append(("ownership spread after", f"{s['seconds']} s", ""))
        rows.append(("jobs owned", per_node(s["owned"], lambda v: f"{v:,}"), ""))
    if "after_create" in result:
        after = per_node(result["after_create"]["rss_bytes"], rss)
        rows.append(("RSS after creation MiB", after, "<= 1024"))
    for how in ("sigterm", "sigkill"):
        r = result.get(f"restart_{how}")
        if not r:
            continue
        rows.append((f"{how.upper()} all: stop", f"{r['stop_s']} s", ""))
        rows.append((f"{how.upper()}: healthy s", per_node(r["to_healthcheck_s"], str), ""))
        rows.append(
            (
                f"{how.upper()}: leader / first / all",
                f"{r['to_leader_s']} / {r['to_first_canary_s']} / {r['to_every_canary_s']} s"
                f" (leader node {r['leader_id']})",
                "all <= 30 s",
            )
        )
        after = per_node(r["rss_bytes"], rss)
        rows.append((f"RSS after {how.upper()} restart MiB", after, "<= 1024"))
    for key, series in (result.get("get_jobs") or {}).items():
        for name, g in series.items():
            if name == "node_id":
                continue
            rows.append(
                (f"GET /jobs {key} (node {series['node_id']}) {name}",
                 f"p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms", "")
            )  # fmt: skip
    for n, files in (result.get("disk_bytes") or {}).items():
        total = sum(files.values())
        rows.append((f"disk node {n} (total)", f"{total / mib:.1f} MiB", ""))
        for name, size in files.items():
            if size >= mib:
                rows.append((f"  node {n} {name}", f"{size / mib:.1f} MiB", ""))
    failed = result.get("create_failed_after")
    if failed:
        rows.append(("creation FAILED after", f"{failed['seconds']} s", ""))
        rows.append(("jobs acknowledged", f"{failed['jobs_acknowledged']:,}", ""))
        rows.append(("jobs stored at failure", f"{result.get('jobs_stored_at_failure')}", ""))
        rows.append(("503 answers", str(failed.get("answers_503")), "0"))
        rows.append(
            ("Raft term at failure", str(_top_term(result.get("roles_terms_at_failure") or {})), "")
        )
    if "rss_at_failure_bytes" in result:
        rows.append(("RSS at failure MiB", per_node(result["rss_at_failure_bytes"], rss), ""))
    if not rows:
        rows.append(("(nothing measured)", "", ""))
    width = max(len(r[0]) for r in rows)
    print(f"\nscale on {result['nodes']} nodes (per-node columns: node {' / '.join(ids)})")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:<40} {goal}")
    if "error" in result:
        print(f"FAILED: {result['error']}")
    else:
        print(f"verdict: {result['verdict']}")


def print_cluster_profiles(folder: str, top: int = 25) -> None:
    """The nodes' saved stats: C{scale-create.node<id>} and C{scale-after-*-node<id>.prof}."""
    import pstats

    for name in sorted(os.listdir(folder)):
        if not (name.startswith("scale-create.node") or name.endswith(".prof")):
            continue
        print(f"\n== profile {name} (top {top} by own time) ==")
        pstats.Stats(os.path.join(folder, name)).sort_stats("tottime").print_stats(top)


def print_profiles(folder: str, top: int = 25) -> None:
    import pstats

    for name in sorted(os.listdir(folder)):
        if not name.endswith(".prof"):
            continue
        print(f"\n== profile {name} (top {top} by own time) ==")
        stats = pstats.Stats(os.path.join(folder, name))
        stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 jobs")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--canaries", type=int, default=300)
    parser.add_argument("--batch", type=int, default=10_000, help="jobs per POST /jobs")
    parser.add_argument("--in-flight", type=int, default=3, help="POST /jobs at once")
    parser.add_argument("--get-calls", type=int, default=50)
    parser.add_argument(
        "--retries", type=int, default=5,
        help="a cluster: times one POST /jobs answered 503 is sent again (0: fail at once)",
    )  # fmt: skip
    parser.add_argument("--json", dest="json_path", help="write the result here")
    parser.add_argument(
        "--profile", metavar="DIR", help="run the node under cProfile; stats go to DIR"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (BENCH_KEEP=1 does the same)"
    )
    parser.add_argument(
        "--sample-s", type=float, default=5.0, help="a cluster: RSS sampled this often (s)"
    )
    parser.add_argument(
        "--stop-grace-s", type=float, default=120.0,
        help="a cluster: SIGKILL a node this long after SIGTERM if it still runs",
    )  # fmt: skip
    parser.add_argument(
        "--restart-timeout-s", type=float, default=900.0,
        help="a cluster: longest wait for a leader, the spread of jobs and the canaries",
    )  # fmt: skip
    args = parser.parse_args()
    check_nodes(args.nodes)
    args.keep = args.keep or bool(os.environ.get("BENCH_KEEP"))
    if args.quick and args.jobs == 1_000_000:
        args.jobs = 100_000
    if args.jobs <= args.canaries:
        raise SystemExit("--jobs must be more than --canaries")

    async def go(_reactor: object) -> None:
        workdir = tempfile.mkdtemp(prefix="scale-")
        try:
            bench = Bench(args, workdir) if args.nodes == 1 else ClusterBench(args, workdir)
            result = await bench.run()
        finally:
            if args.keep:
                print(f"work dir kept: {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        if args.nodes == 1:
            print_table(result)
        else:
            print_cluster_table(result)
        os.makedirs(RESULTS_DIR, exist_ok=True)
        path = args.json_path or os.path.join(
            RESULTS_DIR, time.strftime("scale-%Y%m%dT%H%M%SZ.json", time.gmtime())
        )
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"results: {path}")
        if args.profile:
            (print_profiles if args.nodes == 1 else print_cluster_profiles)(args.profile)
        if "error" in result:
            raise SystemExit(1)

    react(lambda r: Deferred.fromCoroutine(go(r)))


if __name__ == "__main__":
    main()
