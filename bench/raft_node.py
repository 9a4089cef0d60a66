"""
One Raft peer as a process, for the Raft benchmarks: the real core, driver,
TCP transport and SQLite storage (synchronous=FULL), with a counter as the
state machine and a line protocol for clients on another port:

    w<TAB><payload>\\n  ->  ok<TAB><log index>\\n  |  no<TAB><reason>\\n
    s\\n                ->  st<TAB><term><TAB><role>\\n

    python -m bench.raft_node --id 1 --raft 7101 --client 7201 \\
        --peer 2=127.0.0.1:7102 --peer 3=127.0.0.1:7103 --data DIR
"""

from __future__ import annotations

import argparse
import os
import random
import sys

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.protocols.basic import LineReceiver
from twisted.python import log as legacy_log

from scheduler0.raft.core import RaftNode, RaftSettings
from scheduler0.raft.driver import RaftDriver
from scheduler0.raft.messages import ClusterConfig
from scheduler0.raft.storage import SqliteRaftStorage
from scheduler0.raft.transport import RaftTransport


class ClientLine(LineReceiver):
    delimiter = b"\n"

    def __init__(self, driver: RaftDriver) -> None:
        self.driver = driver

    def lineReceived(self, line: bytes) -> None:
        kind, _, payload = line.partition(b"\t")
        if kind == b"s":
            core = self.driver.core
            self.sendLine(b"st\t%d\t%s" % (core.term, core.role.encode()))
            return
        if kind != b"w":
            self.sendLine(b"no\tbad request")
            return
        d = self.driver.propose(payload)
        d.addCallbacks(
            lambda index: self.sendLine(b"ok\t%d" % index),
            lambda f: self.sendLine(b"no\t" + str(f.value).encode()),
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", required=True)
    parser.add_argument("--raft", type=int, required=True)
    parser.add_argument("--client", type=int, required=True)
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--data", required=True)
    parser.add_argument("--tick-ms", type=int, default=50)
    args = parser.parse_args()

    peers = {}
    for spec in args.peer:
        node, _, address = spec.partition("=")
        peers[int(node)] = address
    voters = frozenset({args.id, *(str(n) for n in peers)})
    os.makedirs(args.data, exist_ok=True)
    storage = SqliteRaftStorage(os.path.join(args.data, f"raft-{args.id}.db"))
    core = RaftNode.create(
        args.id,
        ClusterConfig(voters),
        settings=RaftSettings(election_ticks=10, heartbeat_ticks=1),
        rng=random.Random(),
        boot=storage.load(),
    )
    pool = reactor.getThreadPool()
    driver: RaftDriver | None = None

    def deliver(sender: int, payload: bytes) -> None:
        assert driver is not None
        driver.receive(payload)

    transport = RaftTransport(
        reactor=reactor,
        node_id=int(args.id),
        secret_key=b"bench secret",
        listen_endpoint=TCP4ServerEndpoint(reactor, args.raft, interface="127.0.0.1"),
        peers=peers,
        on_message=deliver,
    )
    driver = RaftDriver(
        reactor,
        core,
        storage,
        send=lambda to, payload: transport.send(int(to), payload),
        apply=lambda entry: entry.index,
        run_blocking=lambda fn, *a: deferToThreadPool(reactor, pool, fn, *a),
        tick_s=args.tick_ms / 1000,
    )

    def serve() -> None:
        transport.start()
        driver.start()
        endpoint = TCP4ServerEndpoint(reactor, args.client, interface="127.0.0.1")
        endpoint.listen(Factory.forProtocol(lambda: ClientLine(driver)))

    if os.environ.get("RAFT_NODE_LOG"):
        legacy_log.startLogging(sys.stderr)
    reactor.callWhenRunning(serve)
    reactor.run()


if __name__ == "__main__":
    main()
