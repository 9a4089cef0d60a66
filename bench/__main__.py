"""
The benchmark suite of issue 5, one command per scenario:

    python -m bench <scenario> [options]     (python -m bench <scenario> --help)
    python -m bench all [--quick]

Scenarios: precision, throughput, cpu, scale, failover, api, raft, peers, auth, idle,
history, recovery, degraded, disk, labels.
precision, throughput, scale and api take --nodes N (N > 1: a cluster of N nodes on
127.0.0.1, bench/cluster.py); failover always runs on a cluster (3 nodes by
default); cpu takes a list of sizes (--nodes 1 3 5, the default) and
measures each on a fresh node or cluster, and so does idle (--nodes 3 5).
Each prints a table and writes bench/results/<scenario>-<UTC stamp>.json
with the machine facts. `all` runs
each in a process of its own, one after the other (`--quick`: the whole run
in about 5.5 minutes before cpu was added, failover with 2 kills of each
kind), and ends with a summary of what ran.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.common import CLUSTER_NEEDED, machine_facts, print_json_path, table, write_result

ORDER = [
    "precision", "throughput", "cpu", "scale", "failover", "api", "raft", "peers", "auth", "idle",
    "history", "recovery", "degraded", "disk", "labels",
]  # fmt: skip
OWN = {
    "precision", "throughput", "cpu", "failover", "peers", "idle", "history", "recovery",
    "degraded", "disk", "labels",
}  # fmt: skip
EXTERNAL = {"scale": "bench.scale", "api": "bench.api"}
HELP = {
    "precision": "scenario 1: lateness/missed/duplicates of N jobs @every 1s (--nodes N)",
    "throughput": "scenario 2: highest sustained executions/s, jobs raised in steps (--nodes N)",
    "cpu": "CPU per delivered execution of 1, 3 and 5 nodes in one run (--nodes 1 3 5)",
    "scale": "scenario 3: a million jobs (bench/scale.py, --nodes N)",
    "failover": "scenario 4: SIGKILL the leader, then a follower, of a cluster under load",
    "api": "scenario 5: API creates/s and reads/s, leader and follower (bench/api.py, --nodes N)",
    "raft": "Raft layer: committed writes/s (+ PySyncObj when installed) and failover",
    "peers": "scenario 6: APScheduler 3.x next to Scheduler0 in the same run",
    "auth": "cost of authenticating one API request, and of a failed one (--flood: a real node)",
    "idle": "CPU of idle clusters with no jobs, all nodes summed (--nodes 3 5)",
    "history": "GET /executions with every filter over 1,000,000 jobs' records (--nodes N)",
    "recovery": "seconds until lateness is normal again after an overload ends (--nodes N)",
    "degraded": "slow and hung callback URLs beside a fast one: is anything else late?",
    "disk": "bytes on disk per job at 1,000,000 jobs, and the WAL peak of a 3 MB batch",
    "labels": "GET /jobs?selector= over 1,000,000 labelled jobs: p50/p99, the index's bytes",
}


def usage() -> str:
    lines = [__doc__.strip(), "", "scenarios:"]
    lines += [f"  {name:<11} {HELP[name]}" for name in ORDER]
    lines.append(f"  {'all':<11} every scenario in turn; --quick for the short versions")
    return "\n".join(lines)


def _python_module(module: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False
    )


def _option(argv: list[str], name: str, default: str) -> str:
    if name in argv:
        return argv[argv.index(name) + 1]
    return default


def _nodes_check(name: str, argv: list[str]) -> None:
    nodes = int(_option(argv, "--nodes", "1"))
    if nodes != 1:
        raise SystemExit(f"--nodes {nodes}: {name} {CLUSTER_NEEDED}")


def raft(argv: list[str]) -> int:
    """The Raft layer's own benchmarks (bench/raft_throughput.py, bench/raft_failover.py)."""
    if "-h" in argv or "--help" in argv:
        print(
            "python -m bench raft [--quick] [--nodes 3] [--seconds 10] [--trials 20]\n"
            "Committed writes/s and latency of a 3-process Raft cluster at 1 and 64 clients "
            "(next to PySyncObj when `pip install pysyncobj` is done), and the time to the "
            "next commit after SIGKILL of the leader."
        )
        return 0
    quick = "--quick" in argv
    nodes = _option(argv, "--nodes", "3")
    seconds = _option(argv, "--seconds", "3" if quick else "10")
    trials = _option(argv, "--trials", "3" if quick else "20")
    impls = ["scheduler0"]
    if importlib.util.find_spec("pysyncobj") is not None:
        impls.append("pysyncobj")
    else:
        print("raft: PySyncObj is not installed (pip install pysyncobj), Scheduler0 only")
    result: dict[str, Any] = {
        "load": {"nodes": int(nodes), "seconds": float(seconds), "trials": int(trials)}
    }
    done = _python_module(
        "bench.raft_throughput",
        ["--nodes", nodes, "--clients", "1", "64", "--seconds", seconds, "--impl", *impls],
    )
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        return done.returncode
    result["throughput"] = json.loads(done.stdout)["results"]
    rows = [
        {"impl": impl, "clients": r["clients"], "writes/s": r["writes_per_s"],
         "p50 ms": r["latency_ms"]["p50"], "p99 ms": r["latency_ms"]["p99"], "failed": r["failed"]}
        for impl, runs in result["throughput"].items() for r in runs
    ]  # fmt: skip
    failover_runs = {}
    for impl in impls:
        done = _python_module(
            "bench.raft_failover", ["--nodes", nodes, "--trials", trials, "--impl", impl]
        )
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        failover_runs[impl] = json.loads(done.stdout)
    result["failover"] = failover_runs
    text = f"raft: {nodes} processes on 127.0.0.1, {seconds} s per concurrency\n" + table(
        rows, ["impl", "clients", "writes/s", "p50 ms", "p99 ms", "failed"]
    )
    text += f"\n\nraft failover: SIGKILL the leader, seconds to the next commit, {trials} trials\n"
    text += table(
        [{"impl": impl, **{k: v for k, v in r["seconds_to_next_commit"].items()}}
         for impl, r in failover_runs.items()],
        ["impl", "p50", "p99", "max"],
    )  # fmt: skip
    print(text)
    print_json_path(write_result("raft", result, machine_facts()))
    return 0


def auth(argv: list[str]) -> int:
    """bench/auth.py: the cost of authenticating one request, and of a failed one; --flood."""
    if "-h" in argv or "--help" in argv:
        print(
            "python -m bench auth [--quick] [--requests 20000]: " + HELP["auth"] + "\n"
            "python -m bench auth --flood [--seconds 10]: a real node flooded from 8 clients "
            "with wrong secrets, then unknown keys, beside a legitimate client"
        )
        return 0
    if "--flood" in argv:
        seconds = _option(argv, "--seconds", "3" if "--quick" in argv else "10")
        done = _python_module("bench.auth", ["--flood", "--seconds", seconds])
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        result = json.loads(done.stdout)
        columns = [
            "kind", "idle_p95_ms", "flood_p95_ms", "within_goal", "node_cpu_percent",
            "flood_requests_per_s", "statuses",
        ]  # fmt: skip
        print(
            f"auth --flood: 8 clients for {seconds} s each, beside one legitimate client "
            "(goal: flood p95 <= 3 x idle p95 + 5 ms)\n" + table(result["floods"], columns)
        )
        print_json_path(write_result("auth-flood", result, machine_facts()))
        return 0
    requests = _option(argv, "--requests", "5000" if "--quick" in argv else "20000")
    done = _python_module("bench.auth", ["--requests", requests])
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        return done.returncode
    result = json.loads(done.stdout)
    print(
        f"auth: {requests} authenticated requests after a first use\n"
        + table(
            [
                {
                    "first use ms": result["first_use_ms"],
                    **{f"after {k} ms": v for k, v in result["after_first_use_ms"].items()},
                }
            ],
            ["first use ms", "after mean ms", "after p50 ms", "after p99 ms"],
        )  # fmt: skip
    )
    failures = [
        {"failed request": name, **cost}
        for name, cost in result["failure_cost_per_request"].items()
    ]
    print(
        "\nauth: CPU per failed request, same run (before: pbkdf2 per wrong secret)\n"
        + table(failures, ["failed request", "cpu_us", "wall_us", "status"])
    )
    print_json_path(write_result("auth", result, machine_facts()))
    return 0


def external(name: str, argv: list[str]) -> int:
    """A scenario another module provides (bench/scale.py, bench/api.py), when it exists."""
    module = EXTERNAL[name]
    if importlib.util.find_spec(module) is None:
        print(f"{name}: {module} is not there yet, skipped")
        return 0
    return subprocess.run([sys.executable, "-m", module, *argv], check=False).returncode


def run_one(name: str, argv: list[str]) -> int:
    if name in OWN:
        module = importlib.import_module(f"bench.{name}")
        try:
            module.main(argv)
        except SystemExit as e:
            if e.code not in (None, 0):
                print(e.code if isinstance(e.code, str) else f"exit {e.code}", file=sys.stderr)
                return e.code if isinstance(e.code, int) else 2
        return 0
    if name in ("raft", "auth"):
        if name == "auth":
            _nodes_check(name, argv)
        return {"raft": raft, "auth": auth}[name](argv)
    return external(name, argv)


def run_all(argv: list[str]) -> int:
    """Every scenario in turn, each in a process of its own."""
    quick = "--quick" in argv
    summary = []
    started_all = time.monotonic()
    for name in ORDER:
        print(f"\n=== {name}{' (quick)' if quick else ''} ===", flush=True)
        started = time.monotonic()
        code = subprocess.run(
            [sys.executable, "-m", "bench", name, *(["--quick"] if quick else [])], check=False
        ).returncode
        summary.append(
            {"scenario": name, "exit": code, "seconds": round(time.monotonic() - started, 1)}
        )
    print("\n=== summary ===")
    print(table(summary, ["scenario", "exit", "seconds"]))
    print(f"all: {time.monotonic() - started_all:.0f} s")
    return 1 if any(s["exit"] for s in summary) else 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "all":
        return run_all(rest)
    if name not in ORDER:
        print(f"unknown scenario {name!r}; choose from: {', '.join(ORDER)}, all", file=sys.stderr)
        return 2
    return run_one(name, rest)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
