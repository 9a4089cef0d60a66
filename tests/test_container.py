"""
The container image, end to end with real podman: this checkout's
C{Containerfile} is built once per run of this module (from a local Debian
base, made with debootstrap when podman does not hold it yet), then node
containers on the host's network fire callbacks at a real receiver on the
host: one node alone, and a cluster of three whose leader is killed.

The tests need podman and root; without them they are skipped, naming the
cause. Every container, volume and image made here is removed afterwards.
"""

from __future__ import annotations

import atexit
import json
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from harness import containers
from harness.containers import (
    Podman,
    PodmanError,
    build_image,
    ensure_base_image,
    run_args,
    suffix,
    trial_run,
    unavailable_reason,
)
from harness.process import (
    PEER_PASSWORD,
    PEER_SECRET_KEY,
    PEER_USERNAME,
    free_port,
    http_client,
)
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for

#: The admin credentials every test container gets from its environment.
CREDENTIALS_ENV = {
    "SCHEDULER0_AUTH_USERNAME": PEER_USERNAME,
    "SCHEDULER0_AUTH_PASSWORD": PEER_PASSWORD,
    "SCHEDULER0_SECRET_KEY": PEER_SECRET_KEY,
}

# What this module's run built: the podman wrapper and the image tag, or why
# there is none. Built by the first test, removed when the process exits.
_built: dict[str, Any] = {}


def _image() -> tuple[Podman, str]:
    """The podman wrapper and the image built from this checkout (built on first use)."""
    if "skip" in _built:
        raise SkipTest(_built["skip"])
    if "image" in _built:
        return _built["podman"], _built["image"]
    try:
        podman: Podman | None = Podman.create()
    except PodmanError:
        podman = None
    reason = unavailable_reason(podman)
    if reason is None:
        assert podman is not None
        atexit.register(podman.close)
        ensure_base_image(podman)
        reason = trial_run(podman)
    if reason is not None:
        _built["skip"] = f"container tests skipped: {reason}"
        raise SkipTest(_built["skip"])
    assert podman is not None
    tag = f"localhost/scheduler0-test:{suffix()}"
    atexit.register(podman.run, "rmi", "--force", tag, check=False)
    build_image(podman, tag)
    _built.update(podman=podman, image=tag)
    return podman, tag


class ContainerTests(TestCase):
    # A cold build (about a minute) is part of the first test to run.
    timeout = 300

    def setUp(self) -> None:
        self.podman, self.image = _image()
        self.http = http_client(reactor)
        self.names: list[str] = []

    async def receiver(self) -> tuple[CallbackReceiver, int]:
        receiver = CallbackReceiver(reactor)
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        return receiver, port

    def start_node(self, name: str, env: dict[str, str], extra: tuple[str, ...] = ()) -> str:
        """Run a node container C{name} on a new volume of its own; return its URL."""
        volume = f"{name}-data"
        self.podman.run("volume", "create", volume)
        self.addCleanup(self.podman.run, "volume", "rm", "--force", volume, check=False)
        self.addCleanup(self.podman.run, "rm", "--force", "--time", "0", name, check=False)
        self.podman.run(*run_args(name, self.image, {**CREDENTIALS_ENV, **env}, volume, extra))
        self.names.append(name)
        return f"http://127.0.0.1:{env['SCHEDULER0_PORT']}"

    def logs(self) -> str:
        """The last lines each container of this test wrote, to explain a failure."""
        parts = []
        for name in self.names:
            done = self.podman.run("logs", "--tail", "30", name, check=False)
            parts.append(f"--- {name}:\n{(done.stdout + done.stderr).decode(errors='replace')}")
        return "\n".join(parts)

    async def until(self, probe: Any, what: str, timeout: float = 30) -> Any:
        """L{wait_for} that adds the containers' logs when it times out."""
        try:
            return await wait_for(reactor, probe, timeout=timeout, interval=0.2, what=what)
        except Exception as e:
            raise AssertionError(f"{e}\n{self.logs()}") from None

    async def health(self, url: str) -> dict | None:
        response = await self.http.get(url + "/healthcheck", timeout=1)
        body = json.loads(await response.content())
        data = body.get("data")
        return data if isinstance(data, dict) else None

    async def leader(self, urls: dict[int, str], timeout: float = 40) -> int:
        """Wait until every node of C{urls} names the same leader, which says so; return it."""

        async def agreed() -> int | None:
            answers = {node_id: await self.health(url) for node_id, url in urls.items()}
            leaders = {answer.get("leader_id") if answer else None for answer in answers.values()}
            if len(leaders) != 1:
                return None
            (leader,) = leaders
            said = answers.get(leader) if isinstance(leader, int) else None
            return leader if said and said.get("role") == "leader" else None

        return int(await self.until(agreed, f"one leader agreed by nodes {sorted(urls)}", timeout))

    async def fire_every_second(self, url: str, receiver_port: int) -> None:
        """Make a client credential (admin Basic auth), a project and an C{@every 1s} job."""
        response = await self.http.post(
            url + "/api/v1/credentials", auth=(PEER_USERNAME, PEER_PASSWORD), json={}
        )
        self.assertEqual(response.code, 201, await response.text())
        credential = (await response.json())["data"]
        headers = {"x-api-key": credential["api_key"], "x-secret-key": credential["api_secret"]}
        response = await self.http.post(
            url + "/api/v1/projects", json={"name": "container"}, headers=headers
        )
        self.assertEqual(response.code, 201, await response.text())
        project = (await response.json())["data"]["uuid"]
        response = await self.http.post(
            url + "/api/v1/jobs",
            json={
                "project_uuid": project,
                "name": "every second",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{receiver_port}/tick",
            },
            headers=headers,
        )
        self.assertEqual(response.code, 201, await response.text())

    async def test_one_node_fires_at_the_host(self) -> None:
        """
        One node container, configured only by environment variables, fires
        an C{@every 1s} job at a receiver on the host; it runs as uid 10001
        with a read-only root file system (as deploy/kubernetes runs it),
        keeps its data on its volume, and the image's health check passes.
        """
        receiver, receiver_port = await self.receiver()
        name = f"s0-test-{suffix()}"
        url = self.start_node(
            name,
            {
                "SCHEDULER0_HOST": "127.0.0.1",
                "SCHEDULER0_PORT": str(free_port()),
                "SCHEDULER0_RAFT_ADDRESS": f"127.0.0.1:{free_port()}",
            },
            extra=("--read-only",),
        )
        await self.until(lambda: self.health(url), "the node to answer /healthcheck")
        await self.fire_every_second(url, receiver_port)
        await self.until(lambda: len(receiver.arrivals) >= 3, "3 deliveries")

        out, err, code = await self.podman.run_async(reactor, "healthcheck", "run", name)
        self.assertEqual(code, 0, f"the image's HEALTHCHECK failed: {out}{err}")
        out, err, code = await self.podman.run_async(reactor, "exec", name, "id", "-u")
        self.assertEqual((out.strip(), code), ("10001", 0), err)
        out, err, code = await self.podman.run_async(
            reactor, "exec", name, "ls", "/var/lib/scheduler0/data"
        )
        self.assertIn("state.db", out.split(), err)

    async def test_three_nodes_survive_killing_the_leader(self) -> None:
        """
        Three node containers, each with its own volume and ports and its
        peers given by C{SCHEDULER0_REPLICAS}, elect a leader and fire an
        C{@every 1s} job; after C{podman kill} of the leader's container the
        other two elect a new one and the job keeps firing.
        """
        receiver, receiver_port = await self.receiver()
        ports = {node_id: (free_port(), free_port()) for node_id in (1, 2, 3)}
        replicas = ", ".join(
            f'{{Address: "http://127.0.0.1:{http}", RaftAddress: "127.0.0.1:{raft}", '
            f"NodeId: {node_id}}}"
            for node_id, (http, raft) in ports.items()
        )
        run = suffix()
        names = {node_id: f"s0-test-{run}-{node_id}" for node_id in ports}
        urls = {
            node_id: self.start_node(
                names[node_id],
                {
                    "SCHEDULER0_NODE_ID": str(node_id),
                    "SCHEDULER0_HOST": "127.0.0.1",
                    "SCHEDULER0_PORT": str(http),
                    "SCHEDULER0_RAFT_ADDRESS": f"127.0.0.1:{raft}",
                    "SCHEDULER0_BOOTSTRAP": "true",
                    "SCHEDULER0_REPLICAS": f"[{replicas}]",
                },
            )
            for node_id, (http, raft) in ports.items()
        }
        leader = await self.leader(urls)
        await self.fire_every_second(urls[leader], receiver_port)
        await self.until(lambda: len(receiver.arrivals) >= 3, "3 deliveries")

        out, err, code = await self.podman.run_async(reactor, "kill", names[leader])
        self.assertEqual(code, 0, err)
        survivors = {node_id: url for node_id, url in urls.items() if node_id != leader}
        new_leader = await self.leader(survivors)
        self.assertNotEqual(new_leader, leader)
        elected_at = reactor.seconds()
        await self.until(
            lambda: sum(1 for a in receiver.arrivals if a.at > elected_at) >= 3,
            "3 deliveries after the new leader was elected",
        )


class SkipReasonTests(SynchronousTestCase):
    """Why the container tests would be skipped is named (these run everywhere)."""

    def test_without_podman(self) -> None:
        self.assertIn("podman is not installed", unavailable_reason(None) or "")

    def test_not_root(self) -> None:
        self.patch(containers.os, "geteuid", lambda: 1000)
        podman = Podman("/usr/bin/podman", self.mktemp())
        self.assertIn("not root", unavailable_reason(podman) or "")
