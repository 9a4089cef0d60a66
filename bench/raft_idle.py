"""
Spurious elections: run a Raft cluster of real processes idle while another
process keeps one core busy, and count the terms that pass after the first
leader (0 means no election happened).

    python -m bench.raft_idle --nodes 3 --seconds 600
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import react

from bench.raft_throughput import Cluster, Writer, find_leader, sleep


class _Busy(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred = Deferred()

    def processEnded(self, reason: object) -> None:
        self.ended.callback(None)


async def status(port: int) -> tuple[int, str] | None:
    try:
        writer = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Writer())
    except Exception:
        return None
    writer.pending = Deferred()
    writer.sendLine(b"s")
    answer = await writer.pending
    writer.transport.loseConnection()
    _, term, role = answer.decode().split("\t")
    return int(term), role


async def run(nodes: int, seconds: float, workdir: str) -> dict:
    cluster = Cluster(nodes, workdir)
    cluster.start()
    busy = _Busy()
    process = reactor.spawnProcess(
        busy, sys.executable, [sys.executable, "-c", "while True: pass"], env=None
    )
    try:
        await find_leader(cluster.client_ports)
        first = {s[0] for s in [await status(p) for p in cluster.client_ports] if s}
        start_term = max(first)
        end = time.monotonic() + seconds
        highest = start_term
        samples = 0
        while time.monotonic() < end:
            for port in cluster.client_ports:
                answer = await status(port)
                if answer:
                    highest = max(highest, answer[0])
            samples += 1
            await sleep(0.5)
    finally:
        process.signalProcess("KILL")
        await busy.ended
        await cluster.stop()
    return {
        "nodes": nodes,
        "seconds": seconds,
        "samples": samples,
        "term_after_first_leader": start_term,
        "spurious_terms": highest - start_term,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()

    async def go(_reactor: object) -> None:
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(await run(args.nodes, args.seconds, workdir), indent=2))

    react(lambda r: Deferred.fromCoroutine(go(r)))


if __name__ == "__main__":
    main()
