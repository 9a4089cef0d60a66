"""
Label selectors at scale (issue 19): C{GET /jobs?selector=...} on one real
node holding a million labelled jobs, and what the label index costs on disk.

    python -m bench labels [--jobs 1000000] [--quick] [--requests 200] [--batch 10000]

A real node process (its data directory in a temporary folder) is given
C{--jobs} jobs (100,000 with C{--quick}) in batches of C{--batch}, each with
three labels whose values most jobs share (C{team}: 10 values, C{env}: 3,
C{region}: 5), and one job in every C{jobs / 100} also C{canary=yes}: the
selective label, on about 100 jobs. Then, one request after another, each
selector is asked C{--requests} times (the non-selective ones fewer times):

  - C{canary=yes}: selective, answered through the index (the goal: p99 <=
    100 ms at a million jobs);
  - C{canary=yes,env=prod}: selective with a second term checked per job;
  - C{team=t3}: a tenth of the jobs, past the index's drive limit: a scan
    in creation order for the page (it comes quickly), the total counted
    in the index (one positive term and no other filter);
  - C{team=t3,env=prod}: the same page by a scan, but the exact total
    costs a pass over every job;
  - C{!canary}: negative terms only, always a scan (the total: every job
    but those the index has for C{canary});
  - C{!canary,env!=dev}: the same, with a pass over every job for the total.

Printed: p50/p99/max milliseconds per selector with the total it answered,
and the bytes of the C{job_labels} table and of the C{jobs} table (read with
SQLite's dbstat after the node stopped). Written to
C{bench/results/labels-<timestamp>.json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from typing import Any
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react
from twisted.web.client import Agent, HTTPConnectionPool

from bench.common import (
    credential_and_project,
    distribution,
    machine_facts,
    print_json_path,
    table,
    write_result,
)
from harness.process import NodeProcess, free_port, run_cli

SPECS = ("@hourly", "0 */6 * * *", "@every 10m")
MIB = 1 << 20
GOAL_P99_MS = 100.0
# Each selector with how many of --requests it is asked (non-selective ones scan).
SELECTORS = (
    ("canary=yes", 1.0),
    ("canary=yes,env=prod", 1.0),
    ("team=t3", 0.1),
    ("team=t3,env=prod", 0.05),
    ("!canary", 0.05),
    ("!canary,env!=dev", 0.05),
)


def labels_of(i: int, canary_every: int) -> dict[str, str]:
    """The labels of job C{i}: three shared ones, and canary=yes on one in C{canary_every}."""
    labels = {"team": f"t{i % 10}", "env": ("prod", "dev", "staging")[i % 3], "region": f"r{i % 5}"}
    if i % canary_every == 0:
        labels["canary"] = "yes"
    return labels


def jobs_body(project: str, start: int, count: int, canary_every: int) -> bytes:
    return json.dumps(
        [
            {
                "project_uuid": project,
                "name": f"job-{i}",
                "spec": SPECS[i % len(SPECS)],
                "callback_url": "http://127.0.0.1:9/callback",
                "labels": labels_of(i, canary_every),
            }
            for i in range(start, start + count)
        ],
        separators=(",", ":"),
    ).encode()


def table_bytes(path: str) -> dict[str, int]:
    """Bytes of each table and index of a SQLite file (its dbstat pages)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        connection.close()
    return {name: size for name, size in rows}


class LabelsBench:
    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args = args
        self.workdir = workdir
        self.data = os.path.join(workdir, "data")
        self.http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True)))
        self.headers: dict[str, str] = {}
        self.result: dict[str, Any] = {"jobs": args.jobs, "goal_p99_ms": GOAL_P99_MS}
        self.created = 0
        self.canary_every = max(1, args.jobs // 100)

    async def setup(self) -> None:
        http_port = free_port()
        config_path = os.path.join(self.workdir, "config.yml")
        with open(config_path, "w") as f:
            f.write(
                f"NodeId: 1\nPort: {http_port}\nRaftAddress: 127.0.0.1:{free_port()}\n"
                "DataDir: data\nLogLevel: WARN\nRateLimitPerSecond: 0\n"
                "MaxRequestBodyBytes: 33554432\nMaxJobsPerRequest: 100000\n"
            )
        out, err, code = await run_cli(
            self.workdir, "credential", "init", "--config", config_path, "--generate"
        )
        if code:
            raise SystemExit(f"credential init failed: {err}")
        self.node = NodeProcess(reactor, self.workdir, config_path, http_port)
        await self.node.start(timeout=60)
        self.headers, self.project = await credential_and_project(
            self.http, self.node.url, self.workdir, config_path, "labels"
        )

    async def fill(self) -> None:
        args = self.args
        began = time.monotonic()
        while self.created < args.jobs:
            count = min(args.batch, args.jobs - self.created)
            body = jobs_body(self.project, self.created, count, self.canary_every)
            response = await self.http.post(
                self.node.url + "/jobs", data=body, headers=self.headers, timeout=600
            )
            content = await response.content()
            if response.code != 201:
                raise SystemExit(f"POST /jobs: {response.code} {content[:300]!r}")
            self.created += count
            if (self.created // args.batch) % 20 == 0:
                print(f"  {self.created:,} jobs, {time.monotonic() - began:.0f} s", flush=True)
        self.result["create_s"] = round(time.monotonic() - began, 1)
        # Let the node's own work after the last batch settle before timing reads.
        await deferLater(reactor, 3.0, lambda: None)

    async def timed(self, selector: str) -> tuple[float, int]:
        url = f"{self.node.url}/jobs?selector={quote(selector, safe='')}"
        began = time.perf_counter()
        response = await self.http.get(url, headers=self.headers, timeout=120)
        body = await response.json()
        took = (time.perf_counter() - began) * 1000
        if response.code != 200:
            raise SystemExit(f"GET {url}: {response.code} {body}")
        return took, body["data"]["total"]

    async def selectors(self) -> None:
        rows = []
        for selector, share in SELECTORS:
            n = max(3, int(self.args.requests * share))
            await self.timed(selector)  # (once first: the pages it reads are in the cache)
            times = []
            total = 0
            for _ in range(n):
                took, total = await self.timed(selector)
                times.append(took)
            rows.append(
                {"selector": selector, "requests": n, "total": total, **distribution(times)}
            )
        self.result["selectors"] = rows

    async def run(self) -> dict:
        try:
            await self.setup()
            await self.fill()
            await self.selectors()
            await self.node.stop()
            sizes = table_bytes(os.path.join(self.data, "state.db"))
            self.result["bytes"] = {
                "job_labels": sizes.get("job_labels", 0),
                "jobs": sizes.get("jobs", 0),
                "all_tables": sum(sizes.values()),
            }
        finally:
            await self.node.kill()
        canary = next(row for row in self.result["selectors"] if row["selector"] == "canary=yes")
        self.result["within_goal"] = canary["p99"] <= GOAL_P99_MS
        return self.result


def print_result(result: dict) -> None:
    print(
        f"labels: GET /jobs?selector=... over {result['jobs']:,} labelled jobs on one node "
        f"(created in {result['create_s']} s); goal: canary=yes p99 <= {GOAL_P99_MS:.0f} ms"
    )
    print(
        table(result["selectors"], ["selector", "requests", "total", "p50", "p99", "max", "mean"])
    )
    sizes = result["bytes"]
    jobs = result["jobs"]
    print(
        f"job_labels (the index): {sizes['job_labels'] / MIB:.1f} MiB"
        f" ({sizes['job_labels'] / jobs:.0f} bytes/job), jobs table {sizes['jobs'] / MIB:.1f} MiB,"
        f" every table and index {sizes['all_tables'] / MIB:.1f} MiB;"
        f" within goal: {result['within_goal']}"
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench labels", description=__doc__)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="100,000 jobs, 50 requests")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = 100_000 if args.quick else 1_000_000
    if args.requests is None:
        args.requests = 50 if args.quick else 200
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    workdir = tempfile.mkdtemp(prefix="bench-labels-")

    async def run(_reactor: Any) -> None:
        result = await LabelsBench(args, workdir).run()
        print_result(result)
        print_json_path(write_result("labels", result, machine_facts()))

    try:
        react(lambda r: Deferred.fromCoroutine(run(r)))
    finally:
        if args.keep:
            print(f"data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
