"""
`scheduler0 jobs import` at scale: write a CSV of N jobs (100,000 by
default), import it with the real CLI (a process of its own) into a fresh
node, and print the wall time, the rate and the node's job count after. The
same file is then imported a second time, which must create nothing (every
batch carries the same Idempotency-Key as the first time).

    python -m bench.import_jobs [--jobs 100000] [--batch-size 1000]
"""

from __future__ import annotations

import csv
import json
import os
import time
from typing import Any

from bench.common import NodeUnderTest, run_scenario, scratch_dir, table
from harness.process import run_cli


def write_csv(path: str, count: int) -> None:
    """C{count} paused @every 1h jobs (paused: the bench measures creation, not firing)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "spec", "callback_url", "data", "paused"])
        for i in range(count):
            writer.writerow(
                [
                    f"job-{i}",
                    "@every 1h",
                    "http://127.0.0.1:9/callback",
                    json.dumps({"i": i}),
                    "true",
                ]
            )


async def _job_count(node: NodeUnderTest) -> int:
    response = await node._client.get(
        node.api_url + "/api/v1/jobs?limit=1&project_uuid=" + node.project_uuid,
        headers=node.headers,
    )
    return int((await response.json())["data"]["total"])


async def scenario(reactor: Any, args: Any) -> dict[str, Any]:
    count = 10_000 if args.quick else args.jobs
    with scratch_dir("s0-import-") as workdir:
        node = NodeUnderTest(reactor, workdir)
        await node.start()
        try:
            path = os.path.join(workdir, "jobs.csv")
            write_csv(path, count)
            connection = (
                "--config",
                node.node.config_path,
                "--api-key",
                node.headers["x-api-key"],
                "--api-secret",
                node.headers["x-secret-key"],
            )
            runs = []
            for label in ("first import", "same file again"):
                started = time.monotonic()
                out, err, code = await run_cli(
                    workdir,
                    "jobs",
                    "import",
                    path,
                    "--project",
                    node.project_uuid,
                    "--batch-size",
                    str(args.batch_size),
                    *connection,
                )
                elapsed = time.monotonic() - started
                if code:
                    raise RuntimeError(f"jobs import failed ({code}): {err[-2000:]}")
                runs.append(
                    {
                        "run": label,
                        "jobs": count,
                        "seconds": round(elapsed, 2),
                        "jobs_per_s": round(count / elapsed),
                        "node_job_count": await _job_count(node),
                        "summary": out.strip(),
                    }
                )
        finally:
            await node.stop()
    text = table(runs, ["run", "jobs", "seconds", "jobs_per_s", "node_job_count"])
    text += f"\n(wall time of the whole CLI process, {args.batch_size} jobs a request)"
    return {"runs": runs, "text": text}


def add_arguments(parser: Any) -> None:
    parser.add_argument("--jobs", type=int, default=100_000, help="rows in the CSV")
    parser.add_argument("--batch-size", type=int, default=1000, help="jobs per request")


def main(argv: list[str] | None = None) -> None:
    run_scenario(
        "import",
        "scheduler0 jobs import of a large CSV into a fresh node",
        add_arguments,
        scenario,
        argv,
    )


if __name__ == "__main__":
    main()
