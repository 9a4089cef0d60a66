"""
Committed writes per second and commit latency of a Raft cluster of real
processes on 127.0.0.1 (bench/raft_node.py: SQLite storage, synchronous=FULL),
at several client concurrencies:

    python -m bench.raft_throughput --nodes 3 --clients 1 64 --seconds 10

With --impl pysyncobj the same load runs against PySyncObj
(bench/pysyncobj_node.py; `pip install pysyncobj`), in the same run when
both are named: --impl scheduler0 pysyncobj.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver

from bench.common import percentile
from harness.process import REPO_ROOT, free_port


def sleep(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class _Node(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred = Deferred()

    def processEnded(self, reason: object) -> None:
        self.ended.callback(None)


class Writer(LineReceiver):
    """One client: a write, wait for its answer, the next write."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.pending: Deferred | None = None

    def write(self, payload: bytes) -> Deferred:
        self.pending = Deferred()
        self.sendLine(b"w\t" + payload)
        return self.pending

    def lineReceived(self, line: bytes) -> None:
        d, self.pending = self.pending, None
        if d is not None:
            d.callback(line)


async def find_leader(client_ports: list[int]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for port in client_ports:
            try:
                writer = await connectProtocol(
                    TCP4ClientEndpoint(reactor, "127.0.0.1", port), Writer()
                )
            except Exception:
                continue
            answer = await writer.write(b"probe")
            writer.transport.loseConnection()
            if answer.startswith(b"ok"):
                return port
        await sleep(0.2)
    raise SystemExit("no leader within 30 s")


async def measure(port: int, clients: int, seconds: float) -> dict:
    writers = [
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Writer())
        for _ in range(clients)
    ]
    latencies: list[float] = []
    failures = 0
    end = time.monotonic() + seconds

    async def loop(writer: Writer) -> None:
        nonlocal failures
        n = 0
        while time.monotonic() < end:
            started = time.monotonic()
            answer = await writer.write(b"x" * 64 + str(n).encode())
            n += 1
            if answer.startswith(b"ok"):
                latencies.append((time.monotonic() - started) * 1000)
            else:
                failures += 1

    started = time.monotonic()
    await gatherResults([Deferred.fromCoroutine(loop(w)) for w in writers])
    elapsed = time.monotonic() - started
    for writer in writers:
        writer.transport.loseConnection()
    return {
        "clients": clients,
        "writes_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p99": round(percentile(latencies, 99), 2),
        },
        "failed": failures,
    }


class Cluster:
    """N benchmark peers as processes: start, kill and restart them."""

    def __init__(self, nodes: int, workdir: str, impl: str = "scheduler0") -> None:
        self.raft_ports = [free_port() for _ in range(nodes)]
        self.client_ports = [free_port() for _ in range(nodes)]
        self.workdir = workdir
        self.impl = impl
        self.processes: dict[int, tuple[_Node, object]] = {}

    def argv(self, i: int) -> list[str]:
        peers = [
            f"--peer={j + 1}=127.0.0.1:{port}" for j, port in enumerate(self.raft_ports) if j != i
        ]
        return [
            sys.executable, "-m", MODULES[self.impl], "--id", str(i + 1),
            "--raft", str(self.raft_ports[i]), "--client", str(self.client_ports[i]),
            "--data", os.path.join(self.workdir, f"node-{i + 1}"), *peers,
        ]  # fmt: skip

    def spawn(self, i: int) -> None:
        env = dict(os.environ, PYTHONPATH=REPO_ROOT)
        protocol = _Node()
        transport = reactor.spawnProcess(
            protocol, sys.executable, self.argv(i), env=env, path=REPO_ROOT
        )
        self.processes[i] = (protocol, transport)

    def start(self) -> None:
        for i in range(len(self.raft_ports)):
            self.spawn(i)

    async def kill(self, i: int) -> None:
        protocol, transport = self.processes.pop(i)
        transport.signalProcess("KILL")  # type: ignore[attr-defined]
        await protocol.ended

    async def stop(self) -> None:
        for i in list(self.processes):
            await self.kill(i)


async def run(
    nodes: int, concurrency: list[int], seconds: float, workdir: str, impl: str = "scheduler0"
) -> list[dict]:
    cluster = Cluster(nodes, workdir, impl)
    cluster.start()
    try:
        leader = await find_leader(cluster.client_ports)
        return [await measure(leader, clients, seconds) for clients in concurrency]
    finally:
        await cluster.stop()


MODULES = {"scheduler0": "bench.raft_node", "pysyncobj": "bench.pysyncobj_node"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--impl", nargs="+", default=["scheduler0"], choices=sorted(MODULES))
    args = parser.parse_args()

    async def go(_reactor: object) -> None:
        report = {}
        for impl in args.impl:
            with tempfile.TemporaryDirectory() as workdir:
                report[impl] = await run(args.nodes, args.clients, args.seconds, workdir, impl)
        print(json.dumps({"nodes": args.nodes, "results": report}, indent=2))

    react(lambda r: Deferred.fromCoroutine(go(r)))


if __name__ == "__main__":
    main()
