"""
What every benchmark scenario shares: machine facts, percentiles and
spreads, a table printer, the JSON result file, a node under test with its
jobs, and the analysis of what a receiver recorded against what was due.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from bench.receiver import Item
from harness.process import (
    REPO_ROOT,
    NodeProcess,
    client_headers,
    http_client,
    prepare_single_node,
    run_cli,
)

RESULTS_DIR = os.path.join(REPO_ROOT, "bench", "results")
CLUSTER_NEEDED = "runs on one node only (--nodes 1)"
MAX_JOBS_PER_REQUEST = 10_000
# The JSON file the last run_scenario() in this process wrote.
LAST_RESULT: dict[str, str] = {}


def sleep(reactor: Any, seconds: float) -> Deferred:
    """A Deferred that fires after C{seconds} of reactor time."""
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def within(reactor: Any, d: Deferred, seconds: float, what: str) -> Any:
    """Await C{d}, giving up with a clear TimeoutError after C{seconds}."""
    from twisted.internet.defer import TimeoutError as DeferredTimeout

    try:
        return await d.addTimeout(seconds, reactor)
    except DeferredTimeout:
        raise TimeoutError(f"{what}: nothing within {seconds:g} s") from None


async def credential_and_project(
    http: Any, url: str, workdir: str, config_path: str, name: str
) -> tuple[dict[str, str], str]:
    """
    A client credential made with the real CLI for the node of C{config_path}
    (its headers) and a project C{name} created with it on the node at C{url}.
    """
    out, err, code = await run_cli(
        workdir, "create", "credential", "--json", "--config", config_path
    )
    if code:
        raise SystemExit(f"create credential failed: {err}")
    credential = json.loads(out)
    headers = {
        "x-api-key": credential["api_key"],
        "x-secret-key": credential["api_secret"],
        "content-type": "application/json",
    }
    response = await http.post(
        url + "/projects",
        data=json.dumps({"name": name, "description": ""}).encode(),
        headers=headers,
    )
    return headers, (await response.json())["data"]["uuid"]


def scratch_dir(prefix: str) -> Any:
    """
    A work directory for one run's nodes, removed afterwards; with
    C{BENCH_KEEP=1} in the environment it is kept (and its path printed), so
    the nodes' logs can be read after the run.
    """
    if os.environ.get("BENCH_KEEP"):
        import contextlib
        import tempfile

        path = tempfile.mkdtemp(prefix=prefix)
        print(f"keeping the nodes' work directory: {path}", file=sys.stderr)
        return contextlib.nullcontext(path)
    import tempfile

    return tempfile.TemporaryDirectory(prefix=prefix)


def require_single_node(nodes: int, scenario: str = "this scenario") -> None:
    """Stop with one clear line when a one-node scenario is asked for more nodes."""
    if nodes != 1:
        raise SystemExit(f"--nodes {nodes}: {scenario} {CLUSTER_NEEDED}")


def check_nodes(nodes: int) -> None:
    """Stop with one clear line unless C{nodes} is 1 or a cluster size of 2 to 9."""
    if not 1 <= nodes <= 9:
        raise SystemExit(
            f"--nodes: invalid value {nodes}; expected 1 (one node) or 2..9 (a cluster)"
        )


# -- figures ------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile C{q} (0-100) of C{values}; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def distribution(values: list[float], digits: int = 2) -> dict[str, Any]:
    """n, p50, p99, max (and min, mean) of one run's samples."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None, "min": None, "mean": None}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": round(ordered[0], digits),
        "p50": round(percentile(ordered, 50), digits),
        "p99": round(percentile(ordered, 99), digits),
        "max": round(ordered[-1], digits),
        "mean": round(statistics.fmean(ordered), digits),
    }


def spread(values: Iterable[float | None], digits: int = 2) -> dict[str, Any]:
    """min/median/max of one figure over repeated trials."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return {"trials": 0, "min": None, "median": None, "max": None}
    return {
        "trials": len(present),
        "min": round(min(present), digits),
        "median": round(statistics.median(present), digits),
        "max": round(max(present), digits),
    }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table of C{rows} (dicts) in C{columns} order."""
    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells)
    return "\n".join(lines)


# -- machine and results ------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """Cores, CPU model, memory, Python, Twisted, git commit and load at the start."""
    import twisted

    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        facts["cpu_model"] = models[0] if models else None
    except OSError:
        facts["cpu_model"] = None
    try:
        import psutil

        facts["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        facts["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        facts["git_dirty"] = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        facts["git_commit"] = None
    return facts


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_result(scenario: str, result: dict[str, Any], machine: dict[str, Any]) -> str:
    """Write C{bench/results/<scenario>-<UTC stamp>.json} and return its path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{scenario}-{utc_stamp()}.json")
    with open(path, "w") as f:
        json.dump({"scenario": scenario, "machine": machine, **result}, f, indent=2)
    return path


# -- the node under test ------------------------------------------------------


@attrs.frozen
class Job:
    """A created job: its uuid and the instant its @every slots count from (epoch ms)."""

    uuid: str
    anchor_ms: int
    path: str


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _epoch_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class ProcessMeter:
    """CPU seconds and RSS of one process (psutil), read between two marks."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.mark()

    def mark(self) -> None:
        times = self.process.cpu_times()
        self._cpu0 = times.user + times.system
        self._wall0 = time.monotonic()
        self.peak_rss = self.process.memory_info().rss

    def sample_rss(self) -> None:
        self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)

    def read(self) -> dict[str, float]:
        times = self.process.cpu_times()
        cpu = times.user + times.system - self._cpu0
        wall = time.monotonic() - self._wall0
        rss = self.process.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        return {
            "cpu_s": round(cpu, 2),
            "cpu_percent_of_one_core": round(100 * cpu / wall, 1) if wall > 0 else 0.0,
            "rss_mib": round(rss / 2**20, 1),
            "peak_rss_mib": round(self.peak_rss / 2**20, 1),
        }


def profile_args(path: str | None) -> tuple[str, ...]:
    """twistd options that run the node under cProfile and save the stats to C{path}."""
    if not path:
        return ()
    return (f"--profile={os.path.abspath(path)}", "--profiler=cprofile", "--savestats")


def _short_path(filename: str) -> str:
    if filename.startswith(REPO_ROOT):
        return os.path.relpath(filename, REPO_ROOT)
    return os.path.basename(filename)


def profile_top(path: str, limit: int = 25) -> list[dict[str, Any]]:
    """The top entries of a saved cProfile file by own time, with their cumulative time."""
    import pstats

    stats = pstats.Stats(path)
    total = stats.total_tt or 1.0  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short_path(filename)}:{line}({name})",
                "calls": calls,
                "own_s": round(tottime, 3),
                "own_percent": round(100 * tottime / total, 1),
                "cumulative_s": round(cumtime, 3),
            }
        )
    rows.sort(key=lambda r: r["own_s"], reverse=True)
    return rows[:limit]


def profile_top_cumulative(
    path: str, limit: int = 25, only_project: bool = True
) -> list[dict[str, Any]]:
    """The project's own functions by cumulative time (where the node's time goes)."""
    import pstats

    stats = pstats.Stats(path)
    total = stats.total_tt or 1.0  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if only_project and "/scheduler0/" not in filename:
            continue
        rows.append(
            {
                "function": f"{os.path.relpath(filename, REPO_ROOT)}:{line}({name})",
                "calls": calls,
                "own_s": round(tottime, 3),
                "cumulative_s": round(cumtime, 3),
                "cumulative_percent": round(100 * cumtime / total, 1),
            }
        )
    rows.sort(key=lambda r: r["cumulative_s"], reverse=True)
    return rows[:limit]


class JobsClient:
    """
    What a node under test and a cluster under test share: creating the
    bench project's jobs and counting skipped executions through
    C{self.api_url} with C{self.headers} (C{self._client} a treq client).
    """

    reactor: Any
    headers: dict[str, str]
    project_uuid: str
    jobs: list[Job]
    _client: Any

    @property
    def api_url(self) -> str:
        raise NotImplementedError

    async def create_project(self) -> None:
        """Create the project every bench job belongs to."""
        response = await self._client.post(
            self.api_url + "/projects",
            json={"name": "bench", "description": "benchmark"},
            headers=self.headers,
        )
        if response.code != 201:
            raise RuntimeError(f"creating the project: {response.code} {await response.text()}")
        self.project_uuid = (await response.json())["data"]["uuid"]

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
        Create C{count} more jobs spread round-robin over C{urls} paths
        (C{path} with C{n} from 0 to C{urls} - 1); return the seconds it
        took. With C{phases} > 1 they are created in that many groups spaced
        evenly over one second, so their @every anchors (their creation
        instants) are spread over the second instead of all equal.
        """
        started = time.monotonic()
        first = len(self.jobs)
        size = min(MAX_JOBS_PER_REQUEST, max(1, math.ceil(count / phases)))
        for start in range(first, first + count, size):
            if phases > 1 and start > first:
                await sleep(self.reactor, 1.0 / phases)
            end = min(first + count, start + size)
            body = [
                {
                    "project_uuid": self.project_uuid,
                    "name": f"job-{i}",
                    "spec": spec,
                    "callback_url": f"http://127.0.0.1:{receiver_port}" + path.format(n=i % urls),
                }
                for i in range(start, end)
            ]
            response = await self._client.post(
                self.api_url + "/jobs", json=body, headers=self.headers, timeout=120
            )
            # treq's timeout ends at the response head; an overloaded node can
            # send the head and stall in the body.
            text = await within(self.reactor, response.text(), 120, "the POST /jobs answer body")
            if response.code != 201:
                raise RuntimeError(f"creating jobs: {response.code} {text}")
            for job in json.loads(text)["data"]:
                anchor = job.get("anchor_at") or job["created_at"]
                self.jobs.append(
                    Job(job["uuid"], _epoch_ms(anchor), "/" + job["callback_url"].split("/", 3)[3])
                )
        return time.monotonic() - started

    async def skipped(self, since: str | None = None, pages: int = 20) -> dict[str, Any]:
        """Executions recorded C{skipped}: the total and the count per reason (first pages)."""
        reasons: Counter[str] = Counter()
        total = 0
        offset = 0
        for _ in range(pages):
            params = {"state": "skipped", "limit": "1000", "offset": str(offset)}
            if since:
                params["since"] = since
            started = time.monotonic()
            try:
                response = await self._client.get(
                    self.api_url + "/executions", params=params, headers=self.headers, timeout=30
                )
            except Exception as e:
                return {
                    "error": f"GET /executions?state=skipped: {e!r} "
                    f"after {time.monotonic() - started:.1f} s"
                }
            try:
                text = await within(self.reactor, response.text(), 30, "the executions page")
            except Exception as e:
                return {"error": f"GET /executions?state=skipped: {e}"}
            if response.code != 200:
                return {"error": f"{response.code} {text}"}
            data = json.loads(text)["data"]
            total = data.get("total", 0)
            for execution in data["items"]:
                reasons[execution.get("skip_reason") or "unknown"] += 1
            offset += len(data["items"])
            if not data["items"] or offset >= total:
                break
        return {
            "total": total,
            "by_reason": dict(reasons),
            "reasons_counted": sum(reasons.values()),
        }


@attrs.define(eq=False)
class NodeUnderTest(JobsClient):
    """One fresh single node (a real C{twistd scheduler0} process) with a project and a client."""

    reactor: Any
    workdir: str
    profile: str | None = None
    extra_config: str = "LogLevel: WARN\n"
    node: NodeProcess | None = None
    headers: dict[str, str] = attrs.field(factory=dict)
    project_uuid: str = ""
    jobs: list[Job] = attrs.field(factory=list)
    meter: ProcessMeter | None = None
    stop_note: str | None = None
    _client: Any = None

    async def start(self) -> None:
        for attempt in range(3):
            # A fresh config (fresh free ports) per attempt: another process on
            # the machine may take a port between choosing it and binding it.
            self.node = await prepare_single_node(self.reactor, self.workdir, self.extra_config)
            self.node.twistd_args = profile_args(self.profile)
            try:
                await self.node.start(timeout=60)
                break
            except Exception as e:
                await self.node.stop()
                log_tail = _tail(os.path.join(self.workdir, f"node-{self.node.starts}.log"))
                if attempt == 2:
                    raise RuntimeError(f"the node did not start: {e}\n{log_tail}") from e
                print(f"node start failed, retrying: {e}\n{log_tail}", file=sys.stderr)
        self.meter = ProcessMeter(self.node._transport.pid)
        self.headers = await client_headers(self.node)
        self._client = http_client(self.reactor)
        await self.create_project()

    @property
    def api_url(self) -> str:
        return self.node.url

    async def stop(self, grace_s: float = 60.0) -> None:
        """SIGTERM the node; SIGKILL it if still running C{grace_s} later (see C{stop_note})."""
        node = self.node
        if node is None or node._watch is None or node._watch.ended.called:
            return
        started = time.monotonic()
        node.signal("TERM")
        while not node._watch.ended.called and time.monotonic() - started < grace_s:
            await sleep(self.reactor, 0.2)
        if not node._watch.ended.called:
            self.stop_note = f"the node had not ended {grace_s:g} s after SIGTERM: SIGKILLed"
            print(self.stop_note, file=sys.stderr)
            await node.kill()


# -- analysis -----------------------------------------------------------------


def expected_slots(jobs: list[Job], t0: float, t1: float, period_ms: int = 1000) -> int:
    """How many @every slots of C{jobs} fall in [t0, t1) (epoch seconds)."""
    a, b = round(t0 * 1000), round(t1 * 1000)
    total = 0
    for job in jobs:
        # k with a <= anchor + k*period < b, k >= 1
        first = max(1, -((job.anchor_ms - a) // period_ms))
        last = (b - 1 - job.anchor_ms) // period_ms
        if last >= first:
            total += last - first + 1
    return total


def analyse(items: list[Item], jobs: list[Job], t0: float, t1: float) -> dict[str, Any]:
    """
    Lateness, missed and duplicated slots of the slots scheduled in [t0, t1),
    from every item that arrived up to the end of the drain.
    """
    in_window = [i for i in items if t0 <= i.scheduled_at < t1]
    seen: Counter[str] = Counter(i.execution_id for i in in_window)
    known = {job.uuid for job in jobs}
    expected = expected_slots(jobs, t0, t1)
    delivered = len(seen)
    lateness_ms = [(i.arrival - i.scheduled_at) * 1000 for i in in_window]
    first_lateness: dict[str, float] = {}
    for i in in_window:
        late = (i.arrival - i.scheduled_at) * 1000
        if i.execution_id not in first_lateness or late < first_lateness[i.execution_id]:
            first_lateness[i.execution_id] = late
    seconds = t1 - t0
    return {
        "window_s": round(seconds, 3),
        "expected_slots": expected,
        "delivered_slots": delivered,
        "missed_slots": max(0, expected - delivered),
        "duplicated_slots": sum(1 for n in seen.values() if n > 1),
        "duplicate_deliveries": sum(n - 1 for n in seen.values() if n > 1),
        "unknown_job_items": sum(1 for i in in_window if i.job_uuid not in known),
        "retried_items": sum(1 for i in in_window if i.attempt > 1),
        "late_over_1s": sum(1 for v in first_lateness.values() if v > 1000),
        "executions_per_s": round(delivered / seconds, 1) if seconds > 0 else None,
        "lateness_ms": distribution(lateness_ms),
    }


def print_json_path(path: str) -> None:
    print(f"results: {os.path.relpath(path, REPO_ROOT)}", file=sys.stdout)


# -- running a scenario -------------------------------------------------------


def run_scenario(
    name: str,
    description: str,
    add_arguments: Any,
    scenario: Any,
    argv: list[str] | None,
    cluster: bool = False,
    node_counts: list[int] | None = None,
) -> None:
    """
    Parse C{argv}, run C{await scenario(reactor, args)} under C{react},
    print its C{text}, and write its result (with the machine facts) as JSON.
    C{cluster}: the scenario runs on C{--nodes N} > 1 too. C{node_counts}:
    C{--nodes} is a list of sizes (this default), each measured in turn.
    """
    import argparse

    from twisted.internet.task import react

    parser = argparse.ArgumentParser(prog=f"python -m bench {name}", description=description)
    if node_counts is not None:
        parser.add_argument(
            "--nodes",
            type=int,
            nargs="+",
            default=node_counts,
            help="sizes measured one after the other, each fresh: 1 is one node, N > 1 a "
            f"cluster of N nodes on 127.0.0.1 (default {' '.join(map(str, node_counts))})",
        )
    else:
        parser.add_argument(
            "--nodes",
            type=int,
            default=1,
            help="1: one node; N > 1: a cluster of N nodes on 127.0.0.1"
            if cluster
            else "only 1 for this scenario",
        )
    parser.add_argument(
        "--quick", action="store_true", help="the short version used by `all --quick`"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if node_counts is not None:
        for nodes in args.nodes:
            check_nodes(nodes)
    elif cluster:
        check_nodes(args.nodes)
    else:
        require_single_node(args.nodes, name)
    machine = machine_facts()

    async def go(reactor: Any) -> None:
        result = await scenario(reactor, args)
        text = result.pop("text", "")
        result["arguments"] = {k: v for k, v in vars(args).items()}
        path = write_result(name, result, machine)
        LAST_RESULT["path"] = path
        print(text)
        print_json_path(path)

    react(lambda reactor: Deferred.fromCoroutine(go(reactor)))
