"""
Per-minute execution outcomes and lateness of the last hour, for
C{GET /executions/summary} (the dashboard's chart).

The stored execution history keeps only the newest ExecutionHistoryPerJob
records of each job, so a job firing every second shows only its last
couple of minutes there. Instead, each node counts the executions it makes
as they happen, in a ring of one bucket per minute (the minute is
C{floor(epoch / 60)}, so every node's boundaries agree), and a cluster
node sums every member's buckets (L{merge}).

The counts live in memory only: a node that restarts starts again from
empty buckets, and the minutes before its restart are missing from the
summary. Old minutes are dropped as writes and reads reach their ring
place again; no timer runs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime

from scheduler0.metrics import LATENCY_BUCKETS
from scheduler0.timeutil import format_instant, utc_from_timestamp

#: Minutes kept (and the most a snapshot may cover).
MAX_MINUTES = 60

# A bucket is a list: [minute, succeeded, failed, skipped, started,
# lateness sum, lateness max, lateness histogram (len(LATENCY_BUCKETS) + 1)].
_MINUTE = 0
_STARTED = 4
_LATENESS_SUM = 5
_LATENESS_MAX = 6
_HISTOGRAM = 7
_OUTCOME_INDEX = {"succeeded": 1, "failed": 2, "skipped": 3}
_COUNTED = ("succeeded", "failed", "skipped", "started")


def _empty_bucket(minute: int) -> list:
    return [minute, 0, 0, 0, 0, 0.0, 0.0, [0] * (len(LATENCY_BUCKETS) + 1)]


def check_minutes(minutes: Any, most: int = MAX_MINUTES) -> int:
    """C{minutes} if it is an integer from 1 to C{most}; a ValueError naming it otherwise."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= most:
        raise ValueError(f"minutes: must be an integer from 1 to {most}, not {minutes!r}")
    return minutes


@attrs.define(eq=False)
class ExecutionSummary:
    """
    This node's executions per minute over the last C{minutes} minutes:
    final outcomes by the minute this node's clock saw them, first attempts
    and their lateness (start minus slot) by the minute they started.
    C{on_execution} and C{on_started} are the scheduler's observers.
    """

    clock: IReactorTime
    minutes: int = MAX_MINUTES
    _ring: list[list] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        check_minutes(self.minutes)
        # Minute -1 is before any real minute: an unused place.
        self._ring = [_empty_bucket(-1) for _ in range(self.minutes)]

    # -- observers (the hot path) ----------------------------------------------

    def on_execution(self, record: dict) -> None:
        """One final execution record (succeeded, failed or skipped) made by this node."""
        index = _OUTCOME_INDEX.get(record["state"])
        if index is None:
            return
        minute = int(self.clock.seconds() // 60)
        bucket = self._ring[minute % self.minutes]
        if bucket[_MINUTE] != minute:
            claimed = self._claim(minute)
            if claimed is None:
                return
            bucket = claimed
        bucket[index] += 1

    def on_started(self, delivery: Any, at: float) -> None:
        """
        The first attempt of C{delivery} began at C{at} (POSIX seconds); a
        delivery without a slot instant (C{scheduled_s} None) is not counted.
        """
        scheduled = delivery.scheduled_s
        if scheduled is None:
            return
        minute = int(at // 60)
        bucket = self._ring[minute % self.minutes]
        if bucket[_MINUTE] != minute:
            claimed = self._claim(minute)
            if claimed is None:
                return
            bucket = claimed
        lateness = at - scheduled
        bucket[_STARTED] += 1
        bucket[_LATENESS_SUM] += lateness
        if lateness > bucket[_LATENESS_MAX]:
            bucket[_LATENESS_MAX] = lateness
        bucket[_HISTOGRAM][bisect_left(LATENCY_BUCKETS, lateness)] += 1

    def _claim(self, minute: int) -> list | None:
        """
        The ring place of C{minute}, emptied for it; None when the place
        holds a later minute (C{minute} is out of the window already).
        """
        place = minute % self.minutes
        if self._ring[place][_MINUTE] > minute:
            return None
        bucket = self._ring[place] = _empty_bucket(minute)
        return bucket

    # -- reading -----------------------------------------------------------------

    def snapshot(self, minutes: int = MAX_MINUTES) -> dict:
        """
        The last C{minutes} minutes (the current, partial one last), with
        totals and the lateness histogram over them: the shape of
        C{GET /executions/summary} without C{nodes} and C{missing_nodes}.
        """
        check_minutes(minutes, self.minutes)
        now = int(self.clock.seconds() // 60)
        ring = self._ring
        buckets = []
        histogram = [0] * (len(LATENCY_BUCKETS) + 1)
        for minute in range(now - minutes + 1, now + 1):
            bucket = ring[minute % self.minutes]
            if bucket[_MINUTE] != minute:
                bucket = _empty_bucket(minute)
            buckets.append(
                {
                    "at": format_instant(utc_from_timestamp(minute * 60)),
                    "succeeded": bucket[1],
                    "failed": bucket[2],
                    "skipped": bucket[3],
                    "started": bucket[_STARTED],
                    "lateness_sum_s": round(bucket[_LATENESS_SUM], 6),
                    "lateness_max_s": round(bucket[_LATENESS_MAX], 6),
                }
            )
            for i, count in enumerate(bucket[_HISTOGRAM]):
                histogram[i] += count
        return {
            "minutes": minutes,
            "buckets": buckets,
            "totals": _totals(buckets),
            "lateness": {"bounds_s": list(LATENCY_BUCKETS), "counts": histogram},
        }


def _totals(buckets: Iterable[dict]) -> dict:
    totals = dict.fromkeys(_COUNTED, 0)
    for bucket in buckets:
        for key in _COUNTED:
            totals[key] += bucket[key]
    return totals


def merge(snapshots: list[dict]) -> dict:
    """
    Several nodes' snapshots as one: buckets summed by minute (C{at}),
    lateness sums and histograms added, maxima taken. When the nodes' clocks
    straddle a minute boundary the union has more minutes than asked; the
    oldest are dropped so C{minutes} buckets remain (the histogram still
    counts what those nodes had in them).
    """
    if not snapshots:
        raise ValueError("snapshots: at least one is needed")
    minutes = max(snapshot["minutes"] for snapshot in snapshots)
    by_minute: dict[str, dict] = {}
    histogram = [0] * (len(LATENCY_BUCKETS) + 1)
    for snapshot in snapshots:
        for bucket in snapshot["buckets"]:
            into = by_minute.get(bucket["at"])
            if into is None:
                by_minute[bucket["at"]] = dict(bucket)
                continue
            for key in _COUNTED:
                into[key] += bucket[key]
            into["lateness_sum_s"] = round(into["lateness_sum_s"] + bucket["lateness_sum_s"], 6)
            into["lateness_max_s"] = max(into["lateness_max_s"], bucket["lateness_max_s"])
        for i, count in enumerate(snapshot["lateness"]["counts"]):
            histogram[i] += count
    # format_instant's fixed-width text sorts as the instants do.
    buckets = [by_minute[at] for at in sorted(by_minute)][-minutes:]
    return {
        "minutes": minutes,
        "buckets": buckets,
        "totals": _totals(buckets),
        "lateness": {"bounds_s": list(LATENCY_BUCKETS), "counts": histogram},
    }
