"""
End to end, with real parts: a real C{twistd scheduler0} process on
127.0.0.1 with real SQLite files, the real CLI, and a real HTTP server
receiving the callbacks.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import yaml
from twisted.internet import reactor
from twisted.internet.error import ProcessDone
from twisted.trial.unittest import TestCase

from harness.process import client_headers, http_client, prepare_single_node
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from scheduler0.scheduler.spec import execution_id
from scheduler0.signing import verify
from scheduler0.timeutil import parse_instant


class SingleNodeEndToEndTests(TestCase):
    timeout = 150

    async def test_callbacks_survive_a_sigkill(self) -> None:
        """
        A credential from C{scheduler0 create credential} creates a project and
        an C{@every 1s} job; the receiver gets one callback a second with
        deterministic ids; after SIGKILL and restart the job is still there and
        every slot in between arrives, late, with its original id.
        """
        http = http_client(reactor)
        receiver = CallbackReceiver(reactor)
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(node.kill)
        await node.start()
        headers = await client_headers(node)

        response = await http.post(
            node.url + "/projects",
            json={"name": "e2e", "description": "end to end"},
            headers=headers,
        )
        self.assertEqual(response.code, 201)
        project = (await response.json())["data"]
        response = await http.post(
            node.url + "/api/v1/jobs",
            json={
                "project_uuid": project["uuid"],
                "name": "every second",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{port}/callback",
                "data": {"hello": "world"},
            },
            headers=headers,
        )
        self.assertEqual(response.code, 201, await response.text())
        job = (await response.json())["data"]

        await receiver.wait_until(lambda: len(receiver.arrivals) >= 3)
        before = len(receiver.arrivals)
        await node.kill()
        # Stay down long enough that at least two slots pass unfired.
        back_at = reactor.seconds() + 2.5
        await wait_for(reactor, lambda: reactor.seconds() >= back_at, timeout=5, what="downtime")
        await node.start()
        await receiver.wait_until(lambda: len(receiver.arrivals) >= before + 4)

        response = await http.get(node.url + f"/jobs/{job['uuid']}", headers=headers)
        self.assertEqual(response.code, 200)
        self.assertEqual((await response.json())["data"]["spec"], "@every 1s")

        items = [a.item for a in receiver.arrivals]
        slots = sorted({parse_instant(i["scheduled_at"]) for i in items})
        # Every slot from the first to the last arrived: none was lost to the kill.
        self.assertEqual(
            slots, [slots[0] + timedelta(seconds=k) for k in range(len(slots))], "a slot is missing"
        )
        anchor = parse_instant(job["anchor_at"])
        for item in items:
            slot = parse_instant(item["scheduled_at"])
            self.assertEqual(item["execution_id"], execution_id(job["uuid"], slot))
            self.assertEqual(item["job_uuid"], job["uuid"])
            self.assertEqual(item["data"], {"hello": "world"})
            self.assertEqual((slot - anchor).total_seconds() % 1, 0, "slot off the @every cadence")
        # Slots missed while the node was down arrived late, with the ids they would have had.
        late = [
            a
            for a in receiver.arrivals
            if a.at - parse_instant(a.item["scheduled_at"]).timestamp() > 0.5
        ]
        self.assertTrue(late, "no slot was caught up after the restart")
        self.assertEqual(node.starts, 2)
        # The node's own history shows the deliveries after the restart as succeeded.
        after_restart = {a.item["execution_id"] for a in receiver.arrivals[before:]}

        async def recorded() -> bool:
            response = await http.get(
                node.url + f"/jobs/{job['uuid']}/executions?limit=1000", headers=headers
            )
            items = (await response.json())["data"]["items"]
            succeeded = {e["execution_id"] for e in items if e["state"] == "succeeded"}
            return after_restart <= succeeded

        await wait_for(reactor, recorded, timeout=10, what="executions to be recorded")

        # A graceful stop (SIGTERM) exits cleanly, and the job carries on after it.
        ended = await node.stop()
        # twistd shuts down cleanly, then exits by the signal that stopped it.
        self.assertTrue(
            isinstance(ended, ProcessDone) or getattr(ended, "signal", None) == signal.SIGTERM,
            repr(ended),
        )
        with open(os.path.join(node.workdir, f"node-{node.starts}.log")) as f:
            self.assertIn("Server Shut Down.", f.read())
        count = len(receiver.arrivals)
        await node.start()
        await receiver.wait_until(lambda: len(receiver.arrivals) >= count + 2)
        slots = sorted({parse_instant(a.item["scheduled_at"]) for a in receiver.arrivals})
        self.assertEqual(
            slots, [slots[0] + timedelta(seconds=k) for k in range(len(slots))], "a slot is missing"
        )

        # Every callback was signed with the project's secret, across restarts.
        secret = project["signing_secret"]
        for arrival in receiver.arrivals:
            header = arrival.headers["x-scheduler0-signature"]
            self.assertTrue(verify(header, arrival.body, secret, arrival.at), header)
        # After a rotation the new secret signs, and the old one still does in its grace period.
        response = await http.post(
            node.url + f"/projects/{project['uuid']}/signing-secret",
            json={"grace_s": 600},
            headers=headers,
        )
        self.assertEqual(response.code, 200, await response.text())
        new_secret = (await response.json())["data"]["signing_secret"]
        rotated_at = reactor.seconds()
        await receiver.wait_until(lambda: any(a.at > rotated_at + 0.1 for a in receiver.arrivals))
        after = [a for a in receiver.arrivals if a.at > rotated_at + 0.1]
        for arrival in after:
            header = arrival.headers["x-scheduler0-signature"]
            self.assertTrue(verify(header, arrival.body, new_secret, arrival.at), header)
            self.assertTrue(verify(header, arrival.body, secret, arrival.at), header)
            self.assertFalse(verify(header, arrival.body + b" ", new_secret, arrival.at))

        # No secret reached the node's logs: client secret, signing secrets,
        # the admin password and the Raft secret key.
        with open(os.path.join(node.workdir, ".scheduler0")) as f:
            stored = yaml.safe_load(f)
        secrets = [
            headers["x-secret-key"],
            secret,
            new_secret,
            stored["AuthPassword"],
            stored["SecretKey"],
        ]
        for n in range(1, node.starts + 1):
            with open(os.path.join(node.workdir, f"node-{n}.log")) as f:
                text = f.read()
            for value in secrets:
                self.assertNotIn(value, text, f"a secret is in node-{n}.log")
