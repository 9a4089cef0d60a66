"""
Take the README's dashboard screenshot from a real 3-node cluster.

    .venv/bin/python docs/screenshot.py --minutes 10 --out docs/dashboard.png

Starts three nodes on 127.0.0.1 and a callback receiver (one job's
callback fails about one time in five), lets the jobs run for the given
minutes so the last-hour chart has something to show, signs in to the
dashboard in headless Chromium and saves the overview as a PNG.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile

from twisted.internet import task
from twisted.internet.defer import Deferred

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness.browser import Browser  # noqa: E402
from harness.cluster import Cluster  # noqa: E402
from harness.process import http_client  # noqa: E402
from harness.receiver import CallbackReceiver  # noqa: E402

JOBS = {
    "billing": [
        ("invoice run", "@every 10s", "ok"),
        ("ledger sync", "@every 3s", "ok"),
        ("dunning emails", "*/2 * * * *", "ok"),
    ],
    "notifications": [
        ("heartbeat", "@every 1s", "ok"),
        ("partner webhook", "@every 2s", "flaky"),
        ("digest", "0 8 * * *", "ok"),
    ],
}


def _sleep(reactor, seconds: float) -> Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


async def take(reactor, minutes: float, out: str) -> None:
    chance = random.Random(7)
    receiver = CallbackReceiver(
        reactor, status_for=lambda path: 500 if "flaky" in path and chance.random() < 0.2 else 200
    )
    port = await receiver.listen(reactor)
    cluster = Cluster(reactor, tempfile.mkdtemp(prefix="s0-shot-"), 3)
    try:
        await cluster.prepare()
        await cluster.start()
        leader = await cluster.wait_leader(30)
        headers = await cluster.make_headers()
        http = http_client(reactor)
        url = f"http://127.0.0.1:{cluster.addresses[leader].http_port}"
        for project, jobs in JOBS.items():
            response = await http.post(
                url + "/api/v1/projects",
                json={"name": project, "description": f"{project} jobs"},
                headers=headers,
            )
            uuid = (await response.json())["data"]["uuid"]
            for name, spec, path in jobs:
                response = await http.post(
                    url + "/api/v1/jobs",
                    json={
                        "project_uuid": uuid,
                        "name": name,
                        "spec": spec,
                        "callback_url": f"http://127.0.0.1:{port}/{path}",
                        "retry_max": 0,
                    },
                    headers=headers,
                )
                assert response.code == 201, await response.text()
        print(f"jobs created; running {minutes:g} min", flush=True)
        await _sleep(reactor, minutes * 60)
        browser = await Browser.launch(reactor)
        try:
            await browser.open(url + "/ui")
            await browser.wait_for("!document.querySelector('#signin').hidden", timeout=10)
            await browser.type("#api-key", headers["x-api-key"])
            await browser.type("#api-secret", headers["x-secret-key"])
            await browser.click("#signin-submit")
            await browser.wait_for(
                "!document.querySelector('#view-overview').hidden && "
                "Number(document.querySelector('#chart').dataset.succeeded) > 0",
                timeout=20,
            )
            # One more refresh (every 3 s), so every member's row is filled in.
            await _sleep(reactor, 4)
            print(await browser.screenshot(out))
        finally:
            await browser.close()
    finally:
        await cluster.close()
        await receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "dashboard.png"))
    args = parser.parse_args()
    task.react(lambda reactor: Deferred.fromCoroutine(take(reactor, args.minutes, args.out)))


if __name__ == "__main__":
    main()
