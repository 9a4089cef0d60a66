"""
CPU per delivered execution: the same load (8,000 jobs C{@every 1s} over 8
callback URLs) on one node, then on a fresh 3-node cluster, then on a fresh
5-node cluster, in one run. For each size: delivered executions/s, missed and
duplicated slots, lateness, the CPU seconds (user+sys) of all node processes
summed over the measured window, and that sum divided by the executions
delivered in the window (the delivered rate times the window's length, see
L{cpu_figures}), in microseconds; then each cluster's figure divided by one
node's and the 5-node figure divided by the 3-node one.

    python -m bench cpu [--nodes 1 3 5] [--jobs 8000] [--urls 8] [--seconds 30] [--quick]

Each size is one precision trial (L{bench.precision.one_trial}: a fresh node
or cluster, the jobs created as bench throughput creates them, on a
cluster on the leader and spread evenly before the warm-up, then the
window and the drain), so the figures are those of the other scenarios.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.common import table
from bench.precision import nodes_text, one_trial

DESCRIPTION = (
    "CPU per delivered execution of one node and of clusters (--nodes 1 3 5), "
    "each on a fresh node or cluster in the same run."
)
NODES = [1, 3, 5]
#: Goals (the issue): one node at most 25 µs of CPU per delivered execution, a
#: cluster at most 1.3x one node's figure, 5 nodes at most 1.1x 3 nodes'.
ONE_NODE_US_GOAL = 25.0
CLUSTER_RATIO_GOAL = 1.3
FIVE_TO_THREE_GOAL = 1.1
GOAL = (
    f"one node <= {ONE_NODE_US_GOAL:g} us of CPU per delivered execution; a cluster <= "
    f"{CLUSTER_RATIO_GOAL:g}x one node; 5 nodes <= {FIVE_TO_THREE_GOAL:g}x 3 nodes"
)
COLUMNS = ["run", "exec/s", "missed", "dup", "skipped", "p50 ms", "p99 ms", "cpu s", "us/exec",
           "/1 node", "/3 nodes", "cpu%", "per-node cpu%", "rcv cpu%"]  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=8000, help="jobs @every 1s (default 8000)")
    parser.add_argument(
        "--urls", type=int, default=8, help="callback URLs the jobs are spread over (default 8)"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="measured window per size (30; quick 10)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    parser.add_argument(
        "--drain", type=float, default=3.0, help="seconds after it for late arrivals"
    )
    parser.add_argument(
        "--phases", type=int, default=1,
        help="create the jobs in this many groups over 1 s (default 1: every job due at once)",
    )  # fmt: skip


def cpu_figures(f: dict[str, Any], jobs: int) -> dict[str, Any]:
    """
    The window's node CPU against what it delivered. The executions
    delivered in the window are the delivered rate (C{jobs} a second times
    the share of the window's slots that arrived) times the window's length:
    with the slots of all jobs due at the same instant, a window a few ms
    longer than 10 s holds 10 or 11 slots of each job depending on where it
    falls, while the CPU measured over it is that of 10 periods, so the plain
    count of slots (kept as C{us_per_slot_counted}) is off by up to 1/10.
    """
    node = f.get("node") or {}
    receiver = f.get("receiver") or {}
    cpu_s = node.get("cpu_s")
    window_s = f["window_s"]
    expected = f["expected_slots"]
    delivered_per_s = jobs * f["delivered_slots"] / expected if expected else None
    executions = delivered_per_s * window_s if delivered_per_s else None
    per_node = node.get("per_node") or {"1": node}
    return {
        "node_cpu_s": cpu_s,
        "window_s": window_s,
        "delivered_executions_per_s": round(delivered_per_s, 1) if delivered_per_s else 0.0,
        "delivered_executions": round(executions) if executions else 0,
        "us_per_execution": (
            round(cpu_s / executions * 1e6, 2) if cpu_s is not None and executions else None
        ),
        "us_per_slot_counted": (
            round(cpu_s / f["delivered_slots"] * 1e6, 2)
            if cpu_s is not None and f["delivered_slots"]
            else None
        ),
        "node_cpu_percent_of_one_core": node.get("cpu_percent_of_one_core"),
        "per_node_cpu_percent_of_one_core": {
            n: figures.get("cpu_percent_of_one_core") for n, figures in per_node.items()
        },
        "receiver_cpu_s": round(
            (receiver.get("cpu_user_s") or 0.0) + (receiver.get("cpu_sys_s") or 0.0), 3
        ),
        "receiver_cpu_percent_of_one_core": receiver.get("cpu_percent_of_one_core"),
    }


def label(nodes: int) -> str:
    return "1 node" if nodes == 1 else f"{nodes} nodes"


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def row(f: dict[str, Any]) -> dict[str, Any]:
    """One table row of a size's figures (or of its error)."""
    if "error" in f:
        return {"run": label(f["nodes"]), "exec/s": "failed: " + f["error"][:60]}
    cpu = f["cpu"]
    return {
        "run": label(f["nodes"]),
        "exec/s": cpu["delivered_executions_per_s"],
        "missed": f["missed_slots"],
        "dup": f["duplicated_slots"],
        "skipped": (f.get("skipped") or {}).get("total"),
        "p50 ms": f["lateness_ms"]["p50"],
        "p99 ms": f["lateness_ms"]["p99"],
        "cpu s": cpu["node_cpu_s"],
        "us/exec": cpu["us_per_execution"],
        "/1 node": f.get("ratio_to_1_node"),
        "/3 nodes": f.get("ratio_to_3_nodes"),
        "cpu%": cpu["node_cpu_percent_of_one_core"],
        "per-node cpu%": " / ".join(
            f"{v:g}" for v in cpu["per_node_cpu_percent_of_one_core"].values() if v is not None
        ),
        "rcv cpu%": cpu["receiver_cpu_percent_of_one_core"],
    }


def goals(by_nodes: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal the sizes measured can be checked against: the figure and whether it is met."""
    checks = []

    def check(name: str, figure: float | None, limit: float, sizes: list[int]) -> None:
        met = None if figure is None else figure <= limit
        # A size that missed slots spent CPU on work that was not delivered.
        missed = [f"{label(n)} missed {by_nodes[n]['missed_slots']:,}" for n in sizes
                  if by_nodes[n]["missed_slots"]]  # fmt: skip
        checks.append({"goal": name, "figure": figure, "met": met, "note": "; ".join(missed)})

    if 1 in by_nodes:
        one = by_nodes[1].get("cpu", {}).get("us_per_execution")
        check(f"1 node <= {ONE_NODE_US_GOAL:g} us/exec", one, ONE_NODE_US_GOAL, [1])
    for n, f in sorted(by_nodes.items()):
        if n > 1 and 1 in by_nodes:
            check(f"{n} nodes <= {CLUSTER_RATIO_GOAL:g}x 1 node", f.get("ratio_to_1_node"),
                  CLUSTER_RATIO_GOAL, [1, n])  # fmt: skip
    if 5 in by_nodes and 3 in by_nodes:
        check(f"5 nodes <= {FIVE_TO_THREE_GOAL:g}x 3 nodes", by_nodes[5].get("ratio_to_3_nodes"),
              FIVE_TO_THREE_GOAL, [3, 5])  # fmt: skip
    return checks


async def scenario(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds if args.seconds is not None else (10.0 if args.quick else 30.0)
    sizes: list[dict[str, Any]] = []
    for nodes in args.nodes:
        trial_args = argparse.Namespace(**{**vars(args), "nodes": nodes})
        try:
            f = await one_trial(reactor, trial_args, seconds, None)
        except Exception as e:
            # A size that fails (no leader, jobs never spread) is recorded; the next goes on.
            print(f"  {nodes_text(nodes)}: failed: {e}", file=sys.stderr, flush=True)
            sizes.append({"nodes": nodes, "error": str(e)[:2000]})
            continue
        f.update(nodes=nodes, jobs=args.jobs, urls=args.urls, cpu=cpu_figures(f, args.jobs))
        sizes.append(f)
        print(
            f"  {nodes_text(nodes)}: {f['cpu']['delivered_executions_per_s']} exec/s, node CPU "
            f"{f['cpu']['node_cpu_s']} s, {f['cpu']['us_per_execution']} us/exec, "
            f"missed {f['missed_slots']}",
            flush=True,
        )
    by_nodes = {f["nodes"]: f for f in sizes if "error" not in f}
    one = by_nodes.get(1, {}).get("cpu", {}).get("us_per_execution")
    three = by_nodes.get(3, {}).get("cpu", {}).get("us_per_execution")
    for n, f in by_nodes.items():
        us = f["cpu"]["us_per_execution"]
        if n > 1:
            f["ratio_to_1_node"] = ratio(us, one)
        if n > 3:
            f["ratio_to_3_nodes"] = ratio(us, three)
    checks = goals(by_nodes)
    text = (
        f"cpu: {args.jobs} jobs @every 1s over {args.urls} URLs, {seconds:g} s window per size, "
        f"{args.phases} phase(s); node CPU = user+sys of every node process over the window, "
        "us/exec = that / (executions delivered a second x the window's seconds)\n"
        + table([row(f) for f in sizes], COLUMNS)
        + "\n\ngoals (issue):\n"
        + table(
            [c | {"met": {True: "yes", False: "no", None: "-"}[c["met"]]} for c in checks],
            ["goal", "figure", "met", "note"],
        )
    )
    return {
        "definition": "us_per_execution = node CPU s (user+sys, all nodes) over the window / "
        "(delivered executions/s x window s) x 1e6; delivered executions/s = jobs x delivered "
        "slots / expected slots of the window",
        "load": {
            "jobs": args.jobs,
            "urls": args.urls,
            "seconds": seconds,
            "warmup_s": args.warmup,
            "nodes": args.nodes,
            "phases": args.phases,
        },
        "goal": GOAL,
        "sizes": sizes,
        "ratios": {
            f"{n}_nodes_to_1_node": f.get("ratio_to_1_node") for n, f in by_nodes.items() if n > 1
        }
        | ({"5_nodes_to_3_nodes": by_nodes[5].get("ratio_to_3_nodes")} if 5 in by_nodes else {}),
        "goals": checks,
        "text": text,
    }


def main(argv: list[str] | None = None) -> None:
    from bench.common import run_scenario

    run_scenario("cpu", DESCRIPTION, add_arguments, scenario, argv, node_counts=NODES)


if __name__ == "__main__":
    main()
