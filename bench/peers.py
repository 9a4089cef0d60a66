"""
Scenario 6, peers in the same run: APScheduler 3.x in one process, interval
jobs of 1 s that POST each execution to the same fast receiver, at the
scenario-1 load and at the scenario-2 steps, next to a Scheduler0 node
measured the same way in the same run.

    .venv/bin/pip install 'apscheduler<4'    # bench-only, not in setup.py
    python -m bench peers [--jobs 1000] [--seconds 60] [--steps 1000 2000 5000]
                          [--mode reactor|thread]

APScheduler runs as C{TwistedScheduler}. C{--mode thread} (the default) is
its stock C{TwistedExecutor}: jobs run in the reactor's thread pool and hand
the POST to the reactor with C{callFromThread}; its one change is that each
call is told the run time it is for, so lateness is measured, not guessed.
C{--mode reactor} gives it an executor that calls each job in the reactor
thread instead (it was not faster in our runs). Both POST with treq over a
kept-alive connection pool. APScheduler has no batching: one POST per
execution, at most 64 in flight (a semaphore; treq alone opens a new
connection for every POST that finds none idle, and a backlog becomes
thousands of connections). C{misfire_grace_time} is 60 s (as Scheduler0's
default catch-up window), C{coalesce} off, C{max_instances} 1000.

The APScheduler side runs as C{python -m bench.peers --child ...} and talks
to the scenario over stdin/stdout like the receiver.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from datetime import UTC
from typing import Any

from twisted.internet.defer import Deferred

from bench.common import Job, ProcessMeter, sleep, table
from bench.precision import COLUMNS, measure_window, row
from bench.receiver import LineChild, ReceiverProcess

DESCRIPTION = "Scenario 6: APScheduler 3.x next to Scheduler0 (1 node) in the same run."
STEPS = [1000, 2000, 5000, 10_000, 20_000]
QUICK_STEPS = [5000]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=1000, help="scenario-1 load (default 1000)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="scenario-1 window (300; quick 10)"
    )
    parser.add_argument("--steps", type=int, nargs="*", help=f"scenario-2 steps (default {STEPS})")
    parser.add_argument(
        "--step-seconds", type=float, default=None, help="window per step (30; quick 8)"
    )
    parser.add_argument(
        "--urls", type=int, default=10, help="callback URLs at the steps (default 10)"
    )
    parser.add_argument("--mode", choices=["thread", "reactor"], default="thread")
    parser.add_argument(
        "--phases", type=int, default=20,
        help="jobs fall due in this many groups spread over the second, on both sides (default 20; "
        "1: every job due at the same instant)",
    )  # fmt: skip
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--drain", type=float, default=3.0)
    parser.add_argument(
        "--only", choices=["apscheduler", "scheduler0", "cluster"], help="run one side only"
    )
    parser.add_argument(
        "--cluster-nodes", type=int, default=3,
        help="size of the Scheduler0 cluster measured beside one node (default 3; 0: none)",
    )  # fmt: skip


# -- the APScheduler process ----------------------------------------------------


def offset_ms(n: int, phases: int) -> int:
    """Where in the second job C{n} falls due: one of C{phases} evenly spaced instants."""
    return (n % phases) * 1000 // phases


def child(argv: list[str]) -> None:
    """Run APScheduler's TwistedScheduler with N interval jobs (see the module docstring)."""
    from datetime import datetime, timedelta

    import treq
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
    from apscheduler.executors.base import BaseExecutor, run_job
    from apscheduler.executors.twisted import TwistedExecutor
    from apscheduler.schedulers.twisted import TwistedScheduler
    from twisted.internet import reactor
    from twisted.internet.defer import DeferredSemaphore
    from twisted.internet.stdio import StandardIO
    from twisted.protocols.basic import LineReceiver
    from twisted.web.client import Agent, HTTPConnectionPool

    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--urls", type=int)
    parser.add_argument("--port", type=int)
    parser.add_argument("--mode")
    parser.add_argument("--start-ms", type=int)
    parser.add_argument("--phases", type=int)
    args = parser.parse_args(argv)

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 64
    pool.retryAutomatically = False
    client = treq.client.HTTPClient(Agent(reactor, pool=pool))
    # treq opens a new connection whenever none is idle; without a bound a
    # backlog turns into thousands of connections. At most 64 POSTs in flight
    # (as Scheduler0's MaxWorkers), the rest wait their turn.
    in_flight = DeferredSemaphore(64)
    counts = {"posted": 0, "answered": 0, "post_errors": 0, "missed_events": 0,
              "executed_events": 0, "error_events": 0}  # fmt: skip

    def post(n: int, run_time: datetime) -> Deferred:
        stamp = run_time.astimezone(UTC)
        body = json.dumps(
            [
                {
                    "execution_id": f"aps-{n}-{round(stamp.timestamp() * 1000)}",
                    "job_uuid": f"aps-{n}",
                    "scheduled_at": stamp.strftime("%Y-%m-%dT%H:%M:%S.")
                    + f"{stamp.microsecond // 1000:03d}Z",
                    "attempt": 1,
                }
            ]
        ).encode()
        counts["posted"] += 1

        def send() -> Deferred:
            sent = client.post(
                f"http://127.0.0.1:{args.port}/cb/{n % args.urls}",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            sent.addCallback(treq.content)
            return sent

        d = in_flight.run(send)

        def done(_: object) -> None:
            counts["answered"] += 1

        def failed(_: object) -> None:
            counts["post_errors"] += 1

        d.addCallbacks(done, failed)
        return d

    anchor = datetime.fromtimestamp(args.start_ms / 1000, UTC)

    def job_thread(n: int, run_time: datetime | None = None) -> None:
        # Runs in a pool thread, as TwistedExecutor runs every job.
        reactor.callFromThread(post, n, run_time)

    class JobAt:
        """A job seen with one run time appended to its arguments."""

        def __init__(self, job: Any, run_time: datetime) -> None:
            self._job = job
            self.args = (*job.args, run_time)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._job, name)

        def __str__(self) -> str:
            return str(self._job)

    def run_each(job: Any, alias: str, run_times: list[datetime], logger_name: str) -> list:
        events = []
        for run_time in run_times:
            events += run_job(JobAt(job, run_time), alias, [run_time], logger_name)
        return events

    class ThreadExecutor(TwistedExecutor):
        """APScheduler's TwistedExecutor, except that each call is told its run time."""

        def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
            def callback(success: bool, result: Any) -> None:
                if success:
                    self._run_job_success(job.id, result)
                else:
                    self._run_job_error(job.id, result.value, result.tb)

            self._reactor.getThreadPool().callInThreadWithCallback(
                callback, run_each, job, job._jobstore_alias, run_times, self._logger.name
            )

    class ReactorExecutor(BaseExecutor):
        """Call each job in the reactor thread with the run time it is for."""

        def start(self, scheduler: Any, alias: str) -> None:
            super().start(scheduler, alias)
            self._reactor = scheduler._reactor

        def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
            from apscheduler.events import JobExecutionEvent

            events = []
            now = datetime.now(UTC)
            for run_time in run_times:
                grace = job.misfire_grace_time
                if grace is not None and (now - run_time).total_seconds() > grace:
                    events.append(
                        JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time)
                    )
                    continue
                post(job.args[0], run_time)
                events.append(
                    JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time)
                )
            # After submit_job has counted this instance.
            self._reactor.callLater(0, self._run_job_success, job.id, events)

    executors = {"default": ReactorExecutor() if args.mode == "reactor" else ThreadExecutor()}
    scheduler = TwistedScheduler(
        reactor=reactor,
        executors=executors,
        job_defaults={"coalesce": False, "max_instances": 1000, "misfire_grace_time": 60},
        timezone=UTC,
    )

    def on_event(event: Any) -> None:
        if event.code == EVENT_JOB_MISSED:
            counts["missed_events"] += 1
        elif event.code == EVENT_JOB_EXECUTED:
            counts["executed_events"] += 1
        elif event.code == EVENT_JOB_ERROR:
            counts["error_events"] += 1

    scheduler.add_listener(on_event, EVENT_JOB_MISSED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    first = anchor + timedelta(seconds=1)
    for n in range(args.jobs):
        scheduler.add_job(
            job_thread if args.mode == "thread" else (lambda n: None),
            "interval",
            seconds=1,
            start_date=first + timedelta(milliseconds=offset_ms(n, args.phases)),
            args=[n],
            id=f"aps-{n}",
        )
    scheduler.start()

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            command = line.decode().strip()
            if command == "stats":
                self.sendLine(json.dumps(counts).encode())
            elif command == "quit":
                self.sendLine(b"bye")
                reactor.stop()

        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:
                reactor.stop()

    control = Control()
    StandardIO(control)
    control.sendLine(b"ready")
    reactor.run()


class APSchedulerProcess(LineChild):
    """The APScheduler child process, seen from the scenario: its jobs, meter and stats."""

    what = "APScheduler process"

    def __init__(
        self, reactor: Any, jobs: int, urls: int, port: int, mode: str, phases: int
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.count, self.urls, self.port, self.mode, self.phases = jobs, urls, port, mode, phases
        self.jobs: list[Job] = []
        self.meter: ProcessMeter | None = None

    async def start(self) -> None:
        from harness.process import REPO_ROOT

        # The first slot comes after the jobs are added: 2 s plus 1 s per 5,000 jobs.
        start_ms = (math.ceil(time.time()) + 2 + self.count // 5000) * 1000
        self.jobs = [
            Job(f"aps-{n}", start_ms + offset_ms(n, self.phases), f"/cb/{n % self.urls}")
            for n in range(self.count)
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        ready = self._next_line()
        argv = [sys.executable, "-m", "bench.peers", "--child", "--jobs", str(self.count),
                "--urls", str(self.urls), "--port", str(self.port), "--mode", self.mode,
                "--start-ms", str(start_ms), "--phases", str(self.phases)]  # fmt: skip
        transport = self.reactor.spawnProcess(self, sys.executable, argv, env=env, path=REPO_ROOT)
        self.meter = ProcessMeter(transport.pid)
        await ready
        wait = start_ms / 1000 + 1 - time.time()
        if wait > 0:
            await sleep(self.reactor, wait)

    async def stats(self) -> dict:
        return json.loads(await self._ask("stats"))


async def apscheduler_window(
    reactor: Any, jobs: int, urls: int, seconds: float, args: argparse.Namespace, label: str
) -> dict[str, Any]:
    """One fresh APScheduler process with C{jobs} jobs, measured over one window."""
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as workdir:
        receiver = ReceiverProcess(reactor)
        port = await receiver.start()
        peer = APSchedulerProcess(reactor, jobs, urls, port, args.mode, args.phases)
        try:
            await peer.start()
            await sleep(reactor, args.warmup)
            f = await measure_window(reactor, peer, receiver, seconds, args.drain, workdir, label)
            f["apscheduler_counts"] = await peer.stats()
        finally:
            await peer.stop()
            await receiver.stop()
    f.update(jobs=jobs, urls=urls)
    return f


def _fails(f: dict[str, Any]) -> bool:
    p99 = f["lateness_ms"]["p99"]
    return p99 is None or p99 > 1000 or f["missed_slots"] > 0


async def scenario(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    from bench import precision, throughput

    try:
        import apscheduler
    except ImportError:
        raise SystemExit(
            "peers: APScheduler is not installed; run .venv/bin/pip install 'apscheduler<4'"
        ) from None
    seconds = args.seconds if args.seconds is not None else (10.0 if args.quick else 300.0)
    step_seconds = (
        args.step_seconds if args.step_seconds is not None else (8.0 if args.quick else 30.0)
    )
    steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else STEPS)
    if args.only:
        sides = [args.only]
    else:
        sides = ["scheduler0", *(["cluster"] if args.cluster_nodes > 1 else []), "apscheduler"]
    label = {
        "scheduler0": "Scheduler0 1 node",
        "cluster": f"Scheduler0 {args.cluster_nodes} nodes",
        "apscheduler": f"APScheduler {apscheduler.__version__} ({args.mode})",
    }
    nodes_of = {"scheduler0": 1, "cluster": args.cluster_nodes}
    load1: dict[str, Any] = {}
    for side in sides:
        print(f"scenario-1 load, {side} ...", flush=True)
        if side in nodes_of:
            one = argparse.Namespace(
                jobs=args.jobs, urls=1, warmup=args.warmup, drain=args.drain, phases=args.phases,
                nodes=nodes_of[side],
            )  # fmt: skip
            f = await precision.one_trial(reactor, one, seconds, None)
            f.update(jobs=args.jobs, urls=1)
        else:
            f = await apscheduler_window(reactor, args.jobs, 1, seconds, args, "aps-load1")
        load1[side] = f
    stepped: dict[str, list[dict[str, Any]]] = {}
    for side in sides:
        if not steps:
            break
        print(f"scenario-2 steps, {side} ...", flush=True)
        if side in nodes_of:
            stepped[side] = [
                f
                for f in await throughput.run_steps(
                    reactor,
                    steps,
                    args.urls,
                    step_seconds,
                    args.warmup,
                    args.drain,
                    phases=args.phases,
                    nodes=nodes_of[side],
                )  # fmt: skip
                if "create_error" not in f
            ]
        else:
            stepped[side] = []
            for jobs in steps:
                f = await apscheduler_window(
                    reactor, jobs, args.urls, step_seconds, args, f"aps-{jobs}"
                )
                stepped[side].append(f)
                late = f["lateness_ms"]["p99"]
                print(
                    f"  {jobs} jobs: {f['executions_per_s']} exec/s, p99 {late} ms, "
                    f"missed {f['missed_slots']}",
                    flush=True,
                )
                if _fails(f):
                    break
    rows = [row(label[s], f) for s, f in load1.items()]
    text = (
        f"peers, scenario-1 load: {args.jobs} jobs @every 1s, 1 URL, {seconds:g} s, "
        f"due in {args.phases} phase(s) per second\n" + table(rows, COLUMNS)
    )
    if stepped:
        step_rows = []
        for side, results in stepped.items():
            for f in results:
                step_rows.append(row(f"{label[side]} {f['jobs']}", f))
        text += (
            f"\n\npeers, scenario-2 steps over {args.urls} URLs, {step_seconds:g} s each "
            "('node' columns: the scheduler process)\n" + table(step_rows, COLUMNS)
        )
    best = {
        side: max((f["executions_per_s"] for f in results if not _fails(f)), default=None)
        for side, results in stepped.items()
    }
    if stepped:
        text += "\nhighest sustained executions/s: " + ", ".join(
            f"{label[s]} {b}" for s, b in best.items()
        )
    return {
        "load": {
            "jobs": args.jobs,
            "seconds": seconds,
            "steps": steps,
            "step_seconds": step_seconds,
            "urls_at_steps": args.urls,
            "nodes": [nodes_of[side] for side in sides if side in nodes_of],
        },  # fmt: skip
        "apscheduler": {"version": apscheduler.__version__, "mode": args.mode},
        "phases": args.phases,
        "load1": load1,
        "steps": stepped,
        "highest_sustained": best,
        "text": text,
    }


def main(argv: list[str] | None = None) -> None:
    from bench.common import run_scenario

    run_scenario("peers", DESCRIPTION, add_arguments, scenario, argv)


if __name__ == "__main__":
    if "--child" in sys.argv[1:]:
        child(sys.argv[1:])
    else:
        main()
