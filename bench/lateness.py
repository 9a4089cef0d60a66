"""
Lateness of callbacks on one node: N jobs C{@every 1s} against a real node
process and a real receiver; prints arrival - scheduled_at percentiles.

    python -m bench.lateness --jobs 1000 --seconds 60

The receiver runs in this process; its own CPU use is printed so it can be
seen not to be the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.internet.utils import getProcessOutputAndValue

from scheduler0.testing.process import REPO_ROOT, NodeProcess, free_port
from scheduler0.testing.receiver import CallbackReceiver
from scheduler0.timeutil import parse_instant


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[index]


def sleep(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def run(jobs: int, seconds: float, workdir: str, twistd_args: tuple[str, ...] = ()) -> dict:
    receiver = CallbackReceiver(reactor)
    port = await receiver.listen(reactor)
    http_port = free_port()
    config_path = os.path.join(workdir, "config.yml")
    with open(config_path, "w") as f:
        f.write(
            f"Port: {http_port}\nRaftAddress: 127.0.0.1:{free_port()}\n"
            "DataDir: data\nLogLevel: WARN\n"
        )
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-m", "scheduler0", "credential", "init", "--config", config_path, "--generate"],
        env=env,
        path=workdir,
    )
    if code:
        raise SystemExit(err.decode())
    node = NodeProcess(reactor, workdir, config_path, http_port, twistd_args=twistd_args)
    await node.start()
    try:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "scheduler0", "create", "credential", "--json", "--config", config_path],
            env=env,
            path=workdir,
        )
        credential = json.loads(out)
        headers = {"x-api-key": credential["api_key"], "x-secret-key": credential["api_secret"]}
        response = await treq.post(
            node.url + "/projects", json={"name": "bench", "description": ""}, headers=headers
        )
        project = (await response.json())["data"]
        body = [
            {
                "project_uuid": project["uuid"],
                "name": f"job-{i}",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{port}/callback",
            }
            for i in range(jobs)
        ]
        started = time.monotonic()
        response = await treq.post(node.url + "/jobs", json=body, headers=headers)
        assert response.code == 201, await response.text()
        created_s = time.monotonic() - started
        await sleep(3)  # warm-up: let the first slots pass before measuring
        receiver.arrivals.clear()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        await sleep(seconds)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        arrivals = list(receiver.arrivals)
    finally:
        await node.stop()
        await receiver.stop()
    lateness_ms = [
        (a.at - parse_instant(a.item["scheduled_at"]).timestamp()) * 1000 for a in arrivals
    ]
    per_slot: dict[str, int] = {}
    for a in arrivals:
        per_slot[a.item["execution_id"]] = per_slot.get(a.item["execution_id"], 0) + 1
    receiver_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {
        "jobs": jobs,
        "seconds": seconds,
        "create_s": round(created_s, 3),
        "deliveries": len(arrivals),
        "expected_about": int(jobs * seconds),
        "duplicates": sum(1 for n in per_slot.values() if n > 1),
        "lateness_ms": {
            "p50": round(percentile(lateness_ms, 50), 2),
            "p99": round(percentile(lateness_ms, 99), 2),
            "max": round(max(lateness_ms, default=float("nan")), 2),
        },
        "receiver_cpu_percent": round(100 * receiver_cpu / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--json", dest="json_path", help="also write the result here")
    parser.add_argument(
        "--profile", metavar="PATH", help="run the node under cProfile, stats saved to PATH"
    )
    args = parser.parse_args()

    async def go(_reactor: object) -> None:
        with tempfile.TemporaryDirectory() as workdir:
            extra: tuple[str, ...] = ()
            if args.profile:
                extra = (
                    f"--profile={os.path.abspath(args.profile)}",
                    "--profiler=cprofile",
                    "--savestats",
                )
            result = await run(args.jobs, args.seconds, workdir, extra)
        print(json.dumps(result, indent=2))
        if args.json_path:
            with open(args.json_path, "w") as f:
                json.dump(result, f, indent=2)

    react(lambda r: Deferred.fromCoroutine(go(r)))


if __name__ == "__main__":
    main()
