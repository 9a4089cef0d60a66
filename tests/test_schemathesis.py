"""
schemathesis with every check against a real node finds nothing: the
OpenAPI document states every rule the API enforces and every status it
answers, and the API answers as the document says.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from harness.process import PEER_PASSWORD, PEER_USERNAME, client_headers, prepare_single_node
from scheduler0.api.openapi import CURSOR_FORMAT, SPEC_FORMAT, TIMEZONE_FORMAT, build_openapi
from scheduler0.api.routes import CLIENT, ROUTES
from scheduler0.api.validation import decode_cursor
from scheduler0.scheduler.spec import validate_spec, validate_timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")
CONFIG = os.path.join(ROOT, "harness", "schemathesis.toml")
# Random examples per operation and a fixed seed: the deterministic
# coverage cases plus these take 30-50 s on 2 cores.
EXAMPLES = 5
SEED = 17
# The admin-only routes, fuzzed once more with client headers: each must
# answer 401 (the document's only scheme for them is admin Basic auth).
ADMIN_PATHS = r"^/(credentials|cluster/members|signing-secrets/seal|backup)"


def schemathesis_command(url: str, *auth: str, examples: int = EXAMPLES, seed: int = SEED) -> list:
    """The schemathesis command line for C{url}'s document with every check."""
    return [
        "--config-file",
        CONFIG,
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--no-color",
        *auth,
    ]


class DocumentTests(SynchronousTestCase):
    """What the document says about the inputs no JSON Schema keyword states exactly."""

    def test_spec_timezone_and_cursor_have_formats(self) -> None:
        """A job's spec and timezone and every cursor parameter name their format."""
        document = build_openapi()
        job = document["components"]["schemas"]["JobInput"]["properties"]
        self.assertEqual(job["spec"]["format"], SPEC_FORMAT)
        self.assertEqual(job["timezone"]["format"], TIMEZONE_FORMAT)
        cursors = [
            parameter["schema"]["format"]
            for path in document["paths"].values()
            for operation in path.values()
            for parameter in operation["parameters"]
            if parameter["name"] == "cursor"
        ]
        self.assertTrue(cursors)
        self.assertEqual(set(cursors), {CURSOR_FORMAT})

    def test_only_routes_a_scope_can_refuse_declare_403(self) -> None:
        """
        Only a client credential's scope answers 403 (issue 19): an admin
        route (a client key on it gets 401), a health check and a client
        read that touches no project never do, so they do not declare it.
        """
        declared = set()
        for route in ROUTES:
            operation = build_openapi()["paths"][route.openapi_path][route.method.lower()]
            if "403" in operation["responses"]:
                declared.add(route.handler)
                self.assertEqual(route.auth, CLIENT, route.handler)
        self.assertNotIn("cluster_status", declared)
        self.assertNotIn("openapi_document", declared)
        self.assertIn("get_job", declared)
        self.assertIn("create_project", declared)

    def test_generated_format_values_are_valid(self) -> None:
        """The values the hooks give schemathesis for each format pass the API's own checks."""
        from hypothesis import given, settings

        from harness.schemathesis_hooks import CURSORS, SPECS, ZONES

        @settings(max_examples=50, database=None, derandomize=True)
        @given(SPECS, ZONES, CURSORS)
        def check(spec: str, zone: str, cursor: str) -> None:
            validate_spec(spec)
            validate_timezone(zone)
            decode_cursor(cursor)

        check()


class SchemathesisTests(TestCase):
    """schemathesis run --checks all against a real node."""

    timeout = 170

    def test_schemathesis_finds_nothing(self) -> Deferred:
        """
        Every operation, called with the generated coverage, fuzzing and
        stateful cases under admin Basic auth, and the admin routes under a
        client key, passes every schemathesis check: no valid request is
        refused, no invalid one accepted, every status, header and body is
        the document's.
        """

        async def run() -> None:
            from twisted.internet import reactor

            workdir = os.path.abspath(self.mktemp())
            # The checks send missing and wrong credentials on purpose; the
            # failure throttle (tests/test_auth_flood.py) would answer 429.
            node = await prepare_single_node(reactor, workdir, "AuthFailureLimit: 0\n")
            await node.start()
            self.addCleanup(node.stop)
            headers = await client_headers(node)
            client = [f"--header={name}: {value}" for name, value in headers.items()]
            client += ["--include-path-regex", ADMIN_PATHS]
            await self._passes(workdir, node.url, *client)
            await self._passes(workdir, node.url, f"--auth={PEER_USERNAME}:{PEER_PASSWORD}")

        return Deferred.fromCoroutine(run())

    async def _passes(self, workdir: str, url: str, *auth: str) -> None:
        """Run schemathesis in C{workdir} (its cache goes there) and fail with its findings."""
        env = {
            **os.environ,
            "PYTHONPATH": ROOT,
            "SCHEMATHESIS_HOOKS": "harness.schemathesis_hooks",
        }
        out, err, code = await getProcessOutputAndValue(
            SCHEMATHESIS, schemathesis_command(url, *auth), env=env, path=workdir
        )
        text = _text(out) + _text(err)
        if code != 0:
            self.fail(f"schemathesis found problems (exit {code}):\n{_findings(text)}")


def _text(data: Any) -> str:
    return data.decode("utf-8", "replace")


def _findings(text: str) -> str:
    """The report from its FAILURES section on (all of it when there is none)."""
    start = text.find("FAILURES")
    return text[start:] if start >= 0 else text
