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
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from typing import Any

import psutil
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import react
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from bench.common import percentile
from scheduler0.api.validation import encode_cursor
from scheduler0.testing.process import REPO_ROOT, NodeProcess, free_port

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


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args = args
        self.workdir = workdir
        self.receiver = CanaryReceiver()
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 8
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.pool = pool
        self.node: NodeProcess | None = None
        self.headers: dict[str, str] = {}
        self.canaries: list[str] = []
        self.result: dict[str, Any] = {}

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
    parser.add_argument("--json", dest="json_path", help="write the result here")
    parser.add_argument(
        "--profile", metavar="DIR", help="run the node under cProfile; stats go to DIR"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args()
    if args.nodes != 1:
        raise SystemExit(
            f"--nodes {args.nodes}: scale runs on one node only (--nodes 1); a million jobs "
            "on a cluster is not part of this suite yet"
        )
    if args.quick and args.jobs == 1_000_000:
        args.jobs = 100_000
    if args.jobs <= args.canaries:
        raise SystemExit("--jobs must be more than --canaries")

    async def go(_reactor: object) -> None:
        workdir = tempfile.mkdtemp(prefix="scale-")
        try:
            result = await Bench(args, workdir).run()
        finally:
            if args.keep:
                print(f"work dir kept: {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        print_table(result)
        os.makedirs(RESULTS_DIR, exist_ok=True)
        path = args.json_path or os.path.join(
            RESULTS_DIR, time.strftime("scale-%Y%m%dT%H%M%SZ.json", time.gmtime())
        )
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"results: {path}")
        if args.profile:
            print_profiles(args.profile)

    react(lambda r: Deferred.fromCoroutine(go(r)))


if __name__ == "__main__":
    main()
