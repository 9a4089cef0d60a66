"""
The proposer seam (L{scheduler0.ports.Proposer}, L{scheduler0.ports.AppliedCommands})
over a real LocalProposer (SQLite files in a temporary directory), a real
ClusterNode leading three Raft nodes on a Clock, and the fakes that stand for them.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.cluster.node import ClusterNode
from scheduler0.cluster.proposer import RaftProposer
from scheduler0.ports import AppliedCommands, Proposer
from scheduler0.store.commands import Command
from scheduler0.store.local import LocalProposer
from scheduler0.store.log import CommandLog
from scheduler0.store.state import StateStore
from tests.support.api import RecordingProposer
from tests.support.cluster import FakePeers, FakeTransport
from tests.support.contracts import AppliedCommandsContract, ProposerContract
from tests.support.raft import Cluster
from tests.support.scheduler import FakeProposer


class LocalProposerFiles:
    """Builds a started LocalProposer over state and log files in a temporary directory."""

    def local_proposer(self: Any) -> LocalProposer:
        directory = self.mktemp()
        os.makedirs(directory)
        pools = [
            SynchronousConnectionPool(os.path.join(directory, name))
            for name in ("state.db", "log.db")
        ]
        for pool in pools:
            self.addCleanup(pool.close)
        state, log = StateStore(pools[0]), CommandLog(pools[1])
        self.successResultOf(state.open())
        self.successResultOf(log.open())
        proposer = LocalProposer(log, state, Clock())
        self.successResultOf(proposer.start())
        return proposer


class LocalProposerTests(LocalProposerFiles, ProposerContract, SynchronousTestCase):
    def proposer(self) -> Proposer:
        return self.local_proposer()


class LocalProposerSubscriberTests(
    LocalProposerFiles, AppliedCommandsContract, SynchronousTestCase
):
    def subscribers(self) -> AppliedCommands:
        return self.local_proposer()

    def apply(self, subscribers: AppliedCommands, command: Command) -> None:
        assert isinstance(subscribers, LocalProposer)
        self.successResultOf(subscribers.propose(command))


class RecordingProposerTests(LocalProposerFiles, ProposerContract, SynchronousTestCase):
    def proposer(self) -> Proposer:
        return RecordingProposer(self.local_proposer())


@attrs.frozen
class Config:
    node_id: int
    raft_apply_timeout: float = 5.0
    peer_connect_retry_max: int = 3


class ClusterNodes:
    """Three Raft nodes on a Clock over in-memory state; the leader's ClusterNode."""

    def leading_node(self: Any) -> ClusterNode:
        proposers = {}
        for node_id in ("1", "2", "3"):
            state = StateStore(SynchronousConnectionPool(":memory:"))
            self.successResultOf(state.open())
            proposers[node_id] = RaftProposer(state)
        self.cluster = Cluster(apply_for=lambda node_id: proposers[node_id].apply_hook)
        for node_id, driver in self.cluster.drivers.items():
            proposers[node_id].driver = driver
        driver = self.cluster.leader()
        node_id = driver.core.node_id
        return ClusterNode(
            self.cluster.clock,
            Config(int(node_id)),
            state=proposers[node_id].state,
            admin=None,
            storage=None,
            core=driver.core,
            raft=proposers[node_id],
            driver=driver,
            transport=FakeTransport(),
            peers=FakePeers(),  # type: ignore[arg-type]
            monotonic=self.cluster.clock.seconds,
        )

    def settle(self: Any) -> None:
        self.cluster.run(0.5)


class ClusterNodeTests(ClusterNodes, ProposerContract, SynchronousTestCase):
    def proposer(self) -> Proposer:
        return self.leading_node()


class ClusterNodeSubscriberTests(ClusterNodes, AppliedCommandsContract, SynchronousTestCase):
    def subscribers(self) -> AppliedCommands:
        return self.leading_node()

    def apply(self, subscribers: AppliedCommands, command: Command) -> None:
        assert isinstance(subscribers, ClusterNode)
        d = subscribers.propose(command)
        self.settle()
        self.successResultOf(d)


class FakeProposerTests(AppliedCommandsContract, SynchronousTestCase):
    def subscribers(self) -> AppliedCommands:
        return FakeProposer()

    def apply(self, subscribers: AppliedCommands, command: Command) -> None:
        assert isinstance(subscribers, FakeProposer)
        subscribers.applied(command.op, None)
