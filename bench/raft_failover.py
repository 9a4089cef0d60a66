"""
Failover of the Raft layer: SIGKILL the leader of a cluster of real
processes and time how long until a write commits again (on any node), then
restart the killed node on its data and repeat.

    python -m bench.raft_failover --nodes 3 --trials 20
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import react

from bench.common import percentile
from bench.raft_throughput import MODULES, Cluster, Writer, find_leader, sleep


async def write_once(port: int) -> bool:
    try:
        writer = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Writer())
    except Exception:
        return False
    try:
        answer = await writer.write(b"after failover")
    finally:
        writer.transport.loseConnection()
    return answer.startswith(b"ok")


async def run(nodes: int, trials: int, workdir: str, impl: str) -> dict:
    cluster = Cluster(nodes, workdir, impl)
    cluster.start()
    gaps: list[float] = []
    try:
        for _ in range(trials):
            leader_port = await find_leader(cluster.client_ports)
            leader = cluster.client_ports.index(leader_port)
            killed_at = time.monotonic()
            await cluster.kill(leader)
            others = [p for p in cluster.client_ports if p != leader_port]
            done = False
            while not done and time.monotonic() - killed_at < 30:
                for port in others:
                    if await write_once(port):
                        done = True
                        break
                else:
                    await sleep(0.01)
            gaps.append(time.monotonic() - killed_at)
            cluster.spawn(leader)
            await sleep(1)  # let the restarted node rejoin before the next kill
    finally:
        await cluster.stop()
    return {
        "impl": impl,
        "trials": trials,
        "seconds_to_next_commit": {
            "p50": round(percentile(gaps, 50), 3),
            "p99": round(percentile(gaps, 99), 3),
            "max": round(max(gaps), 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--impl", default="scheduler0", choices=sorted(MODULES))
    args = parser.parse_args()

    async def go(_reactor: object) -> None:
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(await run(args.nodes, args.trials, workdir, args.impl), indent=2))

    react(lambda r: Deferred.fromCoroutine(go(r)))


if __name__ == "__main__":
    main()
