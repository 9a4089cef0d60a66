"""
Scenario 2, throughput: raise the number of jobs C{@every 1s} (over 10
callback URLs) in steps on one node, each step measured over a fixed window,
until p99 lateness passes 1 s, slots are missed or slots are shed; report
the highest sustained executions/s, the lateness of each step, skipped
counts by reason, node CPU and RSS. With --profile a fresh node under
cProfile runs the highest step again and its top functions are printed.

    python -m bench throughput [--steps 1000 2000 5000 ...] [--seconds 30] [--profile PATH]
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.cluster import under_test
from bench.common import scratch_dir, sleep, table
from bench.precision import COLUMNS, measure_window, nodes_text, profile_text, row
from bench.receiver import ReceiverProcess

DESCRIPTION = (
    "Scenario 2: highest sustained executions/s of one node or a cluster (--nodes N), "
    "jobs raised in steps."
)
STEPS = [1000, 2000, 5000, 10_000, 12_500, 15_000, 20_000, 30_000, 50_000, 100_000]
QUICK_STEPS = [1000, 5000, 10_000]
LATE_LIMIT_MS = 1000.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, nargs="+", help=f"job counts (default {STEPS})")
    parser.add_argument("--urls", type=int, default=10, help="callback URLs (default 10)")
    parser.add_argument("--seconds", type=float, default=None, help="window per step (30; quick 8)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after adding jobs")
    parser.add_argument("--drain", type=float, default=3.0, help="seconds after each window")
    parser.add_argument("--profile", metavar="PATH", help="profile the node at the highest step")
    parser.add_argument(
        "--profile-jobs", type=int, help="profile at this job count (default: highest sustained)"
    )
    parser.add_argument(
        "--phases", type=int, default=1,
        help="create each step's jobs in this many groups over 1 s (default 1: all due at once)",
    )  # fmt: skip
    parser.add_argument(
        "--all-steps", action="store_true", help="run every step even after one fails"
    )


def verdict(f: dict[str, Any]) -> str | None:
    """Why a step is not sustained, or None when it is."""
    reasons = []
    p99 = f["lateness_ms"]["p99"]
    if p99 is None or p99 > LATE_LIMIT_MS:
        reasons.append(f"p99 {p99} ms > {LATE_LIMIT_MS:g} ms")
    if f["missed_slots"]:
        reasons.append(f"{f['missed_slots']} missed")
    skipped = (f.get("skipped") or {}).get("total") or 0
    if skipped:
        reasons.append(f"{skipped} shed/skipped")
    return "; ".join(reasons) or None


async def run_steps(
    reactor: Any, steps: list[int], urls: int, seconds: float, warmup: float, drain: float,
    stop_at_failure: bool = True, profile: str | None = None, label: str = "step", phases: int = 1,
    nodes: int = 1,
) -> list[dict[str, Any]]:  # fmt: skip
    """One node (or a cluster of C{nodes}), jobs added step by step; each step's figures."""
    results: list[dict[str, Any]] = []
    with scratch_dir("bench-throughput-") as workdir:
        receiver = ReceiverProcess(reactor)
        port = await receiver.start()
        try:
            node = await under_test(reactor, workdir, nodes, profile)
        except BaseException:
            await receiver.stop()
            raise
        try:
            for jobs in steps:
                try:
                    create_s = await node.add_jobs(jobs - len(node.jobs), port, urls, phases=phases)
                except Exception as e:
                    # An overloaded node may not take more jobs: that ends the steps.
                    print(f"  {jobs} jobs: creating the jobs failed: {e}", flush=True)
                    results.append({"jobs": jobs, "urls": urls, "create_error": str(e)[:500]})
                    break
                await sleep(reactor, warmup)
                f = await measure_window(
                    reactor, node, receiver, seconds, drain, workdir, f"{label}-{jobs}"
                )
                f.update(jobs=jobs, urls=urls, create_s=round(create_s, 3))
                f["failed_because"] = verdict(f)
                results.append(f)
                print(
                    f"  {jobs} jobs: {f['executions_per_s']} exec/s, p99 "
                    f"{f['lateness_ms']['p99']} ms, missed {f['missed_slots']}, "
                    f"skipped {(f.get('skipped') or {}).get('total')}"
                    + (f" -> not sustained ({f['failed_because']})" if f["failed_because"] else ""),
                    flush=True,
                )
                if f["failed_because"] and stop_at_failure:
                    break
        finally:
            await node.stop()
            await receiver.stop()
    if results:
        results[-1]["node_stop"] = node.stop_note or "ended after SIGTERM"
        if nodes > 1:
            results[-1]["leader_id"] = node.leader_id
    return results


async def scenario(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    steps = args.steps or (QUICK_STEPS if args.quick else STEPS)
    seconds = args.seconds if args.seconds is not None else (8.0 if args.quick else 30.0)
    results = await run_steps(
        reactor,
        steps,
        args.urls,
        seconds,
        args.warmup,
        args.drain,
        not args.all_steps,
        phases=args.phases,
        nodes=args.nodes,
    )
    measured = [f for f in results if "create_error" not in f]
    sustained = [f for f in measured if not f["failed_because"]]
    best = max(sustained, key=lambda f: f["executions_per_s"] or 0, default=None)
    rows = [
        row(f"{f['jobs']} jobs", f) | {"verdict": f["failed_because"] or "ok"} for f in measured
    ]
    rows += [
        {"run": f"{f['jobs']} jobs", "verdict": "creating the jobs failed"}
        for f in results
        if "create_error" in f
    ]
    text = (
        f"throughput: jobs @every 1s over {args.urls} URLs, {seconds:g} s per step, "
        f"{nodes_text(args.nodes)}, "
        f"{args.phases} phase(s)\n"
        + table(rows, COLUMNS + ["verdict"])
        + "\nhighest sustained: "
        + (f"{best['executions_per_s']} executions/s at {best['jobs']} jobs" if best else "none")
    )
    result: dict[str, Any] = {
        "load": {
            "steps": steps,
            "urls": args.urls,
            "seconds_per_step": seconds,
            "nodes": args.nodes,
            "phases": args.phases,
        },  # fmt: skip
        "goal": ">= 30,000 executions/s on the cluster; first milestone 10,000 "
        "(issue 5, scenario 2)",
        "steps": results,
        "highest_sustained": (
            {"jobs": best["jobs"], "executions_per_s": best["executions_per_s"]} if best else None
        ),
    }
    if args.profile:
        top = args.profile_jobs or (best["jobs"] if best else steps[0])
        profiled = await run_steps(
            reactor, [top], args.urls, seconds, args.warmup, args.drain, profile=args.profile,
            label="profiled", phases=args.phases, nodes=args.nodes,
        )  # fmt: skip
        path = args.profile
        if args.nodes > 1:
            path = f"{args.profile}.node{profiled[-1].get('leader_id')}"
            text += f"\n(profile of the leader, node {profiled[-1].get('leader_id')})"
        ptext, result["profile"] = profile_text(path)
        result["profile"]["run"] = profiled[0]
        text += (
            f"\n\nprofiled run (fresh node under cProfile, {top} jobs, {seconds:g} s; "
            "cProfile slows the node, so its figures are not the benchmark's):\n"
        )
        if "create_error" in profiled[0]:
            text += f"creating the jobs failed: {profiled[0]['create_error']}\n"
        else:
            text += table([row(f"{top} jobs", profiled[0])], COLUMNS) + "\n"
        text += ptext
    result["text"] = text
    return result


def main(argv: list[str] | None = None) -> None:
    from bench.common import run_scenario

    run_scenario("throughput", DESCRIPTION, add_arguments, scenario, argv, cluster=True)


if __name__ == "__main__":
    main()
