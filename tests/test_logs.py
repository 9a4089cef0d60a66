"""
Structured logs: the JSON-lines format, the events with ids (executions,
leadership), redaction of secrets, and a real node run with
C{--log-format json}.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

from twisted.application.service import Application
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from harness.cluster import Cluster
from harness.process import (
    PEER_PASSWORD,
    ok_and_failing_jobs,
)
from harness.waiting import wait_for
from scheduler0.config import Config
from scheduler0.logs import (
    REDACTED,
    ExecutionEvents,
    JSONLinesObserver,
    LeadershipEvents,
    event_as_json,
    twistd_log_destination,
)
from scheduler0.service import NodeService, Options


def captured() -> tuple[Logger, list[dict]]:
    events: list[dict] = []
    return Logger(namespace="test", observer=events.append), events


def record(**fields: Any) -> dict:
    base = {
        "execution_id": "e1",
        "job_uuid": "j1",
        "project_uuid": "p1",
        "scheduled_at": "2026-11-27T12:00:00.000Z",
        "state": "succeeded",
        "attempts": 1,
        "node_id": 2,
        "started_at": "2026-11-27T12:00:00.003Z",
        "finished_at": "2026-11-27T12:00:00.010Z",
        "status_code": 200,
        "error": None,
        "skip_reason": None,
    }
    base.update(fields)
    return base


class JSONFormatTests(SynchronousTestCase):
    """How one event becomes one JSON line."""

    def test_event_has_time_level_message_and_its_fields(self) -> None:
        """The message is formatted; the fields follow; Twisted's log_* keys do not."""
        log, events = captured()
        log.warn("job {job_uuid} moved to node {node}", job_uuid="j-1", node=3)
        out = event_as_json(events[0])
        self.assertEqual(out["level"], "warn")
        self.assertEqual(out["namespace"], "test")
        self.assertEqual(out["message"], "job j-1 moved to node 3")
        self.assertEqual((out["job_uuid"], out["node"]), ("j-1", 3))
        self.assertRegex(out["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertFalse([k for k in out if k.startswith("log_")])

    def test_secret_fields_are_redacted_in_fields_and_message(self) -> None:
        """A field named like a secret never shows its value, even inside the message."""
        log, events = captured()
        log.info(
            "made {api_key} with {api_secret}",
            api_key="k-1",
            api_secret="s3cret-value",
            body={"password": "hunter2", "name": "ok"},
        )
        line = json.dumps(event_as_json(events[0]))
        self.assertNotIn("s3cret-value", line)
        self.assertNotIn("hunter2", line)
        out = json.loads(line)
        self.assertEqual(out["api_secret"], REDACTED)
        self.assertEqual(out["body"], {"password": REDACTED, "name": "ok"})
        self.assertEqual(out["message"], f"made k-1 with {REDACTED}")

    def test_failure_carries_its_traceback(self) -> None:
        """log.failure events hold the traceback text under "failure"."""
        log, events = captured()
        try:
            raise ZeroDivisionError("boom")
        except ZeroDivisionError:
            log.failure("it broke", Failure())
        out = event_as_json(events[0])
        self.assertEqual(out["level"], "critical")
        self.assertIn("ZeroDivisionError", out["failure"])

    def test_values_json_cannot_hold_are_written_as_text(self) -> None:
        """An object field is written as its str(), so the line is still JSON."""
        log, events = captured()
        log.info("x {thing}", thing=ValueError("no good"), many={1, 2})
        out = json.loads(json.dumps(event_as_json(events[0])))
        self.assertEqual(out["thing"], "no good")
        self.assertEqual(sorted(out["many"]), [1, 2])

    def test_observer_writes_one_line_per_event(self) -> None:
        """Each event is one line of JSON, flushed as it is written."""
        out = io.StringIO()
        log = Logger(namespace="test", observer=JSONLinesObserver(out))
        log.info("one {n}", n=1)
        log.error("two\nlines {n}", n=2)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual([json.loads(line)["n"] for line in lines], [1, 2])
        self.assertEqual(json.loads(lines[1])["message"], "two\nlines 2")


class ExecutionEventTests(SynchronousTestCase):
    """One event per finished execution, with its ids."""

    def test_success_is_one_debug_event_with_the_ids(self) -> None:
        """A succeeded execution is a debug event carrying every id and its outcome."""
        log, events = captured()
        ExecutionEvents(log=log, level=LogLevel.debug)(record())
        self.assertEqual(len(events), 1)
        event = events[0]
        self.assertEqual(event["log_level"], LogLevel.debug)
        self.assertEqual(event["event"], "execution")
        for key in ("execution_id", "job_uuid", "project_uuid", "scheduled_at", "node_id"):
            self.assertEqual(event[key], record()[key])
        text = event_as_json(event)["message"]
        self.assertIn("execution e1 of job j1", text)
        self.assertIn("succeeded (HTTP 200, 1 attempt)", text)

    def test_failure_is_a_warning_with_the_error(self) -> None:
        """A failed execution is a warn event whose message says why."""
        log, events = captured()
        ExecutionEvents(log=log)(
            record(state="failed", status_code=None, error="connection refused", attempts=3)
        )
        self.assertEqual(events[0]["log_level"], LogLevel.warn)
        self.assertIn(
            "failed (connection refused, 3 attempts)", event_as_json(events[0])["message"]
        )

    def test_events_under_the_level_are_not_built(self) -> None:
        """
        At the default LogLevel (INFO), and at WARN, a success or a skip makes
        no event (one per execution would cost near what the execution does);
        a failure still does.
        """
        for level in (LogLevel.info, LogLevel.warn):
            log, events = captured()
            observe = ExecutionEvents(log=log, level=level)
            observe(record())
            observe(record(state="skipped", skip_reason="outside_catch_up_window"))
            self.assertEqual(events, [])
            observe(record(state="failed"))
            self.assertEqual(len(events), 1)

    def test_the_default_level_is_info(self) -> None:
        """ExecutionEvents' default level is the node's default LogLevel, INFO."""
        self.assertEqual(ExecutionEvents().level, LogLevel.info)


class LeadershipEventTests(SynchronousTestCase):
    """One event per change of role, term or leader."""

    def test_each_change_is_one_event_and_repeats_are_none(self) -> None:
        """Seeing the same leadership twice logs once; a new term logs again, with the old one."""
        log, events = captured()
        seen = LeadershipEvents(2, log=log)
        self.assertTrue(seen.observe("follower", 1, 1))
        self.assertFalse(seen.observe("follower", 1, 1))
        self.assertTrue(seen.observe("candidate", 2, None))
        self.assertTrue(seen.observe("leader", 2, 2))
        self.assertEqual(len(events), 3)
        last = events[-1]
        self.assertEqual(last["event"], "leadership")
        self.assertEqual(
            (last["node_id"], last["role"], last["term"], last["leader_id"]), (2, "leader", 2, 2)
        )
        self.assertEqual((last["previous_role"], last["previous_term"]), ("candidate", 2))
        self.assertEqual(
            event_as_json(events[0])["message"].split(" (")[0],
            "node 2 is follower in term 1; node 1 leads",
        )


class TwistdOptionTests(SynchronousTestCase):
    """--log-format on the twistd plugin."""

    def test_unknown_format_is_a_usage_error_naming_the_option(self) -> None:
        """--log-format xml is refused with a message naming --log-format."""
        options = Options()
        with open(self.mktemp(), "w") as f:
            f.write("NodeId: 1\n")
            path = f.name
        error = self.assertRaises(
            usage.UsageError, options.parseOptions, ["--config", path, "--log-format", "xml"]
        )
        self.assertIn("--log-format", str(error))

    def test_json_observer_becomes_the_applications_log_observer(self) -> None:
        """The node hands its JSON observer to the twistd application it joins."""
        observer = JSONLinesObserver(io.StringIO())
        node = NodeService(Config(), Clock(), log_observer=observer)
        application = Application("scheduler0")
        node.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), observer)

    def test_first_credential_banner_leaves_json_standard_output_alone(self) -> None:
        """With JSON logs the one-time credential goes to stderr, never to stdout."""
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "__stdout__", out)
        self.patch(sys, "__stderr__", err)

        class State:
            def count_credentials(self) -> Deferred:
                return succeed(0)

        class API:
            def create_credential(self) -> Deferred:
                return succeed({"api_key": "k-1", "api_secret": "s-1"})

        node = NodeService(Config(), Clock(), log_observer=JSONLinesObserver(out))
        self.successResultOf(Deferred.fromCoroutine(node._first_client_credential(API(), State())))
        self.assertEqual(out.getvalue(), "")
        self.assertIn("api_secret: s-1", err.getvalue())

    def test_destination_follows_twistd_logfile_options(self) -> None:
        """Foreground without --logfile (or with -) is stdout; otherwise the named file."""
        self.assertIs(twistd_log_destination({"nodaemon": True, "logfile": None}), sys.stdout)
        self.assertIs(twistd_log_destination({"nodaemon": True, "logfile": "-"}), sys.stdout)
        path = os.path.abspath(self.mktemp())
        f = twistd_log_destination({"nodaemon": True, "logfile": path})
        self.addCleanup(f.close)
        f.write("x\n")
        f.flush()
        with open(path) as written:
            self.assertEqual(written.read(), "x\n")


def json_lines(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class RealNodeJSONLogTests(TestCase):
    """A real node run with --log-format json."""

    timeout = 120

    async def test_every_line_is_json_and_each_execution_is_an_event(self) -> None:
        """
        Every line the node writes parses as JSON; at LogLevel DEBUG each
        finished execution is one event with its job's ids; no secret (the client's API secret, the
        peer password) appears anywhere in the log.
        """
        scene = await ok_and_failing_jobs(
            self,
            reactor,
            "JobExecutionRetryMax: 0\nLogLevel: DEBUG\n",
            plugin_args=("--log-format", "json"),
        )
        node, headers, jobs, project = scene.node, scene.headers, scene.jobs, scene.project_uuid
        log_path = os.path.join(node.workdir, "node-1.log")

        def finished() -> dict[str, dict] | None:
            found: dict[str, dict] = {}
            for event in json_lines(log_path):
                if event.get("event") == "execution":
                    found.setdefault(event["job_uuid"], event)
            return found if set(jobs.values()) <= set(found) else None

        found = await wait_for(reactor, finished, timeout=20, what="execution events")
        ok, failed = found[jobs["ok"]], found[jobs["fail"]]
        self.assertEqual((ok["state"], ok["status_code"], ok["level"]), ("succeeded", 200, "debug"))
        self.assertEqual(
            (failed["state"], failed["status_code"], failed["level"]), ("failed", 500, "warn")
        )
        self.assertEqual(ok["project_uuid"], project)
        self.assertTrue(ok["execution_id"] and ok["scheduled_at"])
        await node.stop()
        events = json_lines(log_path)  # raises if any line is not JSON
        self.assertTrue(all({"time", "level", "message"} <= set(e) for e in events))
        with open(log_path, encoding="utf-8") as f:
            text = f.read()
        self.assertNotIn(headers["x-secret-key"], text)
        self.assertNotIn(PEER_PASSWORD, text)


class ClusterLeadershipLogTests(TestCase):
    """Leadership changes in a real 3-node cluster's JSON logs."""

    timeout = 120

    async def test_a_new_leader_is_one_event_on_every_node(self) -> None:
        """
        After the leader is killed, the new leader logs that it leads the new
        term, and the other survivor logs that node as its leader: one
        leadership event each for that term.
        """
        cluster = Cluster(
            reactor, os.path.abspath(self.mktemp()), 3, plugin_args=("--log-format", "json")
        )
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        first = await cluster.wait_leader(30)
        await cluster.kill(first)
        survivors = [n for n in cluster.ids if n != first]
        second = await cluster.wait_leader(30, among=survivors)
        term = (await cluster.health(second))["term"]

        def log_of(node_id: int) -> list[dict]:
            node = cluster.node(node_id)
            return json_lines(os.path.join(node.workdir, f"node-{node.starts}.log"))

        def settled() -> bool:
            for node_id in survivors:
                events = [
                    e
                    for e in log_of(node_id)
                    if e.get("event") == "leadership"
                    and e["term"] == term
                    and e["leader_id"] == second
                ]
                if len(events) != 1:
                    return False
            return True

        await wait_for(reactor, settled, timeout=10, what="leadership events of the new term")
        # The event naming it leader of the term (under load its renewal timer
        # may first have seen it as a candidate in that term, also an event).
        mine = [
            e
            for e in log_of(second)
            if e.get("event") == "leadership" and e["term"] == term and e["leader_id"] == second
        ]
        self.assertEqual(mine[0]["role"], "leader")
        self.assertEqual(mine[0]["node_id"], second)
        other = next(n for n in survivors if n != second)
        theirs = [e for e in log_of(other) if e.get("event") == "leadership" and e["term"] == term]
        self.assertEqual((theirs[-1]["role"], theirs[-1]["node_id"]), ("follower", other))
