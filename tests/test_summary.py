"""
Tests for L{scheduler0.summary} and C{GET /executions/summary}: the
per-minute ring on a fake clock, merging nodes' snapshots, the route in
memory, the peer route and the cluster gather with fakes, then a real node
and a real three-node cluster.
"""

from __future__ import annotations

import json
import os
from base64 import b64encode
from types import SimpleNamespace
from typing import Any

import attrs
import jsonschema_rs
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from scheduler0.api.openapi import build_openapi
from scheduler0.api.routes import ROUTES
from scheduler0.cluster.node import ClusterNode
from scheduler0.cluster.peer import PeerAPI, PeerUnavailable
from scheduler0.metrics import LATENCY_BUCKETS
from scheduler0.summary import ExecutionSummary, merge
from scheduler0.timeutil import format_instant, utc_from_timestamp
from tests.support.api import Admin, Harness, basic

# 2026-11-27T12:00:00Z, a minute boundary.
MINUTE_START = 1795780800.0


def minute_text(seconds: float) -> str:
    return format_instant(utc_from_timestamp(seconds // 60 * 60))


def outcome(state: str = "succeeded", **fields: Any) -> dict:
    return {"job_uuid": "j", "state": state, "skip_reason": None, **fields}


def totals(succeeded: int = 0, failed: int = 0, skipped: int = 0, started: int = 0) -> dict:
    return {"succeeded": succeeded, "failed": failed, "skipped": skipped, "started": started}


def delivery(scheduled_s: float | None) -> Any:
    return SimpleNamespace(job_uuid="j", scheduled_s=scheduled_s)


def at_minute(seconds: float = MINUTE_START + 10) -> tuple[Clock, ExecutionSummary]:
    clock = Clock()
    clock.advance(seconds)
    return clock, ExecutionSummary(clock)


class RingTests(SynchronousTestCase):
    """One node's per-minute counts on a fake clock."""

    def test_the_snapshot_has_one_bucket_per_minute_ending_with_the_current_one(self) -> None:
        """60 buckets by default, a minute apart, oldest first, the last being this minute."""
        clock, summary = at_minute()
        snapshot = summary.snapshot()
        self.assertEqual(snapshot["minutes"], 60)
        ats = [bucket["at"] for bucket in snapshot["buckets"]]
        self.assertEqual(len(ats), 60)
        self.assertEqual(ats[-1], "2026-11-27T12:00:00.000Z")
        self.assertEqual(ats[0], "2026-11-27T11:01:00.000Z")
        self.assertEqual(ats, sorted(ats))
        self.assertEqual(
            snapshot["buckets"][0],
            {
                "at": "2026-11-27T11:01:00.000Z",
                "succeeded": 0,
                "failed": 0,
                "skipped": 0,
                "started": 0,
                "lateness_sum_s": 0.0,
                "lateness_max_s": 0.0,
            },
        )
        self.assertEqual(
            snapshot["totals"], {"succeeded": 0, "failed": 0, "skipped": 0, "started": 0}
        )
        self.assertEqual(snapshot["lateness"]["bounds_s"], list(LATENCY_BUCKETS))
        self.assertEqual(snapshot["lateness"]["counts"], [0] * (len(LATENCY_BUCKETS) + 1))

    def test_final_outcomes_are_counted_in_the_current_minute(self) -> None:
        """Succeeded, failed and skipped records count by state; others are ignored."""
        clock, summary = at_minute()
        for state in ("succeeded", "succeeded", "failed", "skipped", "running", "scheduled"):
            summary.on_execution(outcome(state))
        last = summary.snapshot(1)["buckets"][-1]
        self.assertEqual((last["succeeded"], last["failed"], last["skipped"]), (2, 1, 1))
        self.assertEqual(last["started"], 0)
        self.assertEqual(
            summary.snapshot()["totals"], {"succeeded": 2, "failed": 1, "skipped": 1, "started": 0}
        )

    def test_skipped_records_have_no_lateness(self) -> None:
        """A skipped slot counts as skipped and adds nothing to starts or lateness."""
        clock, summary = at_minute()
        summary.on_execution(outcome("skipped", skip_reason="queue_full"))
        snapshot = summary.snapshot(1)
        self.assertEqual(snapshot["buckets"][0]["skipped"], 1)
        self.assertEqual(snapshot["buckets"][0]["started"], 0)
        self.assertEqual(snapshot["buckets"][0]["lateness_max_s"], 0.0)
        self.assertEqual(sum(snapshot["lateness"]["counts"]), 0)

    def test_outcomes_move_to_the_next_minute_as_time_passes(self) -> None:
        """After the clock crosses a minute, outcomes land in the new bucket; the old one stays."""
        clock, summary = at_minute(MINUTE_START + 59.5)
        summary.on_execution(outcome())
        clock.advance(1)
        summary.on_execution(outcome("failed"))
        summary.on_execution(outcome("failed"))
        buckets = summary.snapshot(2)["buckets"]
        self.assertEqual(
            [b["at"] for b in buckets],
            [minute_text(MINUTE_START), minute_text(MINUTE_START + 60)],
        )
        self.assertEqual([(b["succeeded"], b["failed"]) for b in buckets], [(1, 0), (0, 2)])

    def test_minutes_older_than_the_window_are_dropped(self) -> None:
        """An hour later the minute's counts are gone, and its ring place counts afresh."""
        clock, summary = at_minute()
        summary.on_execution(outcome())
        clock.advance(59 * 60)
        self.assertEqual(summary.snapshot()["totals"]["succeeded"], 1)
        self.assertEqual(summary.snapshot()["buckets"][0]["succeeded"], 1)
        clock.advance(60)
        self.assertEqual(summary.snapshot()["totals"]["succeeded"], 0)
        # The same ring place, an hour on: counts start from zero.
        summary.on_execution(outcome("failed"))
        last = summary.snapshot()["buckets"][-1]
        self.assertEqual((last["succeeded"], last["failed"]), (0, 1))

    def test_a_long_silence_leaves_no_stale_counts(self) -> None:
        """After hours without events every bucket reads zero."""
        clock, summary = at_minute()
        for _ in range(5):
            summary.on_execution(outcome())
            clock.advance(60)
        clock.advance(5 * 3600)
        self.assertEqual(summary.snapshot()["totals"]["succeeded"], 0)

    def test_a_smaller_window_covers_only_the_last_minutes(self) -> None:
        """snapshot(5) has the last 5 minutes and totals over them only."""
        clock, summary = at_minute()
        for _ in range(10):
            summary.on_execution(outcome())
            clock.advance(60)
        clock.advance(-60)  # the clock is still in the 10th minute
        snapshot = summary.snapshot(5)
        self.assertEqual(snapshot["minutes"], 5)
        self.assertEqual([b["succeeded"] for b in snapshot["buckets"]], [1] * 5)
        self.assertEqual(snapshot["totals"]["succeeded"], 5)

    def test_bad_minutes_are_refused_naming_the_field(self) -> None:
        """0, 61, a bool or a text as minutes raise a ValueError that names minutes."""
        clock, summary = at_minute()
        for minutes in (0, 61, True, "5"):
            with self.assertRaises(ValueError) as raised:
                summary.snapshot(minutes)
            self.assertIn("minutes", str(raised.exception))
        with self.assertRaises(ValueError):
            ExecutionSummary(clock, minutes=0)

    def test_a_short_ring_refuses_longer_snapshots(self) -> None:
        """A summary keeping 5 minutes answers up to 5."""
        clock = Clock()
        summary = ExecutionSummary(clock, minutes=5)
        self.assertEqual(len(summary.snapshot(5)["buckets"]), 5)
        self.assertRaises(ValueError, summary.snapshot, 6)


class LatenessTests(SynchronousTestCase):
    def test_first_attempts_are_counted_with_their_lateness(self) -> None:
        """Each start counts once; lateness sum and max are start minus slot instant."""
        clock, summary = at_minute()
        now = clock.seconds()
        summary.on_started(delivery(now - 0.25), now)
        summary.on_started(delivery(now - 1.5), now)
        bucket = summary.snapshot(1)["buckets"][0]
        self.assertEqual(bucket["started"], 2)
        self.assertAlmostEqual(bucket["lateness_sum_s"], 1.75)
        self.assertAlmostEqual(bucket["lateness_max_s"], 1.5)
        self.assertEqual(summary.snapshot()["totals"]["started"], 2)

    def test_a_delivery_without_a_slot_instant_is_not_counted(self) -> None:
        """scheduled_s None (nothing to measure against) counts no start."""
        clock, summary = at_minute()
        summary.on_started(delivery(None), clock.seconds())
        self.assertEqual(summary.snapshot()["totals"]["started"], 0)

    def test_starts_count_in_the_minute_they_began(self) -> None:
        """A start reported late for a previous minute lands in that minute's bucket."""
        clock, summary = at_minute(MINUTE_START + 61)
        summary.on_started(delivery(MINUTE_START + 30), MINUTE_START + 30.5)
        buckets = summary.snapshot(2)["buckets"]
        self.assertEqual([b["started"] for b in buckets], [1, 0])

    def test_a_start_older_than_the_window_is_dropped(self) -> None:
        """A start 61 minutes back does not wipe or join the minute in its ring place."""
        clock, summary = at_minute()
        now = clock.seconds()
        summary.on_started(delivery(now - 0.01), now)
        summary.on_started(delivery(now - 3660.5), now - 3660)
        snapshot = summary.snapshot()
        self.assertEqual(snapshot["totals"]["started"], 1)
        self.assertEqual(snapshot["buckets"][-1]["started"], 1)

    def test_histogram_edges_follow_the_bounds(self) -> None:
        """
        counts[i] holds bounds[i-1] < x <= bounds[i]: a bound itself falls in
        its own bucket, just over it in the next, over 60 s in the last.
        """
        clock, summary = at_minute()
        now = clock.seconds()
        for lateness in (0.0, 0.001, 0.0011, 1.0, 60.0, 60.5, -0.2):
            summary.on_started(delivery(now - lateness), now)
        counts = summary.snapshot()["lateness"]["counts"]
        self.assertEqual(len(counts), len(LATENCY_BUCKETS) + 1)
        expected = [0] * (len(LATENCY_BUCKETS) + 1)
        expected[0] = 3  # 0.0, 0.001 and the negative one
        expected[1] = 1  # 0.0011 is over 0.001, under 0.0025
        expected[LATENCY_BUCKETS.index(1.0)] = 1
        expected[LATENCY_BUCKETS.index(60.0)] = 1
        expected[-1] = 1
        self.assertEqual(counts, expected)

    def test_the_histogram_covers_the_window_asked(self) -> None:
        """A start two minutes back is in snapshot(3)'s histogram, not snapshot(1)'s."""
        clock, summary = at_minute()
        summary.on_started(delivery(clock.seconds() - 0.5), clock.seconds())
        clock.advance(120)
        self.assertEqual(sum(summary.snapshot(3)["lateness"]["counts"]), 1)
        self.assertEqual(sum(summary.snapshot(1)["lateness"]["counts"]), 0)


class MergeTests(SynchronousTestCase):
    def node(self, seconds: float, outcomes: int = 0, lateness: tuple = ()) -> dict:
        clock, summary = at_minute(seconds)
        for _ in range(outcomes):
            summary.on_execution(outcome())
        for late in lateness:
            summary.on_started(delivery(seconds - late), seconds)
        return summary.snapshot(3)

    def test_buckets_of_the_same_minute_are_summed(self) -> None:
        """Counts and lateness sums add, the lateness maximum is the larger, histograms add."""
        one = self.node(MINUTE_START + 5, 2, (0.5,))
        two = self.node(MINUTE_START + 7, 3, (2.0, 0.002))
        merged = merge([one, two])
        self.assertEqual(merged["minutes"], 3)
        self.assertEqual([b["at"] for b in merged["buckets"]], [b["at"] for b in one["buckets"]])
        last = merged["buckets"][-1]
        self.assertEqual((last["succeeded"], last["started"]), (5, 3))
        self.assertAlmostEqual(last["lateness_sum_s"], 2.502)
        self.assertEqual(last["lateness_max_s"], 2.0)
        self.assertEqual(merged["totals"], totals(succeeded=5, started=3))
        self.assertEqual(
            merged["lateness"]["counts"],
            [
                a + b
                for a, b in zip(one["lateness"]["counts"], two["lateness"]["counts"], strict=True)
            ],
        )
        self.assertEqual(sum(merged["lateness"]["counts"]), 3)

    def test_clocks_straddling_a_minute_keep_the_newest_minutes(self) -> None:
        """One node already in the next minute: the merge keeps `minutes` buckets, the newest."""
        before = self.node(MINUTE_START + 59.9, 1)
        after = self.node(MINUTE_START + 60.1, 4)
        merged = merge([before, after])
        ats = [b["at"] for b in merged["buckets"]]
        self.assertEqual(len(ats), 3)
        self.assertEqual(ats[-1], minute_text(MINUTE_START + 60))
        self.assertEqual(ats[-2], minute_text(MINUTE_START))
        self.assertEqual([b["succeeded"] for b in merged["buckets"]][-2:], [1, 4])
        self.assertEqual(merged["totals"]["succeeded"], 5)

    def test_one_snapshot_merges_to_itself(self) -> None:
        """Merging a single node's snapshot changes nothing."""
        one = self.node(MINUTE_START + 5, 2, (0.1,))
        self.assertEqual(merge([one]), one)

    def test_merging_nothing_is_refused(self) -> None:
        self.assertRaises(ValueError, merge, [])

    def test_merge_leaves_its_inputs_alone(self) -> None:
        """The snapshots given are not changed by merging them."""
        one = self.node(MINUTE_START + 5, 2)
        copy = {**one, "buckets": [dict(b) for b in one["buckets"]]}
        merge([one, self.node(MINUTE_START + 6, 3)])
        self.assertEqual(one, copy)


# -- the route in memory ---------------------------------------------------------------


SCHEMA = build_openapi(ROUTES)["components"]["schemas"]["ExecutionSummary"]


@attrs.define(eq=False)
class FakeCluster:
    """Answers execution_summary with a fixed merged summary, recording the minutes asked."""

    answer: dict
    asked: list = attrs.field(factory=list)

    async def execution_summary(self, minutes: int) -> dict:
        self.asked.append(minutes)
        return self.answer


class RouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.barriers: list = []
        self.h = Harness(read_barrier=lambda: self.barriers.append(1))
        self.h.clock.advance(MINUTE_START + 20 - self.h.clock.seconds())
        self.summary = ExecutionSummary(self.h.clock)
        self.h.api.execution_routes.summary = self.summary
        self.summary.on_execution(outcome())
        self.summary.on_execution(outcome("failed"))

    def test_a_single_node_answers_its_own_counts(self) -> None:
        """Under both prefixes: 60 buckets, the counts, nodes [1], nothing missing."""
        for path in ("/executions/summary", "/api/v1/executions/summary"):
            status, _, body = self.h.request("GET", path)
            self.assertEqual(status, 200, body)
            data = body["data"]
            self.assertEqual(data["minutes"], 60)
            self.assertEqual(len(data["buckets"]), 60)
            self.assertEqual(data["buckets"][-1]["at"], minute_text(MINUTE_START))
            self.assertEqual(data["totals"], totals(succeeded=1, failed=1))
            self.assertEqual(data["nodes"], [1])
            self.assertEqual(data["missing_nodes"], [])
            jsonschema_rs.validate(SCHEMA, data)

    def test_minutes_picks_the_window(self) -> None:
        """?minutes=5 answers 5 buckets."""
        status, _, body = self.h.request("GET", "/executions/summary?minutes=5")
        self.assertEqual(status, 200)
        self.assertEqual(len(body["data"]["buckets"]), 5)
        self.assertEqual(body["data"]["minutes"], 5)

    def test_minutes_out_of_range_is_400_naming_it(self) -> None:
        """0, 61 and a text are refused with error.fields naming minutes."""
        for given in ("0", "61", "x"):
            status, _, body = self.h.request("GET", f"/executions/summary?minutes={given}")
            self.assertEqual(status, 400, given)
            self.assertIn("minutes", body["error"]["fields"])

    def test_no_read_barrier_and_no_consistency_parameter(self) -> None:
        """In-memory counts are not replicated state: no barrier wait, no ?consistency=."""
        self.assertEqual(self.h.request("GET", "/executions/summary")[0], 200)
        self.assertEqual(self.barriers, [])
        status, _, body = self.h.request("GET", "/executions/summary?consistency=stale")
        self.assertEqual(status, 400)
        self.assertIn("consistency", body["error"]["fields"])

    def test_client_credentials_are_required(self) -> None:
        """Without credentials the route answers 401."""
        self.assertEqual(self.h.request("GET", "/executions/summary", auth="none")[0], 401)

    def test_without_a_summary_the_route_is_404(self) -> None:
        """An API built without an ExecutionSummary says so."""
        self.h.api.execution_routes.summary = None
        status, _, body = self.h.request("GET", "/executions/summary")
        self.assertEqual(status, 404)
        self.assertIn("summary", body["error"]["message"])

    def test_a_cluster_node_answers_what_the_cluster_gathered(self) -> None:
        """With a cluster the handler asks it (with the minutes) and answers its result."""
        answer = {**self.summary.snapshot(7), "nodes": [1, 2, 3], "missing_nodes": [3]}
        fake = FakeCluster(answer)
        self.h.api.execution_routes.cluster = fake
        status, _, body = self.h.request("GET", "/executions/summary?minutes=7")
        self.assertEqual(status, 200)
        self.assertEqual(fake.asked, [7])
        self.assertEqual(body["data"], answer)
        jsonschema_rs.validate(SCHEMA, body["data"])

    def test_the_route_is_documented(self) -> None:
        """The OpenAPI document lists the route with minutes 1..60 default 60."""
        document = build_openapi(ROUTES)
        operation = document["paths"]["/executions/summary"]["get"]
        (minutes,) = operation["parameters"]
        self.assertEqual(minutes["name"], "minutes")
        schema = minutes["schema"]
        self.assertEqual((schema["minimum"], schema["maximum"], schema["default"]), (1, 60, 60))


# -- the peer route and the cluster gather, with fakes -----------------------------------


class PeerRouteTests(SynchronousTestCase):
    def request(self, api: PeerAPI, path: str, headers: dict | None = None) -> tuple[int, Any]:
        treq = StubTreq(api.resource())
        d = treq.get("http://node.test" + path, headers=basic() if headers is None else headers)
        treq.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        return response.code, json.loads(body)

    def test_a_peer_gets_the_nodes_own_snapshot(self) -> None:
        """GET /peer/summary?minutes=N answers this node's snapshot of N minutes."""
        clock, summary = at_minute()
        summary.on_execution(outcome())
        api = PeerAPI(SimpleNamespace(), Admin(), summary=summary)
        status, body = self.request(api, "/peer/summary?minutes=4")
        self.assertEqual(status, 200)
        self.assertEqual(body["data"], summary.snapshot(4))

    def test_bad_minutes_and_missing_credentials_are_refused(self) -> None:
        """minutes=0 is 400 naming minutes; without the peer credentials 401."""
        clock, summary = at_minute()
        api = PeerAPI(SimpleNamespace(), Admin(), summary=summary)
        status, body = self.request(api, "/peer/summary?minutes=0")
        self.assertEqual(status, 400)
        self.assertIn("minutes", body["error"]["message"])
        self.assertEqual(self.request(api, "/peer/summary", headers={})[0], 401)

    def test_a_node_without_a_summary_says_so(self) -> None:
        api = PeerAPI(SimpleNamespace(), Admin(), summary=None)
        self.assertEqual(self.request(api, "/peer/summary")[0], 404)


@attrs.define(eq=False)
class FakePeers:
    """Answers summary(node_id, ...) from a map; a node not in it is unreachable."""

    snapshots: dict
    asked: list = attrs.field(factory=list)

    def summary(self, node_id: int, minutes: int, timeout: float | None = None) -> Deferred:
        self.asked.append((node_id, minutes, timeout))
        if node_id not in self.snapshots:
            return fail(PeerUnavailable(f"node {node_id}: ConnectionRefusedError"))
        return succeed(self.snapshots[node_id])


class GatherTests(SynchronousTestCase):
    def node(self, peers: FakePeers, own: ExecutionSummary) -> Any:
        return SimpleNamespace(
            summary=own,
            config=SimpleNamespace(node_id=2),
            member_ids=lambda: {1, 2, 3},
            peers=peers,
        )

    def test_every_member_is_asked_and_the_counts_are_summed(self) -> None:
        """Node 2 adds its own counts to 1's and 3's, asked with a short timeout."""
        clock, own = at_minute()
        own.on_execution(outcome())
        others = {}
        for node_id, count in ((1, 2), (3, 4)):
            summary = ExecutionSummary(clock)
            for _ in range(count):
                summary.on_execution(outcome("failed"))
            others[node_id] = summary.snapshot(10)
        peers = FakePeers(others)
        result = self.successResultOf(
            Deferred.fromCoroutine(ClusterNode.execution_summary(self.node(peers, own), 10))
        )
        self.assertEqual(sorted(n for n, _, _ in peers.asked), [1, 3])
        self.assertTrue(all(m == 10 and t is not None and t <= 1 for _, m, t in peers.asked))
        self.assertEqual(result["nodes"], [1, 2, 3])
        self.assertEqual(result["missing_nodes"], [])
        self.assertEqual(result["totals"], totals(succeeded=1, failed=6))
        self.assertEqual(len(result["buckets"]), 10)
        jsonschema_rs.validate(SCHEMA, result)

    def test_a_member_that_does_not_answer_is_listed_missing(self) -> None:
        """An unreachable member is in missing_nodes, the others are summed anyway."""
        clock, own = at_minute()
        own.on_execution(outcome())
        other = ExecutionSummary(clock)
        other.on_execution(outcome())
        peers = FakePeers({1: other.snapshot(60)})
        result = self.successResultOf(
            Deferred.fromCoroutine(ClusterNode.execution_summary(self.node(peers, own), 60))
        )
        self.assertEqual(result["nodes"], [1, 2])
        self.assertEqual(result["missing_nodes"], [3])
        self.assertEqual(result["totals"]["succeeded"], 2)


# -- real nodes -----------------------------------------------------------------------------


async def get_summary(http: Any, url: str, headers: dict, minutes: int | None = None) -> Any:
    query = "" if minutes is None else f"?minutes={minutes}"
    response = await http.get(url + "/executions/summary" + query, headers=headers, timeout=5)
    body = await response.json()
    return response.code, body


class SingleNodeSummaryTests(TestCase):
    timeout = 120

    async def test_a_real_node_counts_more_than_its_history_keeps(self) -> None:
        """
        A real node keeping 3 records per job, with two @every 1s jobs (one
        answered 500, retry_max 0), counts succeeded and failed executions
        in its last minutes, matching what the receiver got and exceeding 3.
        """
        from twisted.internet import reactor

        from harness.process import http_client, ok_and_failing_jobs
        from harness.waiting import wait_for

        http = http_client(reactor)
        scene = await ok_and_failing_jobs(self, reactor, "ExecutionHistoryPerJob: 3\n")
        node, headers, receiver = scene.node, scene.headers, scene.receiver

        async def enough() -> dict | None:
            code, body = await get_summary(http, node.url, headers, 5)
            totals = body["data"]["totals"]
            return body["data"] if totals["succeeded"] >= 4 and totals["failed"] >= 4 else None

        data = await wait_for(reactor, enough, timeout=40, what="four outcomes of each job")
        arrived = {
            path: sum(1 for a in receiver.arrivals if a.path == path) for path in ("/ok", "/fail")
        }
        totals = data["totals"]
        self.assertEqual(data["nodes"], [1])
        self.assertEqual(data["missing_nodes"], [])
        self.assertEqual(len(data["buckets"]), 5)
        # More than the 3 records per job the history keeps.
        self.assertGreater(totals["succeeded"], 3)
        self.assertGreater(totals["failed"], 3)
        # Every counted outcome was delivered; at most a few deliveries
        # (in flight when the summary was read) are not counted yet.
        for state, path in (("succeeded", "/ok"), ("failed", "/fail")):
            self.assertLessEqual(totals[state], arrived[path])
            self.assertLessEqual(arrived[path], totals[state] + 3)
        self.assertEqual(totals["skipped"], 0)
        # Each execution's first attempt started and was measured (retry_max 0).
        self.assertGreaterEqual(totals["started"], totals["succeeded"] + totals["failed"])
        # The node started moments ago: everything is in the last two minutes.
        recent = data["buckets"][-2:]
        for key in ("succeeded", "failed", "started"):
            self.assertEqual(sum(b[key] for b in recent), totals[key])
        self.assertEqual(sum(data["lateness"]["counts"]), totals["started"])
        self.assertEqual(sum(data["lateness"]["counts"][-1:]), 0)  # none over 60 s late
        # Without credentials: 401.
        response = await http.get(node.url + "/executions/summary", timeout=5)
        self.assertEqual(response.code, 401)
        await response.content()


class ClusterSummaryTests(TestCase):
    timeout = 180

    async def test_a_follower_sums_every_member_and_names_a_dead_one(self) -> None:
        """
        Asked on a follower, the summary covers nodes [1, 2, 3] and its
        totals equal the sum of each node's own counts and the receiver's
        deliveries; with a node killed it still answers 200 and lists that
        node in missing_nodes.
        """
        from twisted.internet import reactor

        from harness.cluster import Cluster
        from harness.process import http_client
        from harness.receiver import CallbackReceiver
        from harness.waiting import wait_for

        http = http_client(reactor)
        receiver = CallbackReceiver(reactor)
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), 3, direct=True)
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        leader = await cluster.wait_leader(30)
        headers = await cluster.make_headers()
        admin = {"Authorization": "Basic " + b64encode(b"admin:admin-password").decode()}

        def url(node_id: int) -> str:
            return f"http://127.0.0.1:{cluster.addresses[node_id].http_port}"

        follower, other = [n for n in cluster.ids if n != leader]
        response = await http.post(
            url(leader) + "/projects", json={"name": "s", "description": ""}, headers=headers
        )
        project = (await response.json())["data"]["uuid"]
        response = await http.post(
            url(leader) + "/jobs",
            json=[
                {
                    "project_uuid": project,
                    "name": f"j{i}",
                    "spec": "@every 1s",
                    "callback_url": f"http://127.0.0.1:{port}/j{i}",
                    "retry_max": 0,
                }
                for i in range(6)
            ],
            headers=headers,
        )
        self.assertEqual(response.code, 201, await response.text())
        jobs = [job["uuid"] for job in (await response.json())["data"]]
        await receiver.wait_until(lambda: len(receiver.arrivals) >= 12)
        # Stop firing, so the counts settle and can be compared exactly.
        for job in jobs:
            response = await http.patch(
                url(leader) + f"/jobs/{job}", json={"paused": True}, headers=headers
            )
            self.assertEqual(response.code, 200, await response.text())

        async def own(node_id: int) -> dict:
            response = await http.get(
                url(node_id) + "/peer/summary?minutes=10", headers=admin, timeout=5
            )
            self.assertEqual(response.code, 200)
            return (await response.json())["data"]

        async def settled() -> tuple[dict, list[dict]] | None:
            code, body = await get_summary(http, url(follower), headers, 10)
            if code != 200:
                return None
            data = body["data"]
            if data["totals"]["succeeded"] != len(receiver.arrivals):
                return None
            per_node = [await own(n) for n in cluster.ids]
            if sum(p["totals"]["succeeded"] for p in per_node) != data["totals"]["succeeded"]:
                return None
            return data, per_node

        data, per_node = await wait_for(reactor, settled, timeout=30, what="settled counts")
        self.assertEqual(data["nodes"], [1, 2, 3])
        self.assertEqual(data["missing_nodes"], [])
        self.assertEqual(len(data["buckets"]), 10)
        for key in ("succeeded", "failed", "skipped", "started"):
            self.assertEqual(data["totals"][key], sum(p["totals"][key] for p in per_node), key)
        self.assertGreaterEqual(data["totals"]["succeeded"], 12)

        await cluster.kill(other)
        code, body = await get_summary(http, url(follower), headers)
        self.assertEqual(code, 200, body)
        data = body["data"]
        self.assertEqual(data["nodes"], sorted([leader, follower]))
        self.assertEqual(data["missing_nodes"], [other])
        self.assertEqual(len(data["buckets"]), 60)
        alive = [p for n, p in zip(cluster.ids, per_node, strict=True) if n != other]
        self.assertEqual(data["totals"]["succeeded"], sum(p["totals"]["succeeded"] for p in alive))
