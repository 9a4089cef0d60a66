"""Tests for L{scheduler0.timeutil}: the one textual form of an instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.timeutil import format_instant, parse_instant


class FormatTests(SynchronousTestCase):
    def test_early_years_have_four_digits_and_read_back(self) -> None:
        """Years before 1000 are zero-padded, so they parse back and sort as text."""
        for year in (1, 437, 999, 1000, 2026, 9999):
            instant = datetime(year, 5, 30, 0, 1, 34, 123456, tzinfo=UTC)
            text = format_instant(instant)
            self.assertRegex(text, r"^\d{4}-05-30T00:01:34\.123Z$")
            self.assertEqual(parse_instant(text), instant.replace(microsecond=123000))
        self.assertLess(
            format_instant(datetime(437, 1, 1, tzinfo=UTC)),
            format_instant(datetime(1970, 1, 1, tzinfo=UTC)),
        )

    def test_other_zones_are_rendered_in_utc(self) -> None:
        """An instant with an offset is written as the same instant in UTC."""
        zone = timezone(timedelta(hours=-12, minutes=-8))
        instant = datetime(437, 5, 30, 0, 1, 34, tzinfo=zone)
        self.assertEqual(format_instant(instant), "0437-05-30T12:09:34.000Z")
