"""
Scenario 1, precision: N jobs C{@every 1s} against a fresh node for S
seconds; lateness (arrival - scheduled_at) p50/p99/max, missed slots
(expected from each job's anchor vs delivered), duplicated execution ids and
slots more than 1 s late. The callbacks go to the fast receiver
(bench/receiver.py) in a process of its own, whose CPU use is reported.

    python -m bench precision --jobs 1000 --seconds 300 [--urls 1] [--trials 1]
    python -m bench precision --quick --profile /tmp/node.prof
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from bench.cluster import under_test
from bench.common import (
    analyse,
    profile_args,
    profile_top,
    profile_top_cumulative,
    scratch_dir,
    sleep,
    spread,
    table,
)
from bench.receiver import ReceiverProcess
from scheduler0.timeutil import format_instant, utc_from_timestamp

DESCRIPTION = (
    "Scenario 1: lateness, missed and duplicated slots of N jobs @every 1s on one node "
    "or a cluster (--nodes N)."
)


def nodes_text(nodes: int) -> str:
    """How a table heading names the system under test."""
    return "1 node" if nodes == 1 else f"{nodes}-node cluster (direct links, jobs spread)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=1000, help="jobs @every 1s (default 1000)")
    parser.add_argument(
        "--urls", type=int, default=1, help="callback URLs the jobs are spread over"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="measured window (300; quick 30)"
    )
    parser.add_argument("--trials", type=int, default=1, help="fresh node per trial")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    parser.add_argument(
        "--drain", type=float, default=3.0, help="seconds after it for late arrivals"
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="run the node under cProfile, stats to PATH (a cluster: PATH.node<id>, leader shown)",
    )
    parser.add_argument(
        "--phases", type=int, default=1,
        help="create the jobs in this many groups over 1 s so their slots spread over the second "
        "(default 1: every job due at the same instant)",
    )  # fmt: skip


async def measure_window(
    reactor: Any,
    node: Any,
    receiver: ReceiverProcess,
    seconds: float,
    drain: float,
    workdir: str,
    label: str = "window",
) -> dict[str, Any]:
    """
    Measure the slots scheduled in one window of C{seconds}: CPU/RSS of the
    scheduler process over the window (C{node.meter}), the receiver's CPU
    over window and drain, the analysis of every item that arrived by the end
    of the drain against C{node.jobs}, and C{node.skipped()} when it has one.
    """
    await receiver.reset()
    t0 = reactor.seconds()
    node.meter.mark()
    ticks = max(1, int(seconds))
    for _ in range(ticks):
        await sleep(reactor, seconds / ticks)
        node.meter.sample_rss()
    t1 = reactor.seconds()
    usage = node.meter.read()
    await sleep(reactor, drain)
    receiver_stats, items = await receiver.dump(os.path.join(workdir, f"{label}.tsv"))
    figures = analyse(items, node.jobs, t0, t1)
    skipped = getattr(node, "skipped", None)
    if skipped is not None:
        figures["skipped"] = await skipped(since=format_instant(utc_from_timestamp(t0)))
    figures["node"] = usage
    figures["receiver"] = receiver_stats
    return figures


async def one_trial(
    reactor: Any, args: argparse.Namespace, seconds: float, profile: str | None
) -> dict[str, Any]:
    with scratch_dir("bench-precision-") as workdir:
        receiver = ReceiverProcess(reactor)
        port = await receiver.start()
        try:
            node = await under_test(reactor, workdir, getattr(args, "nodes", 1), profile)
        except BaseException:
            await receiver.stop()
            raise
        try:
            create_s = await node.add_jobs(
                args.jobs, port, args.urls, phases=getattr(args, "phases", 1)
            )
            await sleep(reactor, args.warmup)
            figures = await measure_window(reactor, node, receiver, seconds, args.drain, workdir)
        finally:
            await node.stop()
            await receiver.stop()
    figures["create_s"] = round(create_s, 3)
    if getattr(args, "nodes", 1) > 1:
        figures["leader_id"] = node.leader_id
    figures["node_stop"] = node.stop_note or "ended after SIGTERM"
    return figures


def row(label: str, f: dict[str, Any]) -> dict[str, Any]:
    """One table row of a window's figures."""
    late = f["lateness_ms"]
    return {
        "run": label,
        "jobs": f.get("jobs"),
        "urls": f.get("urls"),
        "secs": f["window_s"],
        "exec/s": f["executions_per_s"],
        "p50 ms": late["p50"],
        "p99 ms": late["p99"],
        "max ms": late["max"],
        "missed": f["missed_slots"],
        "dup": f["duplicated_slots"],
        ">1s": f["late_over_1s"],
        "skipped": (f.get("skipped") or {}).get("total"),
        "node cpu%": (f.get("node") or {}).get("cpu_percent_of_one_core"),
        "node MiB": (f.get("node") or {}).get("peak_rss_mib"),
        "rcv cpu%": (f.get("receiver") or {}).get("cpu_percent_of_one_core"),
    }


COLUMNS = ["run", "jobs", "urls", "secs", "exec/s", "p50 ms", "p99 ms", "max ms", "missed", "dup",
           ">1s", "skipped", "node cpu%", "node MiB", "rcv cpu%"]  # fmt: skip


def profile_text(path: str) -> tuple[str, dict[str, Any]]:
    own = profile_top(path, 20)
    cumulative = profile_top_cumulative(path, 20)
    text = "\nnode profile, own time:\n" + table(
        own, ["function", "calls", "own_s", "own_percent", "cumulative_s"]
    )
    text += "\n\nnode profile, project functions by cumulative time:\n" + table(
        cumulative, ["function", "calls", "own_s", "cumulative_s", "cumulative_percent"]
    )
    return text, {"own_time": own, "cumulative_project": cumulative}


async def scenario(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds if args.seconds is not None else (30.0 if args.quick else 300.0)
    trials = []
    for n in range(args.trials):
        profile = args.profile if n == args.trials - 1 else None
        figures = await one_trial(reactor, args, seconds, profile)
        figures.update(jobs=args.jobs, urls=args.urls)
        trials.append(figures)
    rows = [row(f"trial {n + 1}", f) for n, f in enumerate(trials)]
    summary = {
        key: spread([f["lateness_ms"][key] for f in trials]) for key in ("p50", "p99", "max")
    }
    summary["missed_slots"] = spread([f["missed_slots"] for f in trials])
    summary["duplicated_slots"] = spread([f["duplicated_slots"] for f in trials])
    summary["executions_per_s"] = spread([f["executions_per_s"] for f in trials])
    text = (
        f"precision: {args.jobs} jobs @every 1s over {args.urls} URL(s), "
        f"{seconds:g} s window, {args.trials} trial(s), {nodes_text(args.nodes)}, "
        f"{args.phases} phase(s)\n" + table(rows, COLUMNS)
    )
    if args.trials > 1:
        text += "\nover trials (min/median/max): " + ", ".join(
            f"{k} {v['min']}/{v['median']}/{v['max']}" for k, v in summary.items()
        )
    result: dict[str, Any] = {
        "load": {
            "jobs": args.jobs,
            "urls": args.urls,
            "seconds": seconds,
            "nodes": args.nodes,
            "phases": args.phases,
        },
        "goal": "p99 <= 5 ms, 0 missed, 0 duplicated (issue 5, scenario 1)",
        "trials": trials,
        "over_trials": summary,
    }
    if args.profile:
        path = args.profile
        if args.nodes > 1:
            leader = trials[-1].get("leader_id")
            path = f"{args.profile}.node{leader}"
            text += f"\n(profile of the leader, node {leader})"
        ptext, result["profile"] = profile_text(path)
        text += "\n" + ptext
    result["text"] = text
    return result


def main(argv: list[str] | None = None) -> None:
    from bench.common import run_scenario

    run_scenario("precision", DESCRIPTION, add_arguments, scenario, argv, cluster=True)


__all__ = ["main", "scenario", "measure_window", "one_trial", "profile_args"]

if __name__ == "__main__":
    main()
