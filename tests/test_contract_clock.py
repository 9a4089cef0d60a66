"""
The clock seam: every part that keeps time takes an C{IReactorTime}; the
tests' C{task.Clock} and the real reactor both provide it.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject


class ClockTests(SynchronousTestCase):
    def test_the_tests_clock(self) -> None:
        """C{task.Clock} provides C{IReactorTime}."""
        self.assertTrue(verifyObject(IReactorTime, Clock()))

    def test_the_reactor(self) -> None:
        """The reactor a node runs on provides C{IReactorTime}."""
        self.assertTrue(verifyObject(IReactorTime, reactor))
