"""
Job policies end to end (issue 14), with real parts: a real C{twistd
scheduler0} process, a real HTTP receiver that answers slowly or with an
error, and the records each policy must leave.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from harness.process import client_headers, http_client, prepare_single_node
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from scheduler0.timeutil import format_instant, parse_instant

#: How long the slow path of the receiver holds each answer.
SLOW_S = 2.5


class PolicyEndToEndTests(TestCase):
    timeout = 120

    async def start(self) -> None:
        self.http = http_client(reactor)
        self.receiver = CallbackReceiver(
            reactor,
            status_for=lambda path: 422 if path.startswith("/refuse") else 200,
            delay_for=lambda path: SLOW_S if path.startswith("/slow") else 0.0,
            body_for=lambda path: (
                b"invoice 7 is closed" if path.startswith("/refuse") else b'{"ok": true}'
            ),
        )
        self.port = await self.receiver.listen(reactor)
        self.addCleanup(self.receiver.stop)
        self.node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(self.node.kill)
        await self.node.start()
        self.headers = await client_headers(self.node)
        self.project = await self.post("/projects", {"name": "policies", "description": ""})

    async def post(self, path: str, body: dict) -> dict:
        response = await self.http.post(self.node.url + path, json=body, headers=self.headers)
        text = await response.text()
        self.assertEqual(response.code, 201, text)
        return (await response.json())["data"]

    async def job(self, path: str, **fields: Any) -> dict:
        return await self.post(
            "/jobs",
            {
                "project_uuid": self.project["uuid"],
                "name": f"job at {path}",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{self.port}{path}",
                **fields,
            },
        )

    async def records(self, job: dict) -> dict[str, dict]:
        """scheduled_at -> the job's execution record."""
        response = await self.http.get(
            self.node.url + f"/jobs/{job['uuid']}/executions?limit=1000", headers=self.headers
        )
        items = (await response.json())["data"]["items"]
        return {item["scheduled_at"]: item for item in items}

    def arrived(self, job: dict) -> list[Any]:
        return [a for a in self.receiver.arrivals if a.item["job_uuid"] == job["uuid"]]

    async def test_forbid_skips_the_slots_due_while_one_runs(self) -> None:
        """
        forbid, endpoint answering after 2.5 s: no two POSTs of the job are
        open at once; every slot in between is recorded skipped still_running.
        """
        await self.start()
        job = await self.job("/slow", concurrency_policy="forbid")
        await self.receiver.wait_until(lambda: len(self.arrived(job)) >= 3)
        sent = self.arrived(job)
        # Each POST went only once the one before was answered.
        for before, after in zip(sent, sent[1:], strict=False):
            self.assertGreaterEqual(after.at, before.at + SLOW_S - 0.05)
        first = parse_instant(sent[0].item["scheduled_at"])
        last = parse_instant(sent[-1].item["scheduled_at"])
        slots = [
            format_instant(first + timedelta(seconds=k))
            for k in range(int((last - first).total_seconds()) + 1)
        ]
        sent_slots = {a.item["scheduled_at"] for a in sent}

        async def settled() -> dict[str, dict] | None:
            records = await self.records(job)
            if all(slot in records for slot in slots) and all(
                records[slot]["state"] == "succeeded" for slot in sent_slots if slot != slots[-1]
            ):
                return records
            return None

        records = await wait_for(reactor, settled, timeout=15, what="the forbid records")
        for slot in slots:
            record = records[slot]
            if slot in sent_slots:
                self.assertIn(record["state"], ("succeeded", "running"), record)
            else:
                self.assertEqual(
                    (record["state"], record["skip_reason"]), ("skipped", "still_running")
                )
                self.assertEqual(record["attempts"], 0)
        self.assertGreaterEqual(len(slots) - len(sent_slots), 2 * (len(sent_slots) - 1))

    async def test_replace_abandons_the_running_execution(self) -> None:
        """
        replace, endpoint answering after 2.5 s: every slot is sent on time,
        and each execution still running when the next slot came is recorded
        skipped replaced, naming that slot.
        """
        await self.start()
        job = await self.job("/slow", concurrency_policy="replace")
        await self.receiver.wait_until(lambda: len(self.arrived(job)) >= 4)
        sent = self.arrived(job)
        for arrival in sent:
            self.assertLess(
                arrival.at - parse_instant(arrival.item["scheduled_at"]).timestamp(), 0.5
            )
        slots = [a.item["scheduled_at"] for a in sent[:3]]

        async def settled() -> dict[str, dict] | None:
            records = await self.records(job)
            if all(records.get(slot, {}).get("state") == "skipped" for slot in slots):
                return records
            return None

        records = await wait_for(reactor, settled, timeout=10, what="the replace records")
        for slot in slots:
            record = records[slot]
            following = format_instant(parse_instant(slot) + timedelta(seconds=1))
            self.assertEqual((record["skip_reason"], record["attempts"]), ("replaced", 1))
            self.assertIn(f"replaced by the slot of {following}", record["error"])

    async def test_coalesce_delivers_one_execution_after_an_outage(self) -> None:
        """
        coalesce: after the node was down for a few slots, one execution (the
        latest missed slot) is delivered; the other missed slots are recorded
        skipped coalesced; a job without coalesce gets them all.
        """
        await self.start()
        coalescing = await self.job("/fast", coalesce=True)
        plain = await self.job("/plain")
        await self.receiver.wait_until(
            lambda: len(self.arrived(coalescing)) >= 2 and len(self.arrived(plain)) >= 2
        )
        await self.node.kill()
        down_at = reactor.seconds()
        await wait_for(
            reactor, lambda: reactor.seconds() >= down_at + 3.5, timeout=6, what="downtime"
        )
        await self.node.start()
        restarted_at = reactor.seconds()

        def after(job: dict) -> list[Any]:
            """What arrived after the restart."""
            return [a for a in self.arrived(job) if a.at > down_at]

        # Wait for slots due after the restart: the catch-up is over by then.
        await self.receiver.wait_until(
            lambda: all(
                any(
                    parse_instant(a.item["scheduled_at"]).timestamp() > restarted_at + 1
                    for a in after(job)
                )
                for job in (coalescing, plain)
            )
        )

        async def coalesced_records() -> list[str] | None:
            records = await self.records(coalescing)
            slots = sorted(s for s, r in records.items() if r["skip_reason"] == "coalesced")
            return slots if len(slots) >= 2 else None

        coalesced = await wait_for(
            reactor, coalesced_records, timeout=10, what="the coalesced records"
        )
        # Consecutive missed slots, and only the one after the last of them went.
        first = parse_instant(coalesced[0])
        self.assertEqual(
            coalesced,
            [format_instant(first + timedelta(seconds=k)) for k in range(len(coalesced))],
        )
        latest = format_instant(parse_instant(coalesced[-1]) + timedelta(seconds=1))
        sent = [a.item["scheduled_at"] for a in after(coalescing)]
        self.assertEqual(sent.count(latest), 1, sent)
        self.assertFalse(set(coalesced) & set(sent), sent)
        # The job without coalesce got each missed slot, late.
        plain_sent = {a.item["scheduled_at"] for a in after(plain)}
        plain_first = parse_instant(min(plain_sent))
        self.assertGreaterEqual(restarted_at - plain_first.timestamp(), 2.0, plain_sent)
        records = await self.records(plain)
        self.assertFalse([r for r in records.values() if r["skip_reason"] == "coalesced"])

    async def test_a_failure_keeps_the_answer_and_notifies_the_project(self) -> None:
        """
        A failed execution's record keeps the first bytes of the answer, and
        the project's notify_url gets one signed notification naming it.
        """
        await self.start()
        response = await self.http.patch(
            self.node.url + f"/projects/{self.project['uuid']}",
            json={"notify_url": f"http://127.0.0.1:{self.port}/notify"},
            headers=self.headers,
        )
        self.assertEqual(response.code, 200, await response.text())
        job = await self.job("/refuse", retry_max=0, spec="@every 5s")
        await self.receiver.wait_until(
            lambda: any(a.path == "/notify" for a in self.receiver.arrivals)
        )
        [note] = [a for a in self.receiver.arrivals if a.path == "/notify"][:1]
        self.assertEqual(note.headers["x-scheduler0-event"], "execution.failed")
        self.assertIn("x-scheduler0-signature", note.headers)
        self.assertEqual(
            {k: note.item[k] for k in ("event", "job_uuid", "status_code", "attempts")},
            {
                "event": "execution.failed",
                "job_uuid": job["uuid"],
                "status_code": 422,
                "attempts": 1,
            },
        )
        self.assertEqual(note.item["response_body"], "invoice 7 is closed")
        records = await self.records(job)
        record = records[note.item["scheduled_at"]]
        self.assertEqual(
            (record["state"], record["status_code"], record["response_body"]),
            ("failed", 422, "invoice 7 is closed"),
        )
