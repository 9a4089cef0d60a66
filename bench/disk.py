"""
Disk use of one node (issue 16, item 5): how many bytes a job costs on disk,
and what one large batch of jobs costs while it is written.

    python -m bench disk [--jobs 1000000] [--quick] [--batch 10000] [--repo PATH]

A real node process (its data directory in a temporary folder) is given:

  1. one batch of jobs whose request body is about 3 MB (C{--probe-mb}),
     while this process samples the size of every file of the data directory
     every few milliseconds: the peak of each WAL file, the peak growth of
     the whole directory, and its growth once the node is idle again;
  2. then jobs in batches of C{--batch} up to C{--jobs} (100,000 with
     C{--quick}): the directory's bytes per job while the node runs (WAL
     files included) and after it stopped (SIGTERM), each file listed.

Every job is alike: a sparse schedule (as in bench/scale.py), a callback URL
and a small C{data} object. C{--repo PATH} runs the node from another
checkout (e.g. a C{git worktree} of an earlier commit) with this script, so
two releases are measured the same way. Printed, and written to
C{bench/results/disk-<timestamp>.json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater, react
from twisted.web.client import Agent, HTTPConnectionPool

from bench.common import credential_and_project, machine_facts, print_json_path, table, write_result
from harness.process import REPO_ROOT, NodeProcess, free_port, run_cli

SPECS = ("@hourly", "0 */6 * * *", "@every 10m")
SAMPLE_S = 0.005
MIB = 1 << 20


def jobs_body(project: str, start: int, count: int) -> bytes:
    """C{count} alike jobs as one array request."""
    return json.dumps(
        [
            {
                "project_uuid": project,
                "name": f"job-{i}",
                "spec": SPECS[i % len(SPECS)],
                "callback_url": "http://127.0.0.1:9/callback",
                "data": {"customer": f"c-{i:08d}", "kind": "invoice"},
            }
            for i in range(start, start + count)
        ],
        separators=(",", ":"),
    ).encode()


def files_of(folder: str) -> dict[str, int]:
    """Every file under C{folder} (relative name -> bytes)."""
    out = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                out[os.path.relpath(path, folder)] = os.path.getsize(path)
            except OSError:
                pass  # removed while walking
    return out


class Sampler:
    """The peak size of each file and of the whole folder, sampled on a timer."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.peak_files: dict[str, int] = {}
        self.peak_total = 0
        self.loop = LoopingCall(self.sample)

    def sample(self) -> None:
        files = files_of(self.folder)
        for name, size in files.items():
            if size > self.peak_files.get(name, 0):
                self.peak_files[name] = size
        self.peak_total = max(self.peak_total, sum(files.values()))

    def start(self) -> None:
        self.loop.start(SAMPLE_S)

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()
        self.sample()


class DiskBench:
    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args = args
        self.workdir = workdir
        self.data = os.path.join(workdir, "data")
        self.http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True)))
        self.headers: dict[str, str] = {}
        self.result: dict[str, Any] = {"repo": os.path.abspath(args.repo)}
        self.created = 0

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
        env = {"PYTHONPATH": os.path.abspath(self.args.repo)}
        self.node = NodeProcess(reactor, self.workdir, config_path, http_port, env=env)
        await self.node.start(timeout=60)
        self.headers, self.project = await credential_and_project(
            self.http, self.node.url, self.workdir, config_path, "disk"
        )

    async def post(self, count: int) -> int:
        """Create C{count} more jobs in one request; the body's bytes."""
        body = jobs_body(self.project, self.created, count)
        response = await self.http.post(
            self.node.url + "/jobs", data=body, headers=self.headers, timeout=600
        )
        content = await response.content()
        if response.code != 201:
            raise SystemExit(f"POST /jobs: {response.code} {content[:300]!r}")
        self.created += count
        return len(body)

    async def idle(self, seconds: float = 3.0) -> None:
        await deferLater(reactor, seconds, lambda: None)

    async def probe(self) -> None:
        """One ~3 MB batch: the peaks while it is written and what stays."""
        per_job = len(jobs_body(self.project, 0, 1000)) / 1000
        count = int(self.args.probe_mb * 1_000_000 / per_job)
        await self.idle(1.0)
        before = files_of(self.data)
        sampler = Sampler(self.data)
        sampler.start()
        began = time.monotonic()
        body_bytes = await self.post(count)
        took = time.monotonic() - began
        await self.idle(3.0)
        sampler.stop()
        after = files_of(self.data)
        wal = {name: size for name, size in sampler.peak_files.items() if name.endswith("-wal")}
        self.result["batch"] = {
            "jobs": count,
            "body_bytes": body_bytes,
            "seconds": round(took, 2),
            "peak_wal_bytes": wal,
            "peak_wal_total_bytes": sum(wal.values()),
            "peak_growth_bytes": sampler.peak_total - sum(before.values()),
            "settled_growth_bytes": sum(after.values()) - sum(before.values()),
            "files_before": before,
            "files_after": after,
        }

    async def fill(self) -> None:
        """Jobs up to --jobs; bytes per job running and after a clean stop."""
        args = self.args
        began = time.monotonic()
        while self.created < args.jobs:
            await self.post(min(args.batch, args.jobs - self.created))
            if (self.created // args.batch) % 20 == 0:
                print(f"  {self.created:,} jobs, {time.monotonic() - began:.0f} s", flush=True)
        await self.idle(3.0)
        running = files_of(self.data)
        await self.node.stop()
        stopped = files_of(self.data)
        self.result["fill"] = {
            "jobs": self.created,
            "seconds": round(time.monotonic() - began, 1),
            "files_running": running,
            "files_stopped": stopped,
            "bytes_per_job_running": round(sum(running.values()) / self.created, 1),
            "bytes_per_job_stopped": round(sum(stopped.values()) / self.created, 1),
        }

    async def run(self) -> dict:
        try:
            await self.setup()
            await self.probe()
            await self.fill()
        finally:
            await self.node.kill()
        return self.result


def print_result(result: dict) -> None:
    batch, fill = result["batch"], result["fill"]
    rows = [
        {"what": f"batch: {batch['jobs']:,} jobs, body", "value": batch["body_bytes"] / MIB},
        {"what": "batch: peak WAL, all files", "value": batch["peak_wal_total_bytes"] / MIB},
        *(
            {"what": f"batch: peak {name}", "value": size / MIB}
            for name, size in sorted(batch["peak_wal_bytes"].items())
        ),
        {"what": "batch: peak growth of the data dir", "value": batch["peak_growth_bytes"] / MIB},
        {"what": "batch: growth once idle", "value": batch["settled_growth_bytes"] / MIB},
    ]
    for row in rows:
        row["value"] = f"{row['value']:.1f} MiB"
    rows.append(
        {
            "what": f"{fill['jobs']:,} jobs: bytes/job running (WAL included)",
            "value": f"{fill['bytes_per_job_running']:.0f}",
        }
    )
    rows.append(
        {"what": "  bytes/job after a clean stop", "value": f"{fill['bytes_per_job_stopped']:.0f}"}
    )
    for name, size in sorted(fill["files_running"].items()):
        rows.append({"what": f"  running: {name}", "value": f"{size / MIB:.1f} MiB"})
    print(f"disk: node from {result['repo']}\n" + table(rows, ["what", "value"]))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench disk", description=__doc__)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="100,000 jobs")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--probe-mb", type=float, default=3.0)
    parser.add_argument("--repo", default=REPO_ROOT, help="the checkout the node runs from")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = 100_000 if args.quick else 1_000_000
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    workdir = tempfile.mkdtemp(prefix="bench-disk-")

    async def run(_reactor: Any) -> None:
        bench = DiskBench(args, workdir)
        result = await bench.run()
        print_result(result)
        print_json_path(write_result("disk", result, machine_facts()))

    try:
        react(lambda r: Deferred.fromCoroutine(run(r)))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
