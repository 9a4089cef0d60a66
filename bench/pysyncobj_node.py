"""
A PySyncObj peer for the same benchmark as bench/raft_node.py (same client
line protocol), in its fastest configuration: in-memory journal, no append
batching timer. Needs `pip install pysyncobj` (not a project dependency).

    python -m bench.pysyncobj_node --id 1 --raft 7101 --client 7201 \\
        --peer 2=127.0.0.1:7102 --peer 3=127.0.0.1:7103 --data DIR
"""

from __future__ import annotations

import argparse
import socketserver

from pysyncobj import SyncObj, SyncObjConf, replicated


class Counter(SyncObj):
    def __init__(self, address: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(address, partners, conf)
        self._count = 0

    @replicated
    def write(self, payload: bytes) -> int:
        self._count += 1
        return self._count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", required=True)
    parser.add_argument("--raft", type=int, required=True)
    parser.add_argument("--client", type=int, required=True)
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--data", required=False)
    args = parser.parse_args()
    partners = [spec.partition("=")[2] for spec in args.peer]
    conf = SyncObjConf(appendEntriesUseBatch=False, dynamicMembershipChange=False)
    counter = Counter(f"127.0.0.1:{args.raft}", partners, conf)

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                kind, _, payload = line.rstrip(b"\n").partition(b"\t")
                if kind != b"w":
                    self.wfile.write(b"no\tbad request\n")
                    continue
                if counter._getLeader() is None or not counter._isLeader():
                    self.wfile.write(b"no\tnot the leader\n")
                    continue
                try:
                    index = counter.write(payload, sync=True, timeout=5)
                except Exception as e:
                    self.wfile.write(b"no\t" + str(e).encode() + b"\n")
                    continue
                self.wfile.write(b"ok\t%d\n" % index)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    Server(("127.0.0.1", args.client), Handler).serve_forever()


if __name__ == "__main__":
    main()
