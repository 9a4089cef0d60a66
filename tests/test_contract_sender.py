"""
The sender seam (L{scheduler0.ports.Sender}) over a real HTTPExecutor (on a
Clock, its POSTs answered by hand) and the fake that stands for it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.executor.http import HTTPExecutor
from scheduler0.ports import Sender
from tests.support.contracts import SenderContract
from tests.support.executor import FakeHTTPClient
from tests.support.scheduler import FakeExecutor


class HTTPExecutorTests(SenderContract, SynchronousTestCase):
    def sender(self, on_started: Any, on_outcome: Any) -> Sender:
        self.clock = Clock()
        self.client = FakeHTTPClient()
        return HTTPExecutor(self.clock, self.client, on_outcome, on_started=on_started)

    def answer(self, status_code: int) -> None:
        self.clock.advance(0)
        self.client.open()[0].respond(status_code)
        self.clock.advance(0)


class FakeExecutorTests(SenderContract, SynchronousTestCase):
    def sender(self, on_started: Any, on_outcome: Any) -> Sender:
        self.fake = FakeExecutor(on_outcome, on_started)
        return self.fake

    def answer(self, status_code: int) -> None:
        self.fake.finish(status_code)
