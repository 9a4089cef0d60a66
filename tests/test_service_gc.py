"""The node keeps the cyclic garbage collector off the slots' critical path."""

from __future__ import annotations

import gc

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.service import tune_garbage_collector


class GarbageCollectorTests(SynchronousTestCase):
    def test_start_up_objects_are_frozen_and_collections_rare(self) -> None:
        """What exists at tuning time leaves the generations; gen 0 holds 50,000 objects."""
        thresholds = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *thresholds)
        self.addCleanup(gc.unfreeze)
        held = [{"entry": n} for n in range(1000)]
        tune_garbage_collector()
        self.assertGreaterEqual(gc.get_freeze_count(), len(held))
        self.assertEqual(gc.get_threshold(), (50_000, 50, 100))
