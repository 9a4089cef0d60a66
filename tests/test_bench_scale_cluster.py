"""
The cluster parts of the scale benchmark (bench/scale.py --nodes N): the
leader a majority agrees on, disk use per node, the verdict against the
issue's goals, the table of a finished or a failed run, and the check of
C{--nodes}.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stdout
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bench import scale

MIB = 2**20


def _health(role: str, leader_id: int | None, term: int) -> dict[str, Any]:
    return {"role": role, "leader_id": leader_id, "term": term}


class LeaderOfTests(SynchronousTestCase):
    """L{scale.leader_of} judges the nodes' health answers."""

    def test_a_leader_named_by_a_majority_in_its_term_is_the_leader(self) -> None:
        """Node 2 says leader in term 4 and node 3 names it in term 4: 2 of 3 agree."""
        answers = {
            1: None,
            2: _health("leader", 2, 4),
            3: _health("follower", 2, 4),
        }
        self.assertEqual(scale.leader_of(answers), 2)

    def test_a_leader_alone_is_not_enough(self) -> None:
        """A node that calls itself leader while the others do not answer is no agreed leader."""
        answers = {1: _health("leader", 1, 3), 2: None, 3: None}
        self.assertIsNone(scale.leader_of(answers))

    def test_followers_of_an_older_term_do_not_count(self) -> None:
        """A follower naming the node in another term does not make a majority."""
        answers = {
            1: _health("leader", 1, 5),
            2: _health("follower", 1, 4),
            3: _health("candidate", None, 5),
        }
        self.assertIsNone(scale.leader_of(answers))

    def test_five_nodes_need_three(self) -> None:
        """In five nodes, the leader and one follower are two: not a majority; a third makes it."""
        answers: dict[int, Any] = {n: None for n in range(1, 6)}
        answers[4] = _health("leader", 4, 2)
        answers[5] = _health("follower", 4, 2)
        self.assertIsNone(scale.leader_of(answers))
        answers[1] = _health("follower", 4, 2)
        self.assertEqual(scale.leader_of(answers), 4)


class CanaryFiguresTests(SynchronousTestCase):
    """L{scale.canary_figures}: how the canaries fired while the jobs were created."""

    def test_lateness_gaps_and_slots_of_the_window(self) -> None:
        """
        Canary a fires at 100, 101 and 104 (slots due 100, 101, 104: each
        100 ms late) and canary b never: a's longest gap is 3 s, b's the
        whole window; a slot due before the window is left out.
        """
        t0 = 1_800_000_100.0
        arrivals = [
            (t0 - 1 + 0.1, "a", _instant(t0 - 1)),
            (t0 + 0.1, "a", _instant(t0)),
            (t0 + 1.1, "a", _instant(t0 + 1)),
            (t0 + 4.1, "a", _instant(t0 + 4)),
            (t0 + 4.2, "not-a-canary", _instant(t0 + 4)),
        ]
        figures = scale.canary_figures(arrivals, ["a", "b"], t0, t0 + 5)
        self.assertEqual(figures["slots_delivered"], 3)
        self.assertEqual(figures["lateness_ms"]["n"], 3)
        self.assertAlmostEqual(figures["lateness_ms"]["max"], 100.0, delta=0.01)
        self.assertEqual(figures["longest_gap_per_canary_s"]["min"], 3.0)
        self.assertEqual(figures["longest_gap_per_canary_s"]["max"], 5.0)


def _instant(epoch: float) -> str:
    from scheduler0.timeutil import format_instant, utc_from_timestamp

    return format_instant(utc_from_timestamp(epoch))


class TreeUseTests(SynchronousTestCase):
    def test_every_file_with_its_path_under_the_folder(self) -> None:
        """Files in subfolders (the snapshot folder) are listed by relative path with their size."""
        folder = self.mktemp()
        os.makedirs(os.path.join(folder, "raft.db.snapshots"))
        with open(os.path.join(folder, "state.db"), "wb") as f:
            f.write(b"x" * 10)
        with open(os.path.join(folder, "raft.db.snapshots", "snapshot-1.db"), "wb") as f:
            f.write(b"y" * 3)
        self.assertEqual(
            scale.tree_use(folder),
            {os.path.join("raft.db.snapshots", "snapshot-1.db"): 3, "state.db": 10},
        )

    def test_a_missing_folder_uses_nothing(self) -> None:
        self.assertEqual(scale.tree_use(self.mktemp()), {})


def _result(
    rss_mib: tuple[int, int, int] = (300, 310, 320),
    every_canary_s: float = 5.0,
    create_s: float = 60.0,
    timeline_peak_mib: float = 400.0,
) -> dict[str, Any]:
    per_node = {str(n): v * MIB for n, v in zip((1, 2, 3), rss_mib, strict=True)}
    restart = {
        "stop_s": 0.1,
        "per_node_stop_s": {"1": 0.1, "2": 0.1, "3": 0.1},
        "note": None,
        "leader_id": 2,
        "to_healthcheck_s": {"1": 3.0, "2": 2.5, "3": 3.1},
        "to_leader_s": 2.6,
        "to_first_canary_s": 2.0,
        "to_every_canary_s": every_canary_s,
        "rss_bytes": {"1": 100 * MIB, "2": 100 * MIB, "3": 100 * MIB},
    }
    return {
        "nodes": 3,
        "create": {
            "jobs": 1_000_000,
            "seconds": create_s,
            "jobs_per_s": round(1_000_000 / create_s),
            "on_node": 1,
            "leader_after": 1,
            "node_cpu_s": {"1": 10.0, "2": 5.0, "3": 5.0},
            "node_rss_peak_seen_bytes": per_node,
            "batch_latency_ms": {"p50": 300.0, "max": 900.0},
            "answers_503": 0,
            "jobs_stored": 1_000_000,
            "jobs_extra": 0,
            "roles_terms_before": {"1": {"role": "leader", "term": 1}, "2": None, "3": None},
            "roles_terms_after": {"1": {"role": "leader", "term": 3}, "2": None, "3": None},
            "canaries_during_creation": {
                "slots_delivered": 1190,
                "slots_expected_about": 1200,
                "lateness_ms": {"p50": 2.0, "p99": 900.0, "max": 1500.0},
                "longest_gap_per_canary_s": {"p50": 1.0, "max": 2.5},
            },
        },
        "spread": {"seconds": 1.0, "owned": {"1": 333334, "2": 333333, "3": 333333}},
        "after_create": {"rss_bytes": per_node},
        "restart_sigterm": restart,
        "restart_sigkill": dict(restart, to_every_canary_s=3.0),
        "get_jobs": {
            "leader linearizable": {"node_id": 1, "limit=50": {"p50_ms": 4.0, "p99_ms": 9.0}},
            "follower stale": {"node_id": 2, "limit=50": {"p50_ms": 3.0, "p99_ms": 5.0}},
        },
        "disk_bytes": {"1": {"state.db": 300 * MIB, "raft.db": 10}, "2": {}, "3": {}},
        "rss_timeline_mib": [{"t_s": 5.0, "phase": "create", "1": 10.0, "2": timeline_peak_mib}],
    }


class VerdictTests(SynchronousTestCase):
    """L{scale.cluster_verdict} holds every node to the issue's goals."""

    def test_within_every_goal(self) -> None:
        verdict = scale.cluster_verdict(_result())
        self.assertEqual(verdict["rss_max_bytes"], 320 * MIB)
        self.assertTrue(verdict["rss_ok"])
        self.assertTrue(verdict["rss_peak_ok"])
        self.assertTrue(verdict["create_ok"])
        self.assertTrue(verdict["restart_to_firing_ok"])

    def test_one_node_over_a_gibibyte_fails_the_memory_goal(self) -> None:
        """The largest node counts, not the mean: node 3 at 1100 MiB fails it."""
        verdict = scale.cluster_verdict(_result(rss_mib=(300, 300, 1100)))
        self.assertEqual(verdict["rss_max_bytes"], 1100 * MIB)
        self.assertFalse(verdict["rss_ok"])

    def test_a_peak_seen_during_the_run_is_judged_on_its_own(self) -> None:
        """A sampled peak of 1500 MiB fails rss_peak_ok while the steady figures pass."""
        verdict = scale.cluster_verdict(_result(timeline_peak_mib=1500.0))
        self.assertTrue(verdict["rss_ok"])
        self.assertFalse(verdict["rss_peak_ok"])
        self.assertEqual(verdict["rss_peak_seen_bytes"], 1500 * MIB)

    def test_jobs_stored_beyond_those_sent_are_flagged(self) -> None:
        """A 503 that committed anyway, then retried, leaves extra jobs: jobs_exact is false."""
        result = _result()
        self.assertTrue(scale.cluster_verdict(result)["jobs_exact"])
        result["create"]["jobs_extra"] = 10_000
        self.assertFalse(scale.cluster_verdict(result)["jobs_exact"])

    def test_slow_firing_or_creation_fails_those_goals(self) -> None:
        slow_firing = scale.cluster_verdict(_result(every_canary_s=31.0))
        self.assertFalse(slow_firing["restart_to_firing_ok"])
        self.assertFalse(scale.cluster_verdict(_result(create_s=121.0))["create_ok"])


class TableTests(SynchronousTestCase):
    """L{scale.print_cluster_table} prints what a run measured, finished or not."""

    def _print(self, result: dict[str, Any]) -> str:
        out = io.StringIO()
        with redirect_stdout(out):
            scale.print_cluster_table(result)
        return out.getvalue()

    def test_a_finished_run_shows_each_node(self) -> None:
        result = _result()
        result["verdict"] = scale.cluster_verdict(result)
        text = self._print(result)
        self.assertIn("RSS after creation MiB", text)
        self.assertIn("300 / 310 / 320", text)
        self.assertIn("GET /jobs follower stale (node 2) limit=50", text)
        self.assertIn("Raft term before / after creation", text)
        self.assertIn("1 / 3", text)
        self.assertIn("verdict:", text)

    def test_a_run_that_failed_in_creation_shows_why_and_how_far(self) -> None:
        """Only the failure figures exist: they are printed, with the error."""
        result = {
            "nodes": 3,
            "error": "RuntimeError in phase 'create': POST /jobs on node 2: 503",
            "create_failed_after": {
                "seconds": 56.5,
                "jobs_acknowledged": 180000,
                "answers_503": 24,
            },
            "jobs_stored_at_failure": 190000,
            "roles_terms_at_failure": {"1": {"role": "leader", "term": 16}, "2": None, "3": None},
            "rss_at_failure_bytes": {"1": 700 * MIB, "2": None, "3": 710 * MIB},
        }
        text = self._print(result)
        self.assertIn("180,000", text)
        self.assertIn("700 / - / 710", text)
        self.assertIn("FAILED: RuntimeError in phase 'create'", text)
        self.assertNotIn("verdict", text)


class NodesOptionTests(SynchronousTestCase):
    def test_a_cluster_of_ten_is_refused_naming_the_option(self) -> None:
        """--nodes 10 stops before anything starts, with a line naming --nodes."""
        self.patch(sys, "argv", ["scale", "--nodes", "10", "--jobs", "1000"])
        error = self.assertRaises(SystemExit, scale.main)
        self.assertIn("--nodes", str(error.code))
        self.assertIn("10", str(error.code))
