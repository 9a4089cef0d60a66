"""
Issue 19 end to end, with real parts: real C{twistd scheduler0} processes
on 127.0.0.1 with real SQLite files, the real CLI, and a real HTTP receiver
of the callbacks. One node: a project pause stops its deliveries and a
resume restarts them (each job's own flag kept); a read credential made
with the CLI lists but its writes answer 403 naming the scope; the audit
log (through the CLI) says who did what through which node. A cluster: a
write through a follower is audited naming that follower on every node,
and a project pause holds on whichever nodes own its jobs.
"""

from __future__ import annotations

import json
import os
from base64 import b64encode
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from harness.cluster import Cluster
from harness.process import (
    PEER_PASSWORD,
    PEER_USERNAME,
    client_headers,
    http_client,
    prepare_single_node,
    run_cli,
)
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from scheduler0.timeutil import parse_instant

ADMIN = {
    "Authorization": "Basic " + b64encode(f"{PEER_USERNAME}:{PEER_PASSWORD}".encode()).decode()
}


def slots_of(receiver: CallbackReceiver, job_uuid: str) -> list[float]:
    return sorted(
        parse_instant(a.item["scheduled_at"]).timestamp()
        for a in receiver.arrivals
        if a.item["job_uuid"] == job_uuid
    )


class AccessEndToEndTests(TestCase):
    timeout = 150

    async def call(self, method: str, url: str, headers: dict, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": headers, "timeout": 10}
        if body is not None:
            kwargs["json"] = body
        response = await self.http.request(method, url, **kwargs)
        return response.code, await response.json()

    async def test_pause_scopes_and_audit_on_one_node(self) -> None:
        """
        Pausing a project stops its jobs' deliveries (another project's go
        on) and resuming restarts exactly its active jobs, owing nothing of
        the pause; a read credential from the CLI lists but a write answers
        403 naming its scope; C{scheduler0 audit} shows each write's actor
        and node.
        """
        self.http = http_client(reactor)
        receiver = CallbackReceiver(reactor)
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(node.kill)
        await node.start()
        headers = await client_headers(node)
        callback = f"http://127.0.0.1:{port}/callback"

        projects = {}
        for name in ("paused", "other"):
            code, body = await self.call("POST", node.url + "/projects", headers, {"name": name})
            self.assertEqual(code, 201, body)
            projects[name] = body["data"]["uuid"]
        jobs = {}
        for name, project, paused in (
            ("active", "paused", False),
            ("own-flag", "paused", True),
            ("elsewhere", "other", False),
        ):
            code, body = await self.call(
                "POST",
                node.url + "/jobs",
                headers,
                {
                    "project_uuid": projects[project],
                    "name": name,
                    "spec": "@every 1s",
                    "callback_url": callback,
                    "paused": paused,
                },
            )
            self.assertEqual(code, 201, body)
            jobs[name] = body["data"]["uuid"]
        await receiver.wait_until(lambda: len(slots_of(receiver, jobs["active"])) >= 2)

        project_url = node.url + f"/projects/{projects['paused']}"
        code, body = await self.call("PATCH", project_url, headers, {"paused": True})
        self.assertEqual((code, body["data"]["paused"]), (200, True))
        paused_at = reactor.seconds()
        others = len(slots_of(receiver, jobs["elsewhere"]))
        await receiver.wait_until(lambda: len(slots_of(receiver, jobs["elsewhere"])) >= others + 4)
        self.assertFalse([s for s in slots_of(receiver, jobs["active"]) if s > paused_at + 0.5])

        code, body = await self.call("PATCH", project_url, headers, {"paused": False})
        self.assertEqual((code, body["data"]["paused"]), (200, False))
        resumed_at = reactor.seconds()
        await receiver.wait_until(
            lambda: any(s > resumed_at for s in slots_of(receiver, jobs["active"]))
        )
        during = [
            s for s in slots_of(receiver, jobs["active"]) if paused_at + 0.5 < s < resumed_at - 0.5
        ]
        self.assertEqual(during, [], "a slot of the pause was caught up")
        self.assertEqual(slots_of(receiver, jobs["own-flag"]), [])
        code, body = await self.call("GET", node.url + f"/jobs/{jobs['own-flag']}", headers)
        self.assertIs(body["data"]["paused"], True)

        # A read credential of one project, made with the CLI.
        out, err, code = await run_cli(
            node.workdir,
            "credentials",
            "create",
            "--project",
            projects["other"],
            "--role",
            "read",
            "--json",
            "--config",
            node.config_path,
        )
        self.assertEqual(code, 0, err)
        reader = json.loads(out)
        self.assertEqual((reader["projects"], reader["role"]), ([projects["other"]], "read"))
        read_headers = {"x-api-key": reader["api_key"], "x-secret-key": reader["api_secret"]}
        code, body = await self.call("GET", node.url + "/jobs", read_headers)
        self.assertEqual(code, 200, body)
        self.assertEqual([j["uuid"] for j in body["data"]["items"]], [jobs["elsewhere"]])
        code, body = await self.call(
            "PATCH", node.url + f"/jobs/{jobs['elsewhere']}", read_headers, {"name": "x"}
        )
        self.assertEqual((code, body["error"]["code"]), (403, "forbidden"))
        self.assertIn(
            f"may read projects {projects['other']} (role read)", body["error"]["message"]
        )

        out, err, code = await run_cli(
            node.workdir, "audit", "--op", "update_project", "--json", "--config", node.config_path
        )
        self.assertEqual(code, 0, err)
        records = json.loads(out)
        self.assertEqual(len(records), 2)
        for record in records:
            self.assertEqual(record["object_uuid"], projects["paused"])
            self.assertEqual((record["via"], record["outcome"]), (1, "applied"))
            self.assertNotIn(record["actor"], ("admin", None))
        out, err, code = await run_cli(
            node.workdir, "audit", "--actor", "admin", "--json", "--config", node.config_path
        )
        self.assertEqual(code, 0, err)
        # The credential of `scheduler0 create credential` and the read one.
        self.assertEqual([r["op"] for r in json.loads(out)], ["create_credential"] * 2)
        # The refused write proposed nothing: it is not in the log.
        code, body = await self.call("GET", node.url + f"/audit?object={jobs['elsewhere']}", ADMIN)
        self.assertEqual([r["op"] for r in body["data"]["items"]], ["create_jobs"])


class AccessClusterTests(TestCase):
    timeout = 180

    async def test_audit_through_a_follower_and_pause_across_owners(self) -> None:
        """
        A write made through a follower is audited naming that follower,
        and every node answers the same record; pausing a project whose
        jobs are spread over the members stops every delivery of them, and
        resuming starts them again.
        """
        http = http_client(reactor)
        receiver = CallbackReceiver(reactor)
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), 3)
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        leader = await cluster.wait_leader(30)
        headers = await cluster.make_headers()
        follower = next(n for n in cluster.ids if n != leader)

        def url(node_id: int, path: str) -> str:
            return f"http://127.0.0.1:{cluster.addresses[node_id].http_port}{path}"

        async def call(method: str, node_id: int, path: str, **kwargs: Any) -> tuple[int, Any]:
            kwargs.setdefault("headers", headers)
            response = await http.request(method, url(node_id, path), timeout=10, **kwargs)
            return response.code, await response.json()

        code, body = await call("POST", follower, "/projects", json={"name": "spread"})
        self.assertEqual(code, 201, body)
        project = body["data"]["uuid"]
        jobs = [
            {
                "project_uuid": project,
                "name": f"job {n}",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{port}/callback",
            }
            for n in range(6)
        ]
        code, body = await call("POST", follower, "/jobs", json=jobs)
        self.assertEqual(code, 201, body)
        uuids = {job["uuid"] for job in body["data"]}

        def fired_jobs(after: float) -> set[str]:
            return {
                a.item["job_uuid"]
                for a in receiver.arrivals
                if parse_instant(a.item["scheduled_at"]).timestamp() > after
            }

        await wait_for(reactor, lambda: fired_jobs(0) >= uuids or None, timeout=30, what="all fire")
        owners = {a.item["node_id"] for a in receiver.arrivals if "node_id" in a.item}

        code, body = await call("PATCH", follower, f"/projects/{project}", json={"paused": True})
        self.assertEqual(code, 200, body)
        paused_at = reactor.seconds()
        settle = paused_at + 3
        await wait_for(
            reactor, lambda: reactor.seconds() >= settle or None, timeout=5, what="pause"
        )
        self.assertEqual(fired_jobs(paused_at + 0.5), set(), f"owners {owners}")

        code, body = await call("PATCH", leader, f"/projects/{project}", json={"paused": False})
        self.assertEqual(code, 200, body)
        resumed_at = reactor.seconds()
        await wait_for(
            reactor, lambda: fired_jobs(resumed_at) >= uuids or None, timeout=30, what="resume"
        )

        admin = {"Authorization": ADMIN["Authorization"]}
        for node_id in cluster.ids:
            code, body = await call(
                "GET", node_id, f"/audit?object={project}&op=create_project", headers=admin
            )
            self.assertEqual(code, 200, body)
            (record,) = body["data"]["items"]
            self.assertEqual((record["via"], record["route"]), (follower, "/projects"))
            code, body = await call("GET", node_id, "/audit?op=update_project", headers=admin)
            self.assertEqual(
                [r["via"] for r in body["data"]["items"]], [leader, follower], f"node {node_id}"
            )
