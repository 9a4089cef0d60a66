"""
The state reader seam (L{scheduler0.ports.JobReader}) over a real StateStore
(an SQLite file in a temporary directory, the jobs created by applying
commands) and the fake that stands for it.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.ports import JobReader
from tests.support.contracts import JobReaderContract
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
