"""
The original document's Node.js client (tests/seed_client/index.js, copied
from it unchanged) creates its project and job on a real node, and the node
calls its /callback.
"""

from __future__ import annotations

import os
import shutil
import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from harness.process import client_headers, http_client, prepare_single_node
from harness.waiting import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


def port_3000_is_free() -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 3000))
        except OSError:
            return False
    return True


class _Client(ProcessProtocol):
    """Ignore the client's output; C{ended} fires when it has exited."""

    def __init__(self) -> None:
        self.ended: Deferred = Deferred()

    def processEnded(self, reason: object) -> None:
        self.ended.callback(None)

    async def kill(self) -> None:
        if not self.ended.called:
            self.transport.signalProcess("KILL")
        await self.ended


class SeedClientTests(TestCase):
    # npm install, then the job's first "@every 1m" slot one minute later.
    timeout = 480

    async def test_seed_client_runs_unchanged(self) -> None:
        """With API_ENDPOINT set as the README says, the seed client's job calls its /callback."""
        node_bin, npm = shutil.which("node"), shutil.which("npm")
        if not (node_bin and npm):
            raise SkipTest("node and npm are needed to run the original document's Node.js client")
        # The client listens on port 3000 (hard-coded in it); another run of
        # this test may hold it for a while.
        await wait_for(
            reactor, port_3000_is_free, timeout=150, interval=0.5, what="port 3000 to be free"
        )
        workdir = os.path.abspath(self.mktemp())
        client_dir = os.path.join(workdir, "client")
        shutil.copytree(os.path.join(HERE, "seed_client"), client_dir)
        out, err, code = await getProcessOutputAndValue(
            npm,
            ["install", "--no-package-lock", "--no-audit", "--no-fund", "--loglevel=error"],
            env=dict(os.environ),
            path=client_dir,
        )
        self.assertEqual(code, 0, f"npm install failed: {err.decode()}")

        http = http_client(reactor)
        node = await prepare_single_node(reactor, os.path.join(workdir, "node"))
        self.addCleanup(node.kill)
        await node.start()
        headers = await client_headers(node)

        env = dict(
            os.environ,
            API_ENDPOINT=node.url,
            API_KEY=headers["x-api-key"],
            API_SECRET=headers["x-secret-key"],
        )
        client = _Client()
        reactor.spawnProcess(client, node_bin, [node_bin, "index.js"], env=env, path=client_dir)
        self.addCleanup(client.kill)

        async def job_created() -> dict | None:
            response = await http.get(node.url + "/jobs", headers=headers)
            items = (await response.json())["data"]["items"]
            return items[0] if items else None

        job = await wait_for(reactor, job_created, timeout=30, what="the seed client's job")
        self.assertEqual(
            (job["spec"], job["callback_url"]), ("@every 1m", "http://localhost:3000/callback")
        )

        async def called_back() -> bool:
            response = await http.get(node.url + f"/jobs/{job['uuid']}/executions", headers=headers)
            items = (await response.json())["data"]["items"]
            return any(e["state"] == "succeeded" and e["status_code"] == 200 for e in items)

        await wait_for(
            reactor, called_back, timeout=90, interval=0.5, what="the seed client's /callback"
        )
