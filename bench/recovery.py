"""
Recovery after overload: how soon lateness is back to normal once the load
drops (issue 13: within 10 s).

    python -m bench recovery [--nodes 3] [--base 20000] [--extra 40000]
                             [--overload 15] [--after 20]

A fresh node or cluster gets C{--base} jobs C{@every 1s} (over 10 URLs) and
their lateness is measured for 5 s (the baseline); then C{--extra} more jobs
in a second project push it past its capacity for C{--overload} seconds;
then that project is deleted with its jobs (one request) and the base jobs'
slots are followed for C{--after} seconds. For every second (by slot
instant) of the base jobs the table gives the slots delivered, missed and
the lateness p50/p99; "normal" is a second whose p99 is within twice the
baseline's p99 plus 100 ms and which missed nothing, and the figure is the
time from the drop to the first second after which every second is normal.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from typing import Any

from bench.cluster import under_test
from bench.common import distribution, percentile, scratch_dir, sleep, table
from bench.receiver import ReceiverProcess

DESCRIPTION = "Seconds until lateness is back to normal after an overload ends (--nodes N)."
GOAL_S = 10.0
COLUMNS = ["second", "expected", "delivered", "missed", "p50 ms", "p99 ms", "normal"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", type=int, default=None, help="jobs kept (20,000; quick 5,000)")
    parser.add_argument("--extra", type=int, default=None, help="jobs added (40,000; quick 10,000)")
    parser.add_argument("--overload", type=float, default=15.0, help="seconds past capacity")
    parser.add_argument("--after", type=float, default=20.0, help="seconds followed after the drop")
    parser.add_argument("--urls", type=int, default=10, help="callback URLs (10)")


def per_second(items: list[Any], jobs: set[str], start: float, end: float) -> dict[int, list]:
    """Lateness (ms) of each slot of C{jobs} (first arrival), by whole second of its instant."""
    first: dict[str, Any] = {}
    for item in items:
        if item.job_uuid not in jobs or not start <= item.scheduled_at < end:
            continue
        known = first.get(item.execution_id)
        if known is None or item.arrival < known.arrival:
            first[item.execution_id] = item
    seconds: dict[int, list] = defaultdict(list)
    for item in first.values():
        seconds[int(item.scheduled_at - start)].append((item.arrival - item.scheduled_at) * 1000)
    return seconds


async def scenario(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    base = args.base or (5_000 if args.quick else 20_000)
    extra = args.extra or (10_000 if args.quick else 40_000)
    result: dict[str, Any] = {"base": base, "extra": extra, "nodes": args.nodes}
    with scratch_dir("bench-recovery-") as workdir:
        receiver = ReceiverProcess(reactor)
        port = await receiver.start()
        node = await under_test(reactor, workdir, args.nodes)
        try:
            await node.add_jobs(base, port, args.urls, phases=4)
            base_jobs = {job.uuid for job in node.jobs}
            await sleep(reactor, 3)
            await receiver.reset()
            t0 = reactor.seconds()
            await sleep(reactor, 5)
            await sleep(reactor, 2)
            _, items = await receiver.dump(os.path.join(workdir, "baseline.tsv"))
            baseline = [v for vs in per_second(items, base_jobs, t0, t0 + 5).values() for v in vs]
            result["baseline_ms"] = distribution(baseline)
            normal_p99 = 2 * result["baseline_ms"]["p99"] + 100
            # The extra jobs in a project of their own, so one request drops them.
            response = await node._client.post(
                node.api_url + "/projects",
                json={"name": "overload", "description": "dropped later"},
                headers=node.headers,
            )
            extra_project = (await response.json())["data"]["uuid"]
            kept_project, node.project_uuid = node.project_uuid, extra_project
            await node.add_jobs(extra, port, args.urls, phases=4)
            node.project_uuid = kept_project
            await receiver.reset()
            t_over = reactor.seconds()
            await sleep(reactor, args.overload)
            t_drop = reactor.seconds()
            response = await node._client.delete(
                f"{node.api_url}/projects/{extra_project}",
                params={"cascade": "true"},
                headers=node.headers,
                timeout=60,
            )
            await response.text()
            result["drop_answered_s"] = round(reactor.seconds() - t_drop, 3)
            await sleep(reactor, args.after + 3)
            _, items = await receiver.dump(os.path.join(workdir, "recovery.tsv"))
            seconds = per_second(items, base_jobs, t_over, t_drop + args.after)
            first_drop_second = int(t_drop - t_over)
            rows = []
            series = []
            last = int(t_drop + args.after - t_over)
            for s in range(0, last):
                late = sorted(seconds.get(s, []))
                expected = base
                p50 = percentile(late, 50) if late else None
                p99 = percentile(late, 99) if late else None
                missed = expected - len(late)
                normal = bool(late) and missed <= 0 and p99 <= normal_p99
                rel = s - first_drop_second
                series.append({"second": rel, "delivered": len(late), "missed": missed,
                               "p50_ms": p50, "p99_ms": p99, "normal": normal})  # fmt: skip
                rows.append(
                    {
                        "second": f"{rel:+d}",
                        "expected": expected,
                        "delivered": len(late),
                        "missed": missed,
                        "p50 ms": round(p50, 1) if p50 is not None else "-",
                        "p99 ms": round(p99, 1) if p99 is not None else "-",
                        "normal": "yes" if normal else "no",
                    }
                )
            # The drop's own second is half overloaded: count from the next.
            after = [x for x in series if x["second"] >= 0]
            back = None
            for i, x in enumerate(after):
                if all(y["normal"] for y in after[i:]):
                    back = x["second"]
                    break
            result["series"] = series
            result["normal_p99_ms"] = normal_p99
            result["back_to_normal_s"] = back
            result["goal"] = {"seconds": GOAL_S, "met": back is not None and back <= GOAL_S}
            result["text"] = (
                f"recovery: {base} jobs kept, {extra} added for {args.overload:g} s then deleted"
                f" (answered in {result['drop_answered_s']} s), {args.nodes} node(s); baseline"
                f" p99 {result['baseline_ms']['p99']} ms, normal = p99 <= {normal_p99:.0f} ms and"
                " nothing missed; seconds counted from the drop\n"
                + table(rows, COLUMNS)
                + f"\nback to normal: {back if back is not None else 'never'} s after the drop"
                f" (goal <= {GOAL_S:.0f} s: "
                + ("met" if result["goal"]["met"] else "NOT met")
                + ")"
            )
        finally:
            await node.stop()
            await receiver.stop()
    return result


def main(argv: list[str] | None = None) -> None:
    from bench.common import run_scenario

    run_scenario("recovery", DESCRIPTION, add_arguments, scenario, argv, cluster=True)


if __name__ == "__main__":
    main()
