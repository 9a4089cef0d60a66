"""
The cluster under test of the benchmarks: L{Cluster} with C{direct=True}
(no proxies, every node lists the others at their real ports, the fault
helpers refuse) and the meter over every node process.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bench.cluster import ClusterMeter
from harness.cluster import Cluster
from scheduler0.config import load_config


class DirectClusterTests(TestCase):
    """A prepared (never started) direct three-node cluster."""

    timeout = 60

    async def test_replicas_point_at_the_real_ports_and_no_proxy_exists(self) -> None:
        """
        Every node's config loads; each Replicas entry, its own and the
        others', has that node's real HTTP and Raft ports, and no link exists.
        """
        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), size=3, direct=True)
        self.addCleanup(lambda: Deferred.fromCoroutine(cluster.close()))
        await cluster.prepare()
        self.assertEqual(cluster.links, {})
        for i in cluster.ids:
            config = load_config(cluster.config_path(i), environ={})
            self.assertEqual(config.warnings, ())
            replicas = {r["NodeId"]: r for r in _replicas(config)}
            self.assertEqual(sorted(replicas), [1, 2, 3])
            for j, entry in replicas.items():
                real = cluster.addresses[j]
                self.assertEqual(entry["Address"], real.address)
                self.assertEqual(entry["RaftAddress"], real.raft_address)

    def test_fault_helpers_refuse_with_a_clear_error(self) -> None:
        """cut, isolate, partition, heal and link raise and say direct=True is why."""
        cluster = Cluster(reactor, "unused", size=3, direct=True)
        calls = [
            lambda: cluster.cut(1, 2),
            lambda: cluster.isolate(1),
            lambda: cluster.partition([1, 2], [3]),
            lambda: cluster.heal(),
            lambda: cluster.link(1, 2),
        ]
        for call in calls:
            error = self.assertRaises(RuntimeError, call)
            self.assertIn("direct=True", str(error))


def _replicas(config: Any) -> list[dict[str, Any]]:
    out = []
    for r in config.replicas:
        if isinstance(r, dict):
            out.append(r)
        else:
            out.append({"NodeId": r.node_id, "Address": r.address, "RaftAddress": r.raft_address})
    return out


class _FakeMeter:
    def __init__(self, cpu: float, rss: float, fail: bool = False) -> None:
        self.figures = {
            "cpu_s": cpu,
            "cpu_percent_of_one_core": cpu * 10,
            "rss_mib": rss,
            "peak_rss_mib": rss + 1,
        }
        self.fail = fail
        self.marks = 0

    def mark(self) -> None:
        self.marks += 1

    def sample_rss(self) -> None:
        pass

    def read(self) -> dict:
        if self.fail:
            raise ProcessLookupError("gone")
        return self.figures


class ClusterMeterTests(SynchronousTestCase):
    def test_totals_add_cpu_and_take_the_largest_rss(self) -> None:
        """CPU adds over the nodes, RSS is the largest node's, and each node is listed."""
        meters: dict = {1: _FakeMeter(1.0, 80.0), 2: _FakeMeter(2.0, 95.0)}
        meter = ClusterMeter(meters)
        meter.mark()
        figures = meter.read()
        self.assertEqual(figures["cpu_s"], 3.0)
        self.assertEqual(figures["cpu_percent_of_one_core"], 30.0)
        self.assertEqual(figures["peak_rss_mib"], 96.0)
        self.assertEqual(sorted(figures["per_node"]), ["1", "2"])

    def test_a_killed_node_keeps_its_last_figures(self) -> None:
        """A node detached before a read is reported with what was read when it was detached."""
        gone = _FakeMeter(4.0, 70.0)
        meters: dict = {1: _FakeMeter(1.0, 80.0), 2: gone}
        meter = ClusterMeter(meters)
        meter.mark()
        meter.detach(2)
        gone.fail = True
        figures = meter.read()
        self.assertEqual(figures["cpu_s"], 5.0)
        self.assertEqual(figures["per_node"]["2"]["rss_mib"], 70.0)

    def test_a_process_that_vanished_is_dropped_not_fatal(self) -> None:
        """A meter whose process is gone at the read is left out instead of raising."""
        meters: dict = {1: _FakeMeter(1.0, 80.0), 2: _FakeMeter(2.0, 90.0, fail=True)}
        meter = ClusterMeter(meters)
        figures = meter.read()
        self.assertEqual(figures["cpu_s"], 1.0)
        self.assertIsNone(meter.meters[2])
