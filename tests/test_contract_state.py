"""
The state reader seams (L{scheduler0.ports.JobReader}, what the scheduler
reads, and L{scheduler0.ports.StateReader}, what the API reads) over a real
StateStore (an SQLite file in a temporary directory, the jobs created by
applying commands) and the fake that stands for the job reader (the API's
tests read a real StateStore).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.ports import JobReader, StateReader
from tests.support.contracts import JobReaderContract, StateReaderContract
from tests.support.scheduler import FakeState
from tests.support.state import StateCase


class StateStoreTests(JobReaderContract, StateCase):
    def reader(self, jobs: list[dict[str, Any]]) -> JobReader:
        store = self.seeded()
        if jobs:
            self.ok(store, "create_jobs", jobs=jobs)
        return store


class FakeStateTests(JobReaderContract, SynchronousTestCase):
    def reader(self, jobs: list[dict[str, Any]]) -> JobReader:
        return FakeState(jobs)


class StateStoreReadsTests(StateReaderContract, StateCase):
    def state(self, jobs: list[dict[str, Any]]) -> StateReader:
        store = self.seeded()
        if jobs:
            self.ok(store, "create_jobs", jobs=jobs)
        return store
