"""
A real node under a flood of failed authentications (issue 17): wrong
secrets for a real key, then unknown keys, from 8 clients at once, beside a
legitimate client.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from harness.authflood import flood_run
from harness.process import client_headers, http_client, prepare_single_node


class AuthFloodTests(TestCase):
    timeout = 120

    async def test_floods_are_throttled_and_the_legitimate_client_keeps_its_latency(
        self,
    ) -> None:
        """
        Under 8 clients sending wrong secrets for a real key, and then
        unknown keys, the flood is answered 429 (with Retry-After), the node
        stays under a core, and a legitimate client beside it is answered 200
        throughout (L{flood_run} fails otherwise); /metrics counts the
        failures and the 429s. How fast the legitimate client is answered
        meanwhile (the issue's goal: p95 within 3x its idle p95 + 5 ms) is a
        figure for the bench (C{python -m bench.auth --flood}), not for a test
        that shares two cores with the rest of the suite.
        """
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(node.kill)
        await node.start()
        headers = await client_headers(node)
        assert node.pid is not None
        for kind in ("wrong_secret", "unknown_key"):
            result = await flood_run(reactor, node.url, node.pid, headers, kind, seconds=2.0)
            statuses = result["statuses"]
            self.assertGreater(statuses.get("429", 0), 10 * statuses.get("401", 0), result)
            self.assertEqual(set(statuses) - {"401", "429"}, set(), result)
            self.assertLess(result["node_cpu_percent"], 100, result)
            self.assertGreater(result["legit_requests"], 0, result)
        http = http_client(reactor)
        response = await http.get(
            node.url + "/projects",
            headers={"x-api-key": headers["x-api-key"], "x-secret-key": "wrong"},
        )
        self.assertEqual(response.code, 429)
        self.assertGreaterEqual(int(response.headers.getRawHeaders("retry-after")[0]), 1)
        await response.content()
        metrics = await (await http.get(node.url + "/metrics", headers=headers)).text()
        self.assertIn('scheduler0_auth_failures_total{reason="wrong_secret"}', metrics)
        self.assertIn('scheduler0_auth_throttled_total{scope="address"}', metrics)
        log = open(os.path.join(node.workdir, "node-1.log")).read()
        self.assertNotIn(headers["x-secret-key"], log)
        self.assertNotIn(headers["x-api-key"], log)
        self.assertIn("authentication failures", log)
