"""
The HTTP API under load (issue 5, scenario 5): single-job creates per second
and their latency at several client concurrencies, then reads of one job,
linearizable (the default) and stale (?consistency=stale).

    python -m bench.api --clients 1 32 --seconds 10

A fresh real node process on 127.0.0.1 (rate limit off); the clients are
one Twisted process with a persistent connection per client, whose own CPU
use is printed so it can be seen whether the client or the node is the
limit. With --nodes N > 1 a fresh cluster of N nodes (direct links) is
measured twice over: against the leader, and against a follower (creates
forwarded to the leader, linearizable reads confirmed through it); the node
CPU is then the sum over every node.

    python -m bench.api --nodes 3 --clients 1 32 --seconds 10
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

from bench.common import (
    NodeUnderTest,
    check_nodes,
    machine_facts,
    percentile,
    print_json_path,
    write_result,
)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def phase(
    http: treq.client.HTTPClient,
    clients: int,
    seconds: float,
    request: object,
    node_pids: int | list[int],
) -> dict:
    """Run C{clients} loops of C{request()} for C{seconds}; latencies and rates."""
    latencies: list[float] = []
    failures = 0
    codes: dict[int, int] = {}
    end = time.monotonic() + seconds
    pids = node_pids if isinstance(node_pids, list) else [node_pids]
    processes = [psutil.Process(pid) for pid in pids]

    def node_cpu_s() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in processes)

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
                codes[response.code] = codes.get(response.code, 0) + 1

    node_cpu0 = node_cpu_s()
    cpu0, started = _cpu(), time.monotonic()
    await gatherResults([Deferred.fromCoroutine(loop()) for _ in range(clients)])
    elapsed = time.monotonic() - started
    client_cpu, node_cpu = _cpu() - cpu0, node_cpu_s() - node_cpu0
    return {
        "clients": clients,
        "per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p99": round(percentile(latencies, 99), 2),
            "max": round(max(latencies, default=float("nan")), 2),
        },
        "failed": failures,
        "failed_codes": codes,
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


async def run_cluster(
    nodes: int, concurrency: list[int], seconds: float, workdir: str, profile: str | None = None
) -> dict:
    """The same phases against the leader and against one follower of a fresh cluster."""
    from bench.cluster import ClusterUnderTest

    under_test = ClusterUnderTest(reactor, workdir, nodes, profile=profile)
    try:
        await under_test.start()
    except BaseException:
        await under_test.stop()
        raise
    headers = under_test.headers
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max(concurrency)
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))
    try:
        leader = under_test.leader_id
        follower = under_test.followers()[0]
        pids = [under_test.pid(n) for n in under_test.cluster.ids]
        counter = iter(range(10**9))
        created: list[str] = []

        def create_on(url: str) -> object:
            async def create() -> object:
                response = await http.post(
                    url + "/api/v1/jobs",
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

            return create

        results: dict[str, list[dict]] = {}
        targets = {"leader": under_test.url(leader), "follower": under_test.url(follower)}
        for name, url in targets.items():
            results[f"create@{name}"] = [
                await phase(http, c, seconds, create_on(url), pids) for c in concurrency
            ]
        target = created[0]
        for name, url in targets.items():
            for kind, query in (("read", ""), ("read_stale", "?consistency=stale")):

                def read(url: str = url, query: str = query) -> object:
                    return http.get(url + f"/api/v1/jobs/{target}{query}", headers=headers)

                results[f"{kind}@{name}"] = [
                    await phase(http, c, seconds, read, pids) for c in concurrency
                ]
        return {
            "nodes": nodes,
            "leader": leader,
            "follower": follower,
            "seconds_per_phase": seconds,
            "results": results,
        }
    finally:
        await pool.closeCachedConnections()
        await under_test.stop()


def table(report: dict) -> str:
    lines = [
        "operation            clients      per_s   p50_ms   p99_ms  node_cpu%  client_cpu%  failed",
    ]
    for operation, rows in report["results"].items():
        for row in rows:
            latency = row["latency_ms"]
            lines.append(
                f"{operation:<20} {row['clients']:>7} {row['per_s']:>10} "
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
        "--profile",
        metavar="PATH",
        help="run the node under cProfile, stats saved to PATH (a cluster: PATH.node<id>)",
    )
    args = parser.parse_args(argv)
    check_nodes(args.nodes)
    seconds = 3 if args.quick else args.seconds
    machine = machine_facts()

    async def go(_reactor: object) -> None:
        with tempfile.TemporaryDirectory() as workdir:
            if args.nodes == 1:
                report = await run(args.clients, seconds, workdir, args.profile)
            else:
                report = await run_cluster(args.nodes, args.clients, seconds, workdir, args.profile)
        heading = (
            "api: 1 node"
            if args.nodes == 1
            else f"api: {args.nodes}-node cluster, leader node {report['leader']}, "
            f"follower node {report['follower']} (@follower: sent to the follower)"
        )
        print(f"{heading}, {seconds:g} s per phase\n" + table(report))
        if args.json_path:
            with open(args.json_path, "w") as f:
                json.dump(report, f, indent=2)
        print_json_path(write_result("api", {"arguments": vars(args), **report}, machine))

    react(lambda r: Deferred.fromCoroutine(go(r)))


if __name__ == "__main__":
    main()
