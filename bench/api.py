"""
The HTTP API under load (issue 5, scenario 5): single-job creates per second
and their latency at several client concurrencies, then reads of one job,
linearizable (the default) and stale (?consistency=stale).

    python -m bench.api --clients 1 32 --seconds 10

A fresh real node process on 127.0.0.1 (rate limit off); the clients are
one Twisted process with a persistent connection per client, whose own CPU
use is printed so it can be seen whether the client or the node is the
limit. Only one node exists until the cluster is built: --nodes N > 1 says so.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import psutil
import treq.client
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import react
from twisted.web.client import Agent, HTTPConnectionPool

from bench.common import NodeUnderTest, percentile


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def phase(
    http: treq.client.HTTPClient,
    clients: int,
    seconds: float,
    request: object,
    node_pid: int,
) -> dict:
    """Run C{clients} loops of C{request()} for C{seconds}; latencies and rates."""
    latencies: list[float] = []
    failures = 0
    end = time.monotonic() + seconds
    node = psutil.Process(node_pid)

    async def loop() -> None:
        nonlocal failures
        while time.monotonic() < end:
            started = time.monotonic()
            response = await request()  # type: ignore[operator]
            await response.content()
            if 200 <= response.code < 300:
                latencies.append((time.monotonic() - started) * 1000)
            else:
                failures += 1

    node_cpu0 = sum(node.cpu_times()[:2])
    cpu0, started = _cpu(), time.monotonic()
    await gatherResults([Deferred.fromCoroutine(loop()) for _ in range(clients)])
    elapsed = time.monotonic() - started
    client_cpu, node_cpu = _cpu() - cpu0, sum(node.cpu_times()[:2]) - node_cpu0
    return {
        "clients": clients,
        "per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p99": round(percentile(latencies, 99), 2),
            "max": round(max(latencies, default=float("nan")), 2),
        },
        "failed": failures,
        "node_cpu_percent": round(100 * node_cpu / elapsed, 1),
        "client_cpu_percent": round(100 * client_cpu / elapsed, 1),
    }


async def run(
    concurrency: list[int], seconds: float, workdir: str, profile: str | None = None
) -> dict:
    under_test = NodeUnderTest(
        reactor, workdir, profile=profile, extra_config="LogLevel: WARN\nRateLimitPerSecond: 0\n"
    )
    await under_test.start()
    node, headers = under_test.node, under_test.headers
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max(concurrency)
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))
    try:
        counter = iter(range(10**9))
        created: list[str] = []

        async def create() -> object:
            response = await http.post(
                node.url + "/api/v1/jobs",
                json={
                    "project_uuid": under_test.project_uuid,
                    "name": f"job-{next(counter)}",
                    "spec": "@hourly",
                    "callback_url": "http://127.0.0.1:9/never",
                },
                headers=headers,
            )
            if response.code == 201 and len(created) < 1000:
                created.append((await response.json())["data"]["uuid"])
            return response

        results: dict[str, list[dict]] = {"create": [], "read": [], "read_stale": []}
        for clients in concurrency:
            results["create"].append(
                await phase(http, clients, seconds, create, node._transport.pid)
            )
        target = created[0]

        def read() -> object:
            return http.get(node.url + f"/api/v1/jobs/{target}", headers=headers)

        def read_stale() -> object:
            return http.get(node.url + f"/api/v1/jobs/{target}?consistency=stale", headers=headers)

        for clients in concurrency:
            results["read"].append(await phase(http, clients, seconds, read, node._transport.pid))
            results["read_stale"].append(
                await phase(http, clients, seconds, read_stale, node._transport.pid)
            )
        return {"nodes": 1, "seconds_per_phase": seconds, "results": results}
    finally:
        await pool.closeCachedConnections()
        await under_test.stop()


def table(report: dict) -> str:
    lines = [
        "operation    clients      per_s   p50_ms   p99_ms  node_cpu%  client_cpu%  failed",
    ]
    for operation, rows in report["results"].items():
        for row in rows:
            latency = row["latency_ms"]
            lines.append(
                f"{operation:<12} {row['clients']:>7} {row['per_s']:>10} "
                f"{latency['p50']:>8} {latency['p99']:>8} {row['node_cpu_percent']:>10} "
                f"{row['client_cpu_percent']:>12} {row['failed']:>7}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--quick", action="store_true", help="3 s per phase")
    parser.add_argument("--json", dest="json_path", help="also write the result here")
    parser.add_argument(
        "--profile", metavar="PATH", help="run the node under cProfile, stats saved to PATH"
    )
    args = parser.parse_args(argv)
    if args.nodes != 1:
        raise SystemExit("bench.api: --nodes > 1 needs the cluster (issue 4); only 1 node exists")
    seconds = 3 if args.quick else args.seconds

    async def go(_reactor: object) -> None:
        with tempfile.TemporaryDirectory() as workdir:
            report = await run(args.clients, seconds, workdir, args.profile)
        print(table(report))
        if args.json_path:
            with open(args.json_path, "w") as f:
                json.dump(report, f, indent=2)

    react(lambda r: Deferred.fromCoroutine(go(r)))


if __name__ == "__main__":
    main()
