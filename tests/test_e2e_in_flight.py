"""
A real node SIGKILLed while its callbacks are in flight (a slow receiver
holds their answers): after the restart nothing stays C{running}. A slot
still inside its job's catch-up window is sent again with the same
execution_id and recorded with its outcome; one outside it stays recorded
C{failed}, saying it may have been delivered.
"""

from __future__ import annotations

import os
from datetime import timedelta

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from harness.process import client_headers, http_client, prepare_single_node
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from scheduler0.store.executions import IN_DOUBT_ERROR
from scheduler0.timeutil import format_instant, utc_from_timestamp


class InFlightAtCrashTests(TestCase):
    timeout = 120

    async def test_executions_in_flight_at_a_sigkill_are_resolved_on_restart(self) -> None:
        """
        Two one-shot jobs fire into a receiver that holds its answers; both
        are recorded running; the node is SIGKILLed and started again. The
        job whose catch-up window (60 s) still holds its slot gets it again,
        same execution_id, and ends succeeded; the one whose window (1 s)
        has passed ends failed with the in-doubt error; no record is running.
        """
        http = http_client(reactor)
        slow = [True]
        receiver = CallbackReceiver(reactor, delay_for=lambda path: 60.0 if slow[0] else 0.0)
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(node.kill)
        await node.start()
        headers = await client_headers(node)
        response = await http.post(
            node.url + "/projects", json={"name": "crash", "description": ""}, headers=headers
        )
        project = (await response.json())["data"]["uuid"]
        at = format_instant(utc_from_timestamp(reactor.seconds()) + timedelta(seconds=2))
        jobs = {}
        for name, window in (("owed", 60), ("late", 1)):
            response = await http.post(
                node.url + "/jobs",
                json={
                    "project_uuid": project,
                    "name": name,
                    "spec": f"@at {at}",
                    "callback_url": f"http://127.0.0.1:{port}/{name}",
                    "catch_up_window_s": window,
                },
                headers=headers,
            )
            self.assertEqual(response.code, 201, await response.text())
            jobs[name] = (await response.json())["data"]["uuid"]

        async def running() -> int | None:
            response = await http.get(node.url + "/executions?state=running", headers=headers)
            total = (await response.json())["data"]["total"]
            return total if total == 2 else None

        await wait_for(reactor, running, timeout=20, what="both executions recorded running")
        self.assertEqual(len(receiver.arrivals), 2)
        first_ids = {a.path: a.item["execution_id"] for a in receiver.arrivals}
        await node.kill()
        slow[0] = False
        # The late job's 1 s window has surely passed when the node is back.
        back_at = reactor.seconds() + 1.5
        await wait_for(reactor, lambda: reactor.seconds() >= back_at, timeout=5, what="downtime")
        await node.start()

        async def settled() -> dict | None:
            out = {}
            for name, job_uuid in jobs.items():
                response = await http.get(
                    node.url + f"/jobs/{job_uuid}/executions", headers=headers
                )
                items = (await response.json())["data"]["items"]
                if len(items) != 1 or items[0]["state"] not in ("succeeded", "failed"):
                    return None
                out[name] = items[0]
            return out

        final = await wait_for(reactor, settled, timeout=20, what="both executions final")
        self.assertEqual(final["owed"]["state"], "succeeded")
        self.assertEqual(final["owed"]["execution_id"], first_ids["/owed"])
        self.assertEqual(final["late"]["state"], "failed")
        self.assertEqual(final["late"]["error"], IN_DOUBT_ERROR)
        self.assertEqual(final["late"]["execution_id"], first_ids["/late"])
        again = [a.item["execution_id"] for a in receiver.arrivals[2:]]
        self.assertEqual(again, [first_ids["/owed"]])
        response = await http.get(node.url + "/executions?state=running", headers=headers)
        self.assertEqual((await response.json())["data"]["total"], 0)
        self.assertIn("executions were in flight when this node stopped", node.output + _log(node))


def _log(node: object) -> str:
    """The node's log files (twistd writes its log there, not to stdout)."""
    workdir = node.workdir  # type: ignore[attr-defined]
    text = ""
    for name in sorted(os.listdir(workdir)):
        if name.startswith("node-") and name.endswith(".log"):
            with open(os.path.join(workdir, name), encoding="utf-8", errors="replace") as f:
                text += f.read()
    return text
