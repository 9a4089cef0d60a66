"""
Three L{RaftDriver}s on one Clock with an in-memory network.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock

from scheduler0.raft import codec
from scheduler0.raft.core import LEADER, RaftNode, RaftSettings
from scheduler0.raft.driver import RaftDriver
from scheduler0.raft.messages import ClusterConfig, Entry
from scheduler0.raft.storage import MemoryRaftStorage

IDS = ("1", "2", "3")
SETTINGS = RaftSettings(election_ticks=10, heartbeat_ticks=2)


class RecordingStorage(MemoryRaftStorage):
    """Memory storage that notes each save in a shared event list."""

    def __init__(self, events: list[str], name: str) -> None:
        super().__init__()
        self.events = events
        self.name = name

    def save(self, ready: Any) -> None:
        self.events.append(f"{self.name} save")
        super().save(ready)


class Cluster:
    """Three drivers on one Clock; messages go through clock.callLater(0)."""

    def __init__(
        self,
        run_blocking: Any = None,
        apply_for: Any = None,
        settings: RaftSettings = SETTINGS,
        extra_for: Any = None,
    ) -> None:
        self.clock = Clock()
        self.events: list[str] = []
        self.applied: dict[str, list[bytes]] = {i: [] for i in IDS}
        self.cut: set[str] = set()
        self.drivers: dict[str, RaftDriver] = {}
        for node_id in IDS:
            core = RaftNode.create(
                node_id,
                ClusterConfig(frozenset(IDS)),
                settings=settings,
                rng=random.Random(int(node_id)),
            )
            options: dict[str, Any] = dict(extra_for(node_id)) if extra_for else {}
            if run_blocking is not None:
                options["run_blocking"] = run_blocking
            self.drivers[node_id] = RaftDriver(
                self.clock,
                core,
                RecordingStorage(self.events, node_id),
                send=self._sender(node_id),
                apply=(apply_for or self._applier)(node_id),
                tick_s=0.01,
                **options,
            )
        for driver in self.drivers.values():
            driver.start()

    def _sender(self, sender: str) -> Any:
        def send(recipient: str, payload: bytes) -> None:
            self.events.append(f"{sender} send {type(codec.decode(payload)).__name__}")
            if sender in self.cut or recipient in self.cut:
                return
            self.clock.callLater(0, self.drivers[recipient].receive, payload)

        return send

    def _applier(self, node_id: str) -> Any:
        def apply(entry: Entry) -> str:
            self.applied[node_id].append(entry.data)
            return f"applied {entry.data.decode()} at {entry.index} on {node_id}"

        return apply

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds / 0.01)):
            self.clock.advance(0.01)

    def leader(self) -> RaftDriver:
        self.run(2)
        leaders = [d for d in self.drivers.values() if d.core.role == LEADER]
        assert len(leaders) == 1, [d.core.role for d in self.drivers.values()]
        return leaders[0]
