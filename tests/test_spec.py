"""
Tests for L{scheduler0.scheduler.spec}: spec syntax, slot arithmetic in UTC
and in zones with daylight saving, @every anchoring, @at, execution ids.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.scheduler.spec import (
    Schedule,
    SpecError,
    execution_id,
    make_schedule,
    validate_spec,
    validate_timezone,
)
from scheduler0.timeutil import format_instant, parse_instant

UTC = UTC


def at(text: str) -> datetime:
    """An aware UTC instant from RFC 3339 text."""
    return parse_instant(text)


def slots(schedule: Schedule, start: str, count: int) -> list[str]:
    """The next C{count} slots after C{start}, as RFC 3339 UTC strings."""
    found = []
    instant: datetime | None = at(start)
    for _ in range(count):
        instant = schedule.next_after(instant)  # type: ignore[arg-type]
        if instant is None:
            break
        found.append(format_instant(instant))
    return found


def local_slots(schedule: Schedule, start: str, count: int) -> list[str]:
    """The next C{count} slots after C{start} as local wall times with zone abbreviation."""
    zone = ZoneInfo(schedule.timezone)
    found = []
    instant: datetime | None = at(start)
    for _ in range(count):
        instant = schedule.next_after(instant)  # type: ignore[arg-type]
        assert instant is not None
        found.append(instant.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z"))
    return found


class ValidationTests(SynchronousTestCase):
    """Bad specs and zones are rejected with a message naming what is wrong."""

    def assert_spec_error(self, spec: str, *fragments: str) -> None:
        with self.assertRaises(SpecError) as caught:
            validate_spec(spec)
        message = str(caught.exception)
        self.assertTrue(message.startswith("spec: "), message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_valid_specs_are_accepted(self) -> None:
        """Every supported form validates without error."""
        for spec in [
            "* * * * *",
            "*/5 * * * * *",
            "0 9 * * mon-fri",
            "0 0 1 JAN,Jul *",
            "15,45 8-18/2 * * 1-5",
            "0 0 * * 7",
            "5/15 * * * *",
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
            "@DAILY",
            "@every 1s",
            "@every 90s",
            "@every 1h30m",
            "@every 1.5h",
            "@every 1500ms",
            "@at 2026-05-01T09:00:00Z",
            "@at 2026-05-01T09:00:00.250+02:00",
            "  0 0 * * *  ",
            "\t@every\t1m ",
        ]:
            validate_spec(spec)

    def test_empty_spec(self) -> None:
        """An empty or blank spec is rejected as empty."""
        self.assert_spec_error("", "empty")
        self.assert_spec_error("   ", "empty")

    def test_wrong_field_count(self) -> None:
        """Specs with other than 5 or 6 fields are rejected, naming the count."""
        self.assert_spec_error("* * * *", "expected 5 fields", "got 4")
        self.assert_spec_error("* * * * * * *", "got 7")

    def test_out_of_range_values(self) -> None:
        """A value outside its field's range names the field, the value and the range."""
        self.assert_spec_error("61 * * * *", "minute field", "value 61", "0-59")
        self.assert_spec_error("0 24 * * *", "hour field", "value 24", "0-23")
        self.assert_spec_error("0 0 0 * *", "day-of-month field", "value 0", "1-31")
        self.assert_spec_error("0 0 32 * *", "day-of-month field", "value 32")
        self.assert_spec_error("0 0 * 13 *", "month field", "value 13", "1-12")
        self.assert_spec_error("0 0 * * 8", "day-of-week field", "value 8", "0-7")
        self.assert_spec_error("60 * * * * *", "second field", "value 60")
        self.assert_spec_error("1-70 * * * *", "minute field", "value 70")

    def test_junk_values(self) -> None:
        """Values that are neither numbers nor names of the field are rejected."""
        self.assert_spec_error("x * * * *", "minute field 'x'", "not a number")
        self.assert_spec_error("0 0 * foo *", "month field 'foo'", "not a number or a month name")
        self.assert_spec_error("0 0 * * funday", "day-of-week field", "'funday'")
        self.assert_spec_error("0 0 * mon *", "month field", "'mon'")
        self.assert_spec_error("0 0 jan * *", "day-of-month field", "'jan'", "not a number")
        self.assert_spec_error("-1 * * * *", "minute field")
        self.assert_spec_error("L * * * *", "minute field")
        self.assert_spec_error("0 0 ? * *", "day-of-month field")
        self.assert_spec_error("0 0 * * 5#2", "day-of-week field")

    def test_bad_steps_ranges_lists(self) -> None:
        """Zero or non-numeric steps, backwards ranges and empty list items are rejected."""
        self.assert_spec_error("*/0 * * * *", "minute field '*/0'", "step must be at least 1")
        self.assert_spec_error("*/x * * * *", "step 'x' is not a number")
        self.assert_spec_error("0 5-2 * * *", "hour field '5-2'", "runs backwards")
        self.assert_spec_error("1,,2 * * * *", "minute field '1,,2'", "empty list item")
        self.assert_spec_error("0 0 * * fri-mon", "day-of-week field", "runs backwards")

    def test_spec_that_never_fires(self) -> None:
        """A day of month that no chosen month has is rejected as never firing."""
        self.assert_spec_error("0 0 30 2 *", "day-of-month field '30'", "never fires")
        self.assert_spec_error("0 0 31 4,6,9,11 *", "never fires")
        validate_spec("0 0 29 2 *")
        validate_spec("0 0 30 2 mon")  # OR: Mondays in February still fire

    def test_macros(self) -> None:
        """Unknown macros, @reboot and macros with arguments are rejected."""
        self.assert_spec_error("@dayly", "unknown macro '@dayly'", "@daily")
        self.assert_spec_error("@reboot", "@reboot is not supported")
        self.assert_spec_error("@daily 5", "@daily takes no arguments")

    def test_every_durations(self) -> None:
        """@every rejects missing, zero, negative, too short, sub-millisecond and junk durations."""
        self.assert_spec_error("@every", "@every needs a duration")
        self.assert_spec_error("@every 0", "'0'", "must be positive")
        self.assert_spec_error("@every 0s", "must be positive")
        self.assert_spec_error("@every -1m", "'-1m'", "must be positive")
        self.assert_spec_error("@every 500ms", "'500ms'", "shorter than the minimum of 1s")
        self.assert_spec_error("@every 999999us", "shorter than the minimum")
        self.assert_spec_error("@every 1.0000001s", "whole number of milliseconds")
        self.assert_spec_error("@every 100000h", "longer than the maximum")
        for junk in ["abc", "10", "1d", "1h30", "1 h", "1m-5s", "h"]:
            self.assert_spec_error(f"@every {junk}", "is not a duration")

    def test_at_instants(self) -> None:
        """@at needs a full RFC 3339 instant with a Z or numeric offset."""
        self.assert_spec_error("@at", "@at needs an RFC 3339 instant")
        self.assert_spec_error(
            "@at 2026-05-01T09:00:00", "with a UTC offset", "'2026-05-01T09:00:00'"
        )
        self.assert_spec_error("@at 2026-05-01", "@at needs an RFC 3339 instant")
        self.assert_spec_error("@at tomorrow", "@at needs an RFC 3339 instant")
        self.assert_spec_error("@at 2026-02-30T09:00:00Z", "not a valid date and time")

    def test_non_string_spec(self) -> None:
        """A spec that is not a string is rejected."""
        self.assertRaises(SpecError, validate_spec, 5)  # type: ignore[arg-type]

    def test_timezones(self) -> None:
        """Known IANA zones validate; unknown and malformed names are rejected by name."""
        for name in ["UTC", "Etc/UTC", "America/New_York", "Europe/Berlin", "Australia/Sydney"]:
            validate_timezone(name)
        with self.assertRaises(SpecError) as caught:
            validate_timezone("Mars/Base")
        self.assertEqual(str(caught.exception), "timezone: unknown IANA zone 'Mars/Base'")
        for name in ["", "../etc/passwd", "/etc/localtime"]:
            with self.assertRaises(SpecError) as caught:
                validate_timezone(name)
            self.assertTrue(str(caught.exception).startswith("timezone: "))

    def test_make_schedule_validates(self) -> None:
        """make_schedule raises SpecError for a bad spec, zone, missing or naive anchor."""
        self.assertRaises(SpecError, make_schedule, "61 * * * *")
        self.assertRaises(SpecError, make_schedule, "* * * * *", "Mars/Base")
        with self.assertRaises(SpecError) as caught:
            make_schedule("@every 1m")
        self.assertIn("anchor", str(caught.exception))
        with self.assertRaises(SpecError) as caught:
            make_schedule("@every 1m", "UTC", datetime(2026, 1, 1))
        self.assertIn("anchor", str(caught.exception))

    def test_naive_instants_are_refused(self) -> None:
        """next_after, slots_between and execution_id refuse naive datetimes."""
        schedule = make_schedule("* * * * *")
        self.assertRaises(ValueError, schedule.next_after, datetime(2026, 1, 1))
        self.assertRaises(
            ValueError, schedule.slots_between, datetime(2026, 1, 1), at("2026-01-02T00:00:00Z")
        )
        self.assertRaises(ValueError, execution_id, "job", datetime(2026, 1, 1))


class CronUTCTests(SynchronousTestCase):
    """Cron field semantics, evaluated in UTC."""

    def test_every_minute(self) -> None:
        """'* * * * *' fires at each whole minute strictly after the instant."""
        schedule = make_schedule("* * * * *")
        self.assertEqual(
            slots(schedule, "2026-01-01T00:00:00Z", 3),
            ["2026-01-01T00:01:00.000Z", "2026-01-01T00:02:00.000Z", "2026-01-01T00:03:00.000Z"],
        )
        self.assertEqual(
            slots(schedule, "2026-01-01T00:00:59.999Z", 1), ["2026-01-01T00:01:00.000Z"]
        )

    def test_results_are_aware_utc(self) -> None:
        """Slots come back as aware UTC datetimes whatever the input's offset."""
        schedule = make_schedule("0 12 * * *", "Europe/Berlin")
        instant = datetime(2026, 6, 1, 0, 0, tzinfo=timezone(timedelta(hours=5)))
        slot = schedule.next_after(instant)
        assert slot is not None
        self.assertIs(slot.tzinfo, UTC)
        self.assertEqual(format_instant(slot), "2026-06-01T10:00:00.000Z")

    def test_six_field_seconds(self) -> None:
        """A 6-field spec's leading field is seconds."""
        schedule = make_schedule("*/15 * * * * *")
        self.assertEqual(
            slots(schedule, "2026-01-01T00:00:50.500Z", 3),
            ["2026-01-01T00:01:00.000Z", "2026-01-01T00:01:15.000Z", "2026-01-01T00:01:30.000Z"],
        )
        self.assertEqual(
            slots(make_schedule("30 0 12 * * *"), "2026-01-01T12:00:30Z", 1),
            ["2026-01-02T12:00:30.000Z"],
        )

    def test_names_are_case_insensitive(self) -> None:
        """Month and weekday names work in any case, alone and in ranges."""
        schedule = make_schedule("0 9 * JAN-feb Mon-WED")
        self.assertEqual(
            slots(schedule, "2026-02-24T10:00:00Z", 3),
            ["2026-02-25T09:00:00.000Z", "2027-01-04T09:00:00.000Z", "2027-01-05T09:00:00.000Z"],
        )

    def test_seven_is_sunday(self) -> None:
        """Day-of-week 7 means Sunday, as 0 does."""
        self.assertEqual(
            slots(make_schedule("0 0 * * 7"), "2026-01-01T00:00:00Z", 2),
            slots(make_schedule("0 0 * * 0"), "2026-01-01T00:00:00Z", 2),
        )
        self.assertEqual(
            slots(make_schedule("0 0 * * 7"), "2026-01-01T00:00:00Z", 1),
            ["2026-01-04T00:00:00.000Z"],
        )
        self.assertEqual(
            slots(make_schedule("0 0 * * 5-7"), "2026-01-01T00:00:00Z", 4),
            [
                "2026-01-02T00:00:00.000Z",
                "2026-01-03T00:00:00.000Z",
                "2026-01-04T00:00:00.000Z",
                "2026-01-09T00:00:00.000Z",
            ],
        )

    def test_ranges_steps_lists(self) -> None:
        """Ranges with steps, 'N/step' and lists expand as in cron."""
        self.assertEqual(
            slots(make_schedule("10-30/10,45 0 * * *"), "2026-01-01T00:00:00Z", 5),
            [
                "2026-01-01T00:10:00.000Z",
                "2026-01-01T00:20:00.000Z",
                "2026-01-01T00:30:00.000Z",
                "2026-01-01T00:45:00.000Z",
                "2026-01-02T00:10:00.000Z",
            ],
        )
        self.assertEqual(
            slots(make_schedule("50/5 0 * * *"), "2026-01-01T00:00:00Z", 3),
            ["2026-01-01T00:50:00.000Z", "2026-01-01T00:55:00.000Z", "2026-01-02T00:50:00.000Z"],
        )

    def test_day_of_month_or_day_of_week(self) -> None:
        """With both day fields restricted, a day matching either one fires (Vixie OR)."""
        schedule = make_schedule("0 0 13 * fri")
        self.assertEqual(
            slots(schedule, "2026-01-01T00:00:00Z", 4),
            [
                "2026-01-02T00:00:00.000Z",  # Friday
                "2026-01-09T00:00:00.000Z",  # Friday
                "2026-01-13T00:00:00.000Z",  # the 13th, a Tuesday
                "2026-01-16T00:00:00.000Z",  # Friday
            ],
        )

    def test_star_day_field_means_and(self) -> None:
        """When either day field starts with '*', both must match (Vixie AND)."""
        # days 1, 14, 27 that are also Fridays: 2026-02-27, 2026-03-27, 2026-05-01
        self.assertEqual(
            slots(make_schedule("0 0 */13 * fri"), "2026-01-01T00:00:00Z", 3),
            ["2026-02-27T00:00:00.000Z", "2026-03-27T00:00:00.000Z", "2026-05-01T00:00:00.000Z"],
        )
        self.assertEqual(
            slots(make_schedule("0 0 13 * *"), "2026-01-01T00:00:00Z", 2),
            ["2026-01-13T00:00:00.000Z", "2026-02-13T00:00:00.000Z"],
        )
        # Day-of-week '*/2' (Sun, Tue, Thu, Sat) AND the 13th.
        self.assertEqual(
            slots(make_schedule("0 0 13 * */2"), "2026-01-01T00:00:00Z", 2),
            ["2026-01-13T00:00:00.000Z", "2026-06-13T00:00:00.000Z"],
        )

    def test_macros(self) -> None:
        """The macros mean their usual cron lines."""
        start = "2026-01-14T10:00:00Z"  # a Wednesday
        expected = {
            "@yearly": "2027-01-01T00:00:00.000Z",
            "@annually": "2027-01-01T00:00:00.000Z",
            "@monthly": "2026-02-01T00:00:00.000Z",
            "@weekly": "2026-01-18T00:00:00.000Z",
            "@daily": "2026-01-15T00:00:00.000Z",
            "@midnight": "2026-01-15T00:00:00.000Z",
            "@hourly": "2026-01-14T11:00:00.000Z",
        }
        for macro, first in expected.items():
            self.assertEqual(slots(make_schedule(macro), start, 1), [first], macro)

    def test_leap_day(self) -> None:
        """'0 0 29 2 *' fires only on leap days."""
        self.assertEqual(
            slots(make_schedule("0 0 29 2 *"), "2026-01-01T00:00:00Z", 2),
            ["2028-02-29T00:00:00.000Z", "2032-02-29T00:00:00.000Z"],
        )

    def test_agrees_with_croniter_in_utc(self) -> None:
        """In UTC, specs without DST or Vixie star subtleties give croniter's slots."""
        start = at("2026-02-26T13:17:05Z")
        for spec in [
            "* * * * *",
            "*/7 * * * *",
            "5,10-20/3 */5 * * *",
            "0 9-17 * * mon-fri",
            "30 4 1,15 * *",
            "0 0 13 * fri",
            "0 12 * jan,jun,dec *",
            "0 0 * * 0,6",
            "0 0 28-31 * *",
            "15 3 * * 7",
            "@weekly",
            "@monthly",
        ]:
            ours = make_schedule(spec)
            theirs = croniter(spec, start)
            instant = start
            for _ in range(40):
                slot = ours.next_after(instant)
                assert slot is not None
                self.assertEqual(slot, theirs.get_next(datetime), spec)
                instant = slot
        for spec in ["*/5 * * * * *", "10-20 */2 3 * * *"]:
            ours = make_schedule(spec)
            theirs = croniter(spec, start, second_at_beginning=True)
            instant = start
            for _ in range(40):
                slot = ours.next_after(instant)
                assert slot is not None
                self.assertEqual(slot, theirs.get_next(datetime), spec)
                instant = slot


class TimeZoneTests(SynchronousTestCase):
    """Cron in a job's zone, with Vixie cron's daylight-saving rules."""

    def test_daily_in_berlin(self) -> None:
        """@daily fires at local midnight, before and after the spring change."""
        self.assertEqual(
            slots(make_schedule("@daily", "Europe/Berlin"), "2026-03-27T12:00:00Z", 4),
            [
                "2026-03-27T23:00:00.000Z",
                "2026-03-28T23:00:00.000Z",
                "2026-03-29T22:00:00.000Z",
                "2026-03-30T22:00:00.000Z",
            ],
        )

    def test_non_hour_offset_zone(self) -> None:
        """Minute fields are read on the local clock in a zone with a half-hour offset."""
        self.assertEqual(
            slots(make_schedule("0 9 * * *", "Asia/Kolkata"), "2026-01-01T00:00:00Z", 1),
            ["2026-01-01T03:30:00.000Z"],
        )

    # -- America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST

    def test_new_york_spring_forward_specific_hour(self) -> None:
        """'30 2 * * *' fires once at 03:00 EDT on the night 02:30 does not exist."""
        schedule = make_schedule("30 2 * * *", "America/New_York")
        self.assertEqual(
            slots(schedule, "2026-03-07T12:00:00Z", 3),
            ["2026-03-08T07:00:00.000Z", "2026-03-09T06:30:00.000Z", "2026-03-10T06:30:00.000Z"],
        )
        self.assertEqual(
            local_slots(schedule, "2026-03-07T12:00:00Z", 2),
            ["2026-03-08 03:00:00 EDT", "2026-03-09 02:30:00 EDT"],
        )

    def test_new_york_spring_forward_several_slots_in_gap(self) -> None:
        """All slots inside the gap collapse into one firing at the gap's end."""
        schedule = make_schedule("0,20,40 2,3 * * *", "America/New_York")
        self.assertEqual(
            local_slots(schedule, "2026-03-08T06:00:00Z", 4),
            [
                "2026-03-08 03:00:00 EDT",
                "2026-03-08 03:20:00 EDT",
                "2026-03-08 03:40:00 EDT",
                "2026-03-09 02:00:00 EDT",
            ],
        )

    def test_new_york_spring_forward_every_hour(self) -> None:
        """'*/30 * * * *' has no slots in the gap: 01:30 EST is followed by 03:00 EDT."""
        schedule = make_schedule("*/30 * * * *", "America/New_York")
        self.assertEqual(
            local_slots(schedule, "2026-03-08T05:45:00Z", 4),
            [
                "2026-03-08 01:00:00 EST",
                "2026-03-08 01:30:00 EST",
                "2026-03-08 03:00:00 EDT",
                "2026-03-08 03:30:00 EDT",
            ],
        )
        self.assertEqual(slots(schedule, "2026-03-08T06:45:00Z", 1), ["2026-03-08T07:00:00.000Z"])

    def test_new_york_fall_back_every_hour(self) -> None:
        """'*/30 * * * *' fires through both passes of the repeated hour on real time."""
        schedule = make_schedule("*/30 * * * *", "America/New_York")
        self.assertEqual(
            slots(schedule, "2026-11-01T04:45:00Z", 5),
            [
                "2026-11-01T05:00:00.000Z",
                "2026-11-01T05:30:00.000Z",
                "2026-11-01T06:00:00.000Z",
                "2026-11-01T06:30:00.000Z",
                "2026-11-01T07:00:00.000Z",
            ],
        )
        self.assertEqual(
            local_slots(schedule, "2026-11-01T04:45:00Z", 5),
            [
                "2026-11-01 01:00:00 EDT",
                "2026-11-01 01:30:00 EDT",
                "2026-11-01 01:00:00 EST",
                "2026-11-01 01:30:00 EST",
                "2026-11-01 02:00:00 EST",
            ],
        )

    def test_new_york_fall_back_from_inside_either_pass(self) -> None:
        """Asked from inside the first or the second pass, the next slot is the next real one."""
        schedule = make_schedule("*/30 * * * *", "America/New_York")
        self.assertEqual(slots(schedule, "2026-11-01T05:40:00Z", 1), ["2026-11-01T06:00:00.000Z"])
        self.assertEqual(slots(schedule, "2026-11-01T05:30:00Z", 1), ["2026-11-01T06:00:00.000Z"])
        self.assertEqual(
            slots(schedule, "2026-11-01T05:59:59.999Z", 1), ["2026-11-01T06:00:00.000Z"]
        )
        self.assertEqual(slots(schedule, "2026-11-01T06:00:00Z", 1), ["2026-11-01T06:30:00.000Z"])
        self.assertEqual(slots(schedule, "2026-11-01T06:10:00Z", 1), ["2026-11-01T06:30:00.000Z"])
        self.assertEqual(slots(schedule, "2026-11-01T06:45:00Z", 1), ["2026-11-01T07:00:00.000Z"])
        seconds = make_schedule("* * * * * *", "America/New_York")
        self.assertEqual(
            slots(seconds, "2026-11-01T05:59:59Z", 2),
            ["2026-11-01T06:00:00.000Z", "2026-11-01T06:00:01.000Z"],
        )
        self.assertEqual(slots(seconds, "2026-11-01T06:59:59Z", 1), ["2026-11-01T07:00:00.000Z"])

    def test_new_york_fall_back_specific_hour(self) -> None:
        """'30 1 * * *' fires once on fall-back night, in the first pass (01:30 EDT)."""
        schedule = make_schedule("30 1 * * *", "America/New_York")
        self.assertEqual(
            slots(schedule, "2026-10-31T12:00:00Z", 3),
            ["2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z", "2026-11-03T06:30:00.000Z"],
        )
        # From inside either pass, the second 01:30 is never a slot.
        self.assertEqual(slots(schedule, "2026-11-01T05:45:00Z", 1), ["2026-11-02T06:30:00.000Z"])
        self.assertEqual(slots(schedule, "2026-11-01T06:10:00Z", 1), ["2026-11-02T06:30:00.000Z"])

    def test_new_york_fall_back_specific_hour_with_minute_star(self) -> None:
        """A spec naming hour 1 fires every minute of the first pass only."""
        schedule = make_schedule("*/20 1 * * *", "America/New_York")
        self.assertEqual(
            local_slots(schedule, "2026-11-01T04:50:00Z", 4),
            [
                "2026-11-01 01:00:00 EDT",
                "2026-11-01 01:20:00 EDT",
                "2026-11-01 01:40:00 EDT",
                "2026-11-02 01:00:00 EST",
            ],
        )

    def test_slots_between_across_fall_back(self) -> None:
        """slots_between lists the real slots in order, start exclusive and end inclusive."""
        schedule = make_schedule("*/30 * * * *", "America/New_York")
        self.assertEqual(
            [
                format_instant(s)
                for s in schedule.slots_between(
                    at("2026-11-01T05:00:00Z"), at("2026-11-01T07:00:00Z")
                )
            ],
            [
                "2026-11-01T05:30:00.000Z",
                "2026-11-01T06:00:00.000Z",
                "2026-11-01T06:30:00.000Z",
                "2026-11-01T07:00:00.000Z",
            ],
        )

    # -- Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET

    def test_berlin_spring_forward(self) -> None:
        """In Berlin '30 2 * * *' fires at 03:00 CEST on 2026-03-29; '*/30 * * * *' skips 02:xx."""
        self.assertEqual(
            local_slots(make_schedule("30 2 * * *", "Europe/Berlin"), "2026-03-28T12:00:00Z", 2),
            ["2026-03-29 03:00:00 CEST", "2026-03-30 02:30:00 CEST"],
        )
        self.assertEqual(
            local_slots(make_schedule("*/30 * * * *", "Europe/Berlin"), "2026-03-29T00:15:00Z", 3),
            ["2026-03-29 01:30:00 CET", "2026-03-29 03:00:00 CEST", "2026-03-29 03:30:00 CEST"],
        )

    def test_berlin_fall_back(self) -> None:
        """In Berlin, '30 2 * * *' fires once on 2026-10-25; '0,30 * * * *' fires in both passes."""
        self.assertEqual(
            slots(make_schedule("30 2 * * *", "Europe/Berlin"), "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"],
        )
        self.assertEqual(
            local_slots(make_schedule("0,30 * * * *", "Europe/Berlin"), "2026-10-24T23:45:00Z", 5),
            [
                "2026-10-25 02:00:00 CEST",
                "2026-10-25 02:30:00 CEST",
                "2026-10-25 02:00:00 CET",
                "2026-10-25 02:30:00 CET",
                "2026-10-25 03:00:00 CET",
            ],
        )

    # -- Australia/Sydney: 2026-04-05 03:00 AEDT -> 02:00 AEST; 2026-10-04 02:00 AEST -> 03:00 AEDT

    def test_sydney_fall_back_in_april(self) -> None:
        """In Sydney, '30 2 * * *' fires once on 2026-04-05, in the first (daylight) pass."""
        self.assertEqual(
            local_slots(make_schedule("30 2 * * *", "Australia/Sydney"), "2026-04-04T00:00:00Z", 2),
            ["2026-04-05 02:30:00 AEDT", "2026-04-06 02:30:00 AEST"],
        )
        self.assertEqual(
            slots(make_schedule("30 * * * *", "Australia/Sydney"), "2026-04-04T15:00:00Z", 3),
            ["2026-04-04T15:30:00.000Z", "2026-04-04T16:30:00.000Z", "2026-04-04T17:30:00.000Z"],
        )

    def test_sydney_spring_forward_in_october(self) -> None:
        """In Sydney, '30 2 * * *' fires at 03:00 AEDT on 2026-10-04."""
        self.assertEqual(
            local_slots(make_schedule("30 2 * * *", "Australia/Sydney"), "2026-10-03T00:00:00Z", 2),
            ["2026-10-04 03:00:00 AEDT", "2026-10-05 02:30:00 AEDT"],
        )

    def test_half_hour_daylight_saving(self) -> None:
        """Lord Howe Island's 30-minute change: a slot in its gap fires at the gap's end (02:30)."""
        # 2026-10-04 02:00 +1030 -> 02:30 +11
        self.assertEqual(
            slots(make_schedule("15 2 * * *", "Australia/Lord_Howe"), "2026-10-03T00:00:00Z", 1),
            ["2026-10-03T15:30:00.000Z"],
        )


# Field choices for the property test: every-hour and specific-hour forms.
_MINUTES = st.sampled_from(["*", "*/15", "0", "30", "0,30", "5-10", "*/7", "59"])
_HOURS = st.sampled_from(["*", "0-23", "1", "2", "1-3", "*/2", "2,3", "0", "3"])
_WEEKDAYS = st.sampled_from(["*", "1-5", "sun", "*/3"])
_ZONES = st.sampled_from(
    ["America/New_York", "Europe/Berlin", "Australia/Sydney", "Australia/Lord_Howe"]
)
_TRANSITIONS = [
    at("2026-03-08T07:00:00Z"),
    at("2026-11-01T06:00:00Z"),
    at("2026-03-29T01:00:00Z"),
    at("2026-10-25T01:00:00Z"),
    at("2026-04-04T16:00:00Z"),
    at("2026-10-03T16:00:00Z"),
    at("2026-04-04T15:00:00Z"),
    at("2026-10-03T15:30:00Z"),
]


def reference_next_after(
    spec: str, zone_name: str, instant: datetime, horizon: timedelta
) -> datetime | None:
    """
    A slow, independent statement of the rules: walk real time minute by
    minute, read the local wall clock, and match it against croniter's
    expansion of the fields.
    """
    fields, _ = croniter.expand(spec)
    bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
    minute, hour, day, month, weekday = (
        set(range(low, high + 1))
        if values == ["*"]
        else {int(v) % 7 if i == 4 else int(v) for v in values}
        for i, (values, (low, high)) in enumerate(zip(fields, bounds, strict=True))
    )
    day_text, weekday_text = spec.split()[2], spec.split()[4]
    either = not (day_text.startswith("*") or weekday_text.startswith("*"))
    every_hour = len(hour) == 24

    def matches(wall: datetime) -> bool:
        day_ok = wall.day in day
        weekday_ok = wall.isoweekday() % 7 in weekday
        days = (day_ok or weekday_ok) if either else (day_ok and weekday_ok)
        return days and wall.minute in minute and wall.hour in hour and wall.month in month

    zone = ZoneInfo(zone_name)
    step = timedelta(minutes=1)
    real = instant.replace(second=0, microsecond=0) + step
    previous_wall = (real - step).astimezone(zone).replace(tzinfo=None, fold=0)
    while real <= instant + horizon:
        local = real.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        if not every_hour and wall - previous_wall > step:
            skipped = previous_wall + step
            while skipped < wall:
                if matches(skipped):
                    return real
                skipped += step
        if matches(wall) and (every_hour or local.fold == 0):
            return real
        previous_wall = wall
        real += step
    return None


class PropertyTests(SynchronousTestCase):
    """next_after agrees with a brute-force walk around real DST transitions."""

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(
        minute=_MINUTES,
        hour=_HOURS,
        weekday=_WEEKDAYS,
        zone=_ZONES,
        transition=st.sampled_from(_TRANSITIONS),
        shift=st.integers(min_value=-3 * 3600, max_value=3 * 3600),
        fraction=st.sampled_from([0, 1, 999_999]),
    )
    def test_matches_reference_near_transitions(
        self,
        minute: str,
        hour: str,
        weekday: str,
        zone: str,
        transition: datetime,
        shift: int,
        fraction: int,
    ) -> None:
        """For sampled specs, zones and instants near a change, the next slot is the reference's."""
        spec = f"{minute} {hour} * * {weekday}"
        instant = transition + timedelta(seconds=shift, microseconds=fraction)
        horizon = timedelta(days=8)
        expected = reference_next_after(spec, zone, instant, horizon)
        actual = make_schedule(spec, zone).next_after(instant)
        if expected is None:
            self.assertTrue(
                actual is None or actual > instant + horizon, (spec, zone, instant, actual)
            )
        else:
            self.assertEqual(actual, expected, (spec, zone, format_instant(instant)))


class EveryTests(SynchronousTestCase):
    """@every slots are anchor + k*d for k >= 1, independent of zone and minute boundaries."""

    def test_every_90s_is_anchored(self) -> None:
        """@every 90s fires at anchor + k*90s, not on minute boundaries."""
        schedule = make_schedule("@every 90s", "UTC", at("2026-01-01T00:00:07.250Z"))
        self.assertEqual(
            slots(schedule, "2026-01-01T00:00:00Z", 3),
            ["2026-01-01T00:01:37.250Z", "2026-01-01T00:03:07.250Z", "2026-01-01T00:04:37.250Z"],
        )
        self.assertEqual(
            slots(schedule, "2026-01-01T00:01:37.250Z", 1), ["2026-01-01T00:03:07.250Z"]
        )
        self.assertEqual(
            slots(schedule, "2026-01-01T00:01:37.249Z", 1), ["2026-01-01T00:01:37.250Z"]
        )

    def test_first_slot_is_one_interval_after_anchor(self) -> None:
        """The anchor itself is not a slot; k starts at 1."""
        anchor = at("2026-01-01T00:00:00Z")
        schedule = make_schedule("@every 1m", "UTC", anchor)
        self.assertEqual(schedule.next_after(anchor), anchor + timedelta(minutes=1))
        self.assertEqual(
            schedule.next_after(anchor - timedelta(days=3)), anchor + timedelta(minutes=1)
        )

    def test_far_from_anchor(self) -> None:
        """A year after the anchor the cadence is unchanged and computed directly."""
        anchor = at("2026-01-01T00:00:00.500Z")
        schedule = make_schedule("@every 7s", "UTC", anchor)
        slot = schedule.next_after(at("2027-01-01T00:00:00Z"))
        assert slot is not None
        self.assertEqual((slot - anchor) % timedelta(seconds=7), timedelta(0))
        self.assertTrue(timedelta(0) < slot - at("2027-01-01T00:00:00Z") <= timedelta(seconds=7))

    def test_duration_forms(self) -> None:
        """'1h30m', '1.5h' and '90m' are the same interval; ms durations of at least 1s work."""
        anchor = at("2026-01-01T00:00:00Z")
        forms = ["@every 1h30m", "@every 1.5h", "@every 90m", "@every 5400s", "@every 5400000ms"]
        for spec in forms:
            self.assertEqual(
                make_schedule(spec, "UTC", anchor).next_after(anchor),
                at("2026-01-01T01:30:00Z"),
                spec,
            )
        self.assertEqual(
            make_schedule("@every 1500ms", "UTC", anchor).next_after(anchor),
            at("2026-01-01T00:00:01.500Z"),
        )

    def test_every_ignores_timezone(self) -> None:
        """@every gives the same slots in any zone, straight through DST changes."""
        anchor = at("2026-11-01T04:00:00Z")
        utc = make_schedule("@every 1h", "UTC", anchor)
        new_york = make_schedule("@every 1h", "America/New_York", anchor)
        self.assertEqual(
            utc.slots_between(anchor, at("2026-11-01T09:00:00Z")),
            new_york.slots_between(anchor, at("2026-11-01T09:00:00Z")),
        )
        self.assertEqual(len(new_york.slots_between(anchor, at("2026-11-01T09:00:00Z"))), 5)

    def test_anchor_is_normalised_to_utc(self) -> None:
        """make_schedule stores the anchor in UTC."""
        anchor = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
        schedule = make_schedule("@every 1m", "UTC", anchor)
        assert schedule.anchor is not None
        self.assertIs(schedule.anchor.tzinfo, UTC)
        self.assertEqual(schedule.anchor, at("2026-01-01T00:00:00Z"))


class AtTests(SynchronousTestCase):
    """@at is a one-shot slot."""

    def test_future_at(self) -> None:
        """Before the instant, next_after returns it (converted to UTC)."""
        schedule = make_schedule("@at 2026-05-01T09:00:00+02:00", "Europe/Berlin")
        self.assertEqual(slots(schedule, "2026-04-01T00:00:00Z", 2), ["2026-05-01T07:00:00.000Z"])

    def test_past_at(self) -> None:
        """At or after the instant, there is no next slot."""
        schedule = make_schedule("@at 2026-05-01T07:00:00Z")
        self.assertIsNone(schedule.next_after(at("2026-05-01T07:00:00Z")))
        self.assertIsNone(schedule.next_after(at("2027-01-01T00:00:00Z")))

    def test_slots_between(self) -> None:
        """slots_between includes the @at instant only when it is inside the window."""
        schedule = make_schedule("@at 2026-05-01T07:00:00.123Z")
        self.assertEqual(
            schedule.slots_between(at("2026-05-01T00:00:00Z"), at("2026-05-01T07:00:00.123Z")),
            [at("2026-05-01T07:00:00.123Z")],
        )
        self.assertEqual(
            schedule.slots_between(at("2026-05-01T07:00:00.123Z"), at("2026-06-01T00:00:00Z")), []
        )


class SlotsBetweenTests(SynchronousTestCase):
    """slots_between lists slots in (start, end], honouring a limit."""

    def test_bounds_and_limit(self) -> None:
        """The start is excluded, the end included, and at most `limit` slots come back."""
        schedule = make_schedule("*/10 * * * *")
        start, end = at("2026-01-01T00:00:00Z"), at("2026-01-01T01:00:00Z")
        self.assertEqual(len(schedule.slots_between(start, end)), 6)
        self.assertEqual(schedule.slots_between(start, end)[0], at("2026-01-01T00:10:00Z"))
        self.assertEqual(schedule.slots_between(start, end)[-1], end)
        self.assertEqual(
            schedule.slots_between(start, end, limit=2),
            [at("2026-01-01T00:10:00Z"), at("2026-01-01T00:20:00Z")],
        )
        self.assertEqual(schedule.slots_between(start, end, limit=0), [])
        self.assertEqual(schedule.slots_between(end, start), [])


class ScheduleValueTests(SynchronousTestCase):
    """Schedule is a plain value."""

    def test_equal_schedules(self) -> None:
        """Schedules built from the same inputs are equal and hash alike."""
        one = make_schedule("0 0 * * *", "Europe/Berlin")
        two = make_schedule("0 0 * * *", "Europe/Berlin")
        self.assertEqual(one, two)
        self.assertEqual(hash(one), hash(two))
        self.assertNotEqual(one, make_schedule("0 0 * * *", "UTC"))

    def test_direct_construction_validates(self) -> None:
        """Constructing a Schedule directly validates the spec and zone too."""
        self.assertRaises(SpecError, Schedule, "bad", "UTC", None)
        self.assertRaises(SpecError, Schedule, "* * * * *", "Mars/Base", None)
        self.assertRaises(SpecError, Schedule, "@every 1m", "UTC", datetime(2026, 1, 1))
        self.assertRaises(SpecError, Schedule, "@every 1m", "UTC", None)
        self.assertEqual(Schedule("@daily").timezone, "UTC")


class ExecutionIdTests(SynchronousTestCase):
    """Execution ids depend on (job uuid, slot) only."""

    JOB = "6f1c2f4e-3b7a-4c55-9d0e-2a1b3c4d5e6f"

    def test_pinned_value(self) -> None:
        """The id is uuid5(namespace, "<job>/<epoch ms>"); this value must never change."""
        namespace = uuid.UUID("02730041-dd81-5e90-b4a5-6039f4003200")
        value = execution_id(self.JOB, at("2026-01-01T00:00:00Z"))
        self.assertEqual(value, str(uuid.uuid5(namespace, f"{self.JOB}/1767225600000")))
        self.assertEqual(value, "b4163553-d09e-5a16-8fe0-0d83dc68acab")

    def test_deterministic(self) -> None:
        """The same job and instant give the same id, whatever offset the instant is written in."""
        slot = at("2026-06-01T12:00:00.250Z")
        same = datetime(2026, 6, 1, 14, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=2)))
        self.assertEqual(execution_id(self.JOB, slot), execution_id(self.JOB, same))
        self.assertEqual(
            execution_id(self.JOB, slot), execution_id(self.JOB, at(format_instant(slot)))
        )

    def test_distinct(self) -> None:
        """Different slots (to the millisecond) or different jobs give different ids."""
        slot = at("2026-06-01T12:00:00Z")
        ids = {
            execution_id(self.JOB, slot),
            execution_id(self.JOB, slot + timedelta(milliseconds=1)),
            execution_id(self.JOB, slot + timedelta(minutes=1)),
            execution_id("other-job", slot),
        }
        self.assertEqual(len(ids), 4)

    def test_sub_millisecond_is_ignored(self) -> None:
        """Slots differing by less than a millisecond share an id (ids use integer milliseconds)."""
        slot = at("2026-06-01T12:00:00.250Z")
        self.assertEqual(
            execution_id(self.JOB, slot),
            execution_id(self.JOB, slot + timedelta(microseconds=999)),
        )

    def test_is_a_uuid_string(self) -> None:
        """The id is a lowercase canonical UUID string."""
        value = execution_id(self.JOB, at("2026-06-01T12:00:00Z"))
        self.assertRegex(
            value, r"^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
        )
