"""
Health that tells the truth, end to end: a real 3-node cluster on
127.0.0.1 (real twistd processes, SIGKILLs), its C{GET /healthcheck}, the
real C{scheduler0 status} command and, when Chromium is installed, the
dashboard.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from harness.browser import Browser, chromium_available
from harness.cluster import Cluster
from harness.process import http_client, run_cli
from harness.waiting import wait_for
from scheduler0.readiness import LEASE_LAPSED, NO_LEADER, NO_QUORUM
from tests.support.dashboard import artifacts_dir

# How long a survivor of a quorum loss may take to say so, and the cluster
# to be ready again once the lost nodes are back (processes start slowly on
# a busy machine).
UNREADY_WITHIN_S = 5.0
STATUS_WITHIN_S = 20.0
RECOVERED_WITHIN_S = 40.0


def _members(health: dict) -> dict[int, str]:
    return {m["node_id"]: m["role"] for m in health.get("members", ())}


def _row_role(node_id: int) -> str:
    """The dashboard's role badge of a member, as a JavaScript expression."""
    return f"document.querySelector('#members tbody tr[data-node-id=\"{node_id}\"] .badge.role')"


class ClusterHealthTests(TestCase):
    timeout = 240

    async def answers(self, ids: list[int]) -> dict[int, tuple[int, dict] | None]:
        return {n: await self.cluster.health_answer(n, timeout=2.0) for n in ids}

    async def wait_ready(self, ids: list[int], timeout: float, what: str) -> None:
        async def ready() -> bool:
            answers = await self.answers(ids)
            return all(a is not None and a[0] == 200 for a in answers.values())

        await wait_for(reactor, ready, timeout=timeout, interval=0.1, what=what)

    async def status(self, node_id: int) -> tuple[str, int]:
        """C{scheduler0 status} against node C{node_id}: its output and exit code."""
        out, err, code = await run_cli(
            self.cluster.workdir(node_id), "status", "--config", self.cluster.config_path(node_id)
        )
        return out + err, code

    async def test_quorum_loss_turns_health_503_and_status_1_until_the_nodes_return(self) -> None:
        """
        Every node of a healthy cluster answers 200 and keeps answering it.
        With a follower SIGKILLed the two others stay 200 and list it as
        unreachable (health check, /cluster, status, dashboard). With a
        second node SIGKILLed the survivor answers 503 with its reasons and
        `scheduler0 status` exits 1 within a few seconds; once the two are
        started again every node answers 200 and status exits 0.
        """
        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), 3, direct=True)
        self.cluster = cluster
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        leader = await cluster.wait_leader(30)
        await self.wait_ready(cluster.ids, 30, "every node of the new cluster to be ready")

        # Steady state: no lease or quorum blip turns a node unready.
        for _ in range(15):
            for node_id, answer in (await self.answers(cluster.ids)).items():
                self.assertEqual(answer and answer[0], 200, (node_id, answer))

        gone, survivor = (n for n in cluster.ids if n != leader)
        await cluster.kill(gone)
        seen: list[tuple[int, Any]] = []

        async def others_see_it_unreachable() -> bool:
            answers = await self.answers([leader, survivor])
            seen.extend((n, a and a[0]) for n, a in answers.items())
            return all(
                a is not None and _members(a[1])[gone] == "unreachable" for a in answers.values()
            )

        await wait_for(
            reactor,
            others_see_it_unreachable,
            timeout=10,
            interval=0.1,
            what=f"nodes {leader} and {survivor} to list node {gone} as unreachable",
        )
        self.assertEqual({code for _, code in seen}, {200}, seen)
        headers = await cluster.make_headers()
        response = await http_client(reactor).get(
            cluster.addresses[leader].address + "/cluster", headers=headers, timeout=5
        )
        members = {m["node_id"]: m for m in (await response.json())["data"]["members"]}
        self.assertEqual(
            (members[gone]["role"], members[gone]["reachable"]), ("unreachable", False)
        )
        out, code = await self.status(survivor)
        self.assertEqual(code, 0, out)
        self.assertIn("ready:       yes", out)
        rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].isdigit()}
        self.assertEqual(rows[str(gone)][1], "unreachable", out)

        browser = None
        if chromium_available():
            browser = await Browser.launch(reactor)
            self.addCleanup(browser.close)
            await browser.open(cluster.addresses[survivor].address + "/ui")
            await browser.type("#api-key", headers["x-api-key"])
            await browser.type("#api-secret", headers["x-secret-key"])
            await browser.click("#signin-submit")
            await browser.wait_for(
                f"{_row_role(gone)} && {_row_role(gone)}.textContent === 'unreachable' && "
                f"{_row_role(gone)}.classList.contains('warn') && "
                "document.querySelector('#readiness').textContent === 'Ready'",
                timeout=15,
                what=f"the dashboard to show node {gone} unreachable and this node ready",
            )
            await browser.screenshot(os.path.join(artifacts_dir(), "dashboard-unreachable.png"))

        # The leader goes too: the survivor has no quorum and fires nothing.
        await cluster.kill(leader)

        async def survivor_unready() -> dict | None:
            answer = await cluster.health_answer(survivor, timeout=1.0)
            return answer[1] if answer is not None and answer[0] == 503 else None

        health = await wait_for(
            reactor,
            survivor_unready,
            timeout=UNREADY_WITHIN_S,
            interval=0.1,
            what=f"node {survivor} to answer 503",
        )
        self.assertIs(health["ready"], False)
        codes = {r["code"] for r in health["reasons"]}
        self.assertTrue(codes and codes <= {NO_LEADER, NO_QUORUM, LEASE_LAPSED}, health)

        async def leader_unreachable() -> bool:
            health = await survivor_unready()
            return health is not None and _members(health)[leader] == "unreachable"

        # Its lease can lapse before an election timeout without word from
        # the leader has passed: that long the leader still counts as heard.
        await wait_for(
            reactor,
            leader_unreachable,
            timeout=UNREADY_WITHIN_S,
            interval=0.1,
            what=f"node {survivor} to list node {leader} as unreachable",
        )

        async def status_fails() -> str | None:
            out, code = await self.status(survivor)
            return out if code == 1 and "not ready:" in out else None

        out = await wait_for(
            reactor,
            status_fails,
            timeout=STATUS_WITHIN_S,
            interval=0.1,
            what=f"status of node {survivor} to exit 1",
        )
        self.assertIn("ready:       no", out)
        self.assertNotIn("scheduling:  running", out)
        if browser is not None:
            await browser.wait_for(
                "document.querySelector('#readiness').textContent === 'Not ready' && "
                "!document.querySelector('#not-ready').hidden && "
                "document.querySelectorAll('#not-ready li').length > 0",
                timeout=15,
                what="the dashboard to show why this node is not ready",
            )
            await browser.screenshot(os.path.join(artifacts_dir(), "dashboard-not-ready.png"))

        # Both come back: every node is ready again, status exits 0.
        await cluster.start(timeout=30, ids=[gone, leader])
        await self.wait_ready(cluster.ids, RECOVERED_WITHIN_S, "every node to be ready again")

        async def status_passes() -> str | None:
            out, code = await self.status(survivor)
            return out if code == 0 else None

        out = await wait_for(
            reactor,
            status_passes,
            timeout=STATUS_WITHIN_S,
            interval=0.1,
            what=f"status of node {survivor} to exit 0",
        )
        self.assertIn("ready:       yes", out)
        if browser is not None:
            await browser.wait_for(
                "document.querySelector('#readiness').textContent === 'Ready' && "
                "document.querySelector('#not-ready').hidden",
                timeout=15,
                what="the dashboard to show this node ready again",
            )
            self.assertEqual(browser.console_errors, [])
