"""Tests for the per-key register linearizability checker."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from harness.linearizability import check_history
from harness.raftsim import Operation

_ids = iter(range(10**9))


def put(key: str, value: str, call: int, ret: int | None, failed: bool = False) -> Operation:
    return Operation(next(_ids), "put", key, value, call, ret, failed=failed)


def get(key: str, output: str | None, call: int, ret: int | None) -> Operation:
    return Operation(next(_ids), "get", key, None, call, ret, output=output)


class LinearizabilityTests(SynchronousTestCase):
    def test_sequential_history_is_linearizable(self) -> None:
        """Reads returning the latest completed write are linearizable."""
        history = [
            put("k", "1", 1, 2),
            get("k", "1", 3, 4),
            put("k", "2", 5, 6),
            get("k", "2", 7, 8),
        ]
        self.assertTrue(check_history(history).ok)

    def test_stale_read_is_not_linearizable(self) -> None:
        """A read that starts after a write finished must not see the older value."""
        history = [put("k", "1", 1, 2), put("k", "2", 3, 4), get("k", "1", 5, 6)]
        result = check_history(history)
        self.assertFalse(result.ok)
        self.assertEqual(result.key, "k")

    def test_read_of_initial_value_after_write_is_not_linearizable(self) -> None:
        """Once a write completed, a later read cannot see the empty register."""
        self.assertFalse(check_history([put("k", "1", 1, 2), get("k", None, 3, 4)]).ok)

    def test_concurrent_write_may_be_seen_or_not(self) -> None:
        """A read overlapping a write may return either the old or the new value."""
        for output in (None, "1"):
            self.assertTrue(check_history([put("k", "1", 1, 4), get("k", output, 2, 3)]).ok)

    def test_reads_must_agree_on_order_of_concurrent_writes(self) -> None:
        """Once reads saw 1 then 2, a later read cannot see 1 again."""
        history = [
            put("k", "1", 1, 10),
            put("k", "2", 2, 11),
            get("k", "1", 3, 4),
            get("k", "2", 5, 6),
            get("k", "1", 7, 8),
        ]
        self.assertFalse(check_history(history).ok)

    def test_unknown_write_may_have_taken_effect(self) -> None:
        """A write with unknown outcome may explain a later read..."""
        self.assertTrue(check_history([put("k", "1", 1, None), get("k", "1", 5, 6)]).ok)

    def test_unknown_write_may_never_take_effect(self) -> None:
        """...or may never take effect at all."""
        self.assertTrue(check_history([put("k", "1", 1, None), get("k", None, 5, 6)]).ok)

    def test_failed_write_is_ignored(self) -> None:
        """A write known to have failed cannot explain a read of its value."""
        self.assertFalse(check_history([put("k", "1", 1, 2, failed=True), get("k", "1", 5, 6)]).ok)

    def test_keys_are_checked_independently(self) -> None:
        """A violation on one key is reported with that key even if others are fine."""
        history = [
            put("a", "1", 1, 2),
            get("a", "1", 3, 4),
            put("b", "1", 1, 2),
            get("b", None, 3, 4),
        ]
        result = check_history(history)
        self.assertFalse(result.ok)
        self.assertEqual(result.key, "b")

    def test_many_concurrent_writes_are_checked_quickly(self) -> None:
        """Memoisation keeps a wide concurrent history tractable."""
        history = [put("k", str(i), i, 100 + i) for i in range(14)]
        history.append(get("k", "13", 200, 201))
        result = check_history(history)
        self.assertTrue(result.ok)
        self.assertLess(result.explored, 100_000)

    def test_unknown_kind_is_rejected(self) -> None:
        """An operation of another kind is an error naming the kind."""
        op = Operation(1, "cas", "k", "1", 1, 2)
        with self.assertRaisesRegex(ValueError, "'cas'"):
            check_history([op])
