"""
The execution history seams (L{scheduler0.ports.ExecutionHistory},
L{scheduler0.ports.ExecutionRecords}) over a real ExecutionStore (an SQLite
file in a temporary directory), a real ClusterHistory of one member, and the
fakes that stand for them.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.cluster.history import ClusterHistory
from scheduler0.ports import ExecutionHistory, ExecutionRecords
from scheduler0.store.executions import ExecutionStore
from scheduler0.store.state import StateStore
from tests.support.api import RecordingExecutions
from tests.support.contracts import ExecutionHistoryContract, ExecutionRecordsContract
from tests.support.scheduler import FakeExecutions


class ExecutionFiles:
    """Opens stores on SQLite files in a temporary directory."""

    def pool(self: Any, name: str) -> SynchronousConnectionPool:
        directory = self.mktemp()
        os.makedirs(directory)
        pool = SynchronousConnectionPool(os.path.join(directory, name))
        self.addCleanup(pool.close)
        return pool

    def execution_store(self: Any, records: list[dict[str, Any]] = ()) -> ExecutionStore:
        store = ExecutionStore(self.pool("executions.db"), Clock())
        self.successResultOf(store.open())
        for record in records:
            store.record(record)
        return store


class ExecutionStoreTests(ExecutionFiles, ExecutionHistoryContract, SynchronousTestCase):
    def history(self, records: list[dict[str, Any]]) -> ExecutionHistory:
        return self.execution_store(records)


class RecordingExecutionsTests(ExecutionFiles, ExecutionHistoryContract, SynchronousTestCase):
    def history(self, records: list[dict[str, Any]]) -> ExecutionHistory:
        return RecordingExecutions(self.execution_store(records))


@attrs.frozen
class Config:
    node_id: int = 1


@attrs.frozen
class LoneNode:
    """A cluster node with no other members: no peer is asked."""

    config: Config = Config()

    def member_ids(self) -> set[int]:
        return {self.config.node_id}


class ClusterHistoryTests(ExecutionFiles, ExecutionHistoryContract, SynchronousTestCase):
    def history(self, records: list[dict[str, Any]]) -> ExecutionHistory:
        state = StateStore(self.pool("state.db"))
        self.successResultOf(state.open())
        return ClusterHistory(LoneNode(), self.execution_store(records), state)


class ExecutionStoreRecordsTests(ExecutionFiles, ExecutionRecordsContract, SynchronousTestCase):
    def records(self) -> ExecutionRecords:
        return self.execution_store()


class FakeExecutionsTests(ExecutionRecordsContract, SynchronousTestCase):
    def records(self) -> ExecutionRecords:
        return FakeExecutions()
