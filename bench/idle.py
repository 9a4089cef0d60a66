"""
Idle CPU: what a node or a cluster costs doing nothing. For each size, a
fresh node or cluster (direct links, as bench cpu makes them) with no jobs
is left alone for C{--settle} seconds, then the CPU (user+sys) of every node
process is summed over a window of C{--seconds}; the table gives that as a
percentage of one core, in all and for each node (the leader's marked).
With C{--rounds} R the sizes are measured R times, taking turns.

    python -m bench idle [--nodes 3 5] [--seconds 20] [--settle 5] [--rounds 1]

The nodes run the code of the tree this command runs from; to compare two
commits, run it from a git worktree of each (C{git worktree add /tmp/before
<commit>}, then C{cd /tmp/before && python -m bench.idle ...} with this file
copied there if that commit lacks it), taking turns.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from bench.cluster import under_test
from bench.common import scratch_dir, sleep, table

DESCRIPTION = "CPU of an idle node or cluster with no jobs (--nodes 3 5), each size fresh."
NODES = [3, 5]
COLUMNS = ["run", "round", "cpu s", "cpu%", "leader cpu%", "follower cpu%", "per-node cpu%"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=float, default=None, help="measured window per size (20; quick 10)"
    )
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds left alone before the window"
    )
    parser.add_argument("--rounds", type=int, default=1, help="times each size is measured")


def label(nodes: int) -> str:
    return "1 node" if nodes == 1 else f"{nodes} nodes"


async def one_size(reactor: Any, nodes: int, settle: float, seconds: float) -> dict[str, Any]:
    """A fresh node or cluster of C{nodes}, left alone, measured over C{seconds}."""
    with scratch_dir("bench-idle-") as workdir:
        node = await under_test(reactor, workdir, nodes)
        try:
            await sleep(reactor, settle)
            leader = getattr(node, "leader_id", None) or 1
            node.meter.mark()
            await sleep(reactor, seconds)
            figures = node.meter.read()
            if nodes > 1 and await node.find_leader(10) != leader:
                raise RuntimeError(f"the leader changed during the window (was node {leader})")
        finally:
            await node.stop()
    per_node = {
        int(n): f["cpu_percent_of_one_core"]
        for n, f in (figures.get("per_node") or {"1": figures}).items()
    }
    followers = [v for n, v in per_node.items() if n != leader]
    return {
        "nodes": nodes,
        "window_s": seconds,
        "cpu_s": figures["cpu_s"],
        "cpu_percent_of_one_core": figures["cpu_percent_of_one_core"],
        "leader": leader,
        "leader_cpu_percent": per_node.get(leader),
        "follower_cpu_percent_mean": round(statistics.fmean(followers), 1) if followers else None,
        "per_node_cpu_percent": per_node,
    }


def row(f: dict[str, Any]) -> dict[str, Any]:
    if "error" in f:
        return {"run": label(f["nodes"]), "round": f["round"], "cpu s": "failed: " + f["error"]}
    return {
        "run": label(f["nodes"]),
        "round": f["round"],
        "cpu s": f["cpu_s"],
        "cpu%": f["cpu_percent_of_one_core"],
        "leader cpu%": f["leader_cpu_percent"],
        "follower cpu%": f["follower_cpu_percent_mean"],
        "per-node cpu%": " / ".join(
            f"{v:g}{'*' if n == f['leader'] else ''}"
            for n, v in sorted(f["per_node_cpu_percent"].items())
        ),
    }


async def scenario(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds if args.seconds is not None else (10.0 if args.quick else 20.0)
    runs: list[dict[str, Any]] = []
    for round_ in range(1, args.rounds + 1):
        for nodes in args.nodes:
            try:
                f = await one_size(reactor, nodes, args.settle, seconds)
            except Exception as e:
                print(f"  {label(nodes)}: failed: {e}", file=sys.stderr, flush=True)
                runs.append({"nodes": nodes, "round": round_, "error": str(e)[:2000]})
                continue
            f["round"] = round_
            runs.append(f)
            print(
                f"  {label(nodes)}, round {round_}: {f['cpu_percent_of_one_core']} % of a core",
                flush=True,
            )
    text = (
        f"idle: no jobs, {args.settle:g} s settle, {seconds:g} s window; cpu% = user+sys of "
        "every node process over the window, in % of one core (* the leader)\n"
        + table([row(f) for f in runs], COLUMNS)
    )
    return {
        "definition": "cpu_percent_of_one_core = CPU s (user+sys) of every node process over "
        "the window / the window's s x 100, nodes idle with no jobs",
        "load": {"seconds": seconds, "settle_s": args.settle, "rounds": args.rounds},
        "runs": runs,
        "text": text,
    }


def main(argv: list[str] | None = None) -> None:
    from bench.common import run_scenario

    run_scenario("idle", DESCRIPTION, add_arguments, scenario, argv, node_counts=NODES)


if __name__ == "__main__":
    main()
