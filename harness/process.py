"""
Run a real Scheduler0 node as a child C{twistd} process: start it, wait
until its health check answers, signal it, restart it on the same data.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from harness.waiting import wait_for

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = "from twisted.scripts.twistd import run; run()"


def http_client(reactor: Any) -> Any:
    """A treq client that keeps no connections open (tests end with a clean reactor)."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(part) for part in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now, chosen below
    the kernel's ephemeral range.

    A port the kernel picks for C{bind(0)} comes from the same range as the
    source ports of outgoing connections, so between being chosen and being
    listened on by a child process it can be taken by any connection this
    machine opens (a node dialling a peer, a proxy dialling a node).  Ports
    below that range are never given out as source ports.  Each port is
    handed out once per process, and chosen at random so that test processes
    running side by side rarely try the same one.
    """
    import random
    import socket

    low, _high = _ephemeral_range()
    top = low - 1 if low > 12000 else 65535
    bottom = 10000 if low > 12000 else 61000
    for _ in range(1000):
        port = random.randint(bottom, top)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free TCP port found between {bottom} and {top}")


class _Watch(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred = Deferred()
        self.output = bytearray()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)


@attrs.define(eq=False)
class NodeProcess:
    """One node: C{twistd -n scheduler0 --config CONFIG} run in C{workdir}."""

    reactor: Any
    workdir: str
    config_path: str
    http_port: int
    env: dict[str, str] = attrs.field(factory=dict)
    twistd_args: tuple[str, ...] = ()
    # Options of the scheduler0 plugin itself (after --config), e.g. --log-format.
    plugin_args: tuple[str, ...] = ()
    # The python that runs twistd. None: this one, with this checkout first
    # on its path; else one with a release installed (harness.release),
    # run with no PYTHONPATH so that it runs that release only.
    python: str | None = None
    _watch: _Watch | None = None
    _transport: Any = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        """The running node process's id (None before it is spawned)."""
        return getattr(self._transport, "pid", None)

    @property
    def output(self) -> str:
        return bytes(self._watch.output).decode("utf-8", "replace") if self._watch else ""

    def spawn(self) -> None:
        self.starts += 1
        self._watch = _Watch()
        env = dict(os.environ)
        if self.python is None:
            env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        else:
            env.pop("PYTHONPATH", None)
        env.update(self.env)
        python = self.python or sys.executable
        log_path = os.path.join(self.workdir, f"node-{self.starts}.log")
        argv = [
            python,
            "-c",
            TWISTD,
            "--nodaemon",
            "--pidfile=",
            f"--logfile={log_path}",
            *self.twistd_args,
            "scheduler0",
            "--config",
            self.config_path,
            *self.plugin_args,
        ]
        self._transport = self.reactor.spawnProcess(
            self._watch, python, argv, env=env, path=self.workdir
        )

    async def start(self, timeout: float = 30.0) -> dict:
        """Spawn the node and wait until its health check answers."""
        self.spawn()
        return await self.wait_healthy(timeout)

    async def wait_healthy(self, timeout: float = 30.0) -> dict:
        """
        Wait until the node's health check answers, and return its data: 200
        (ready) or 503 (up, not ready: a node paused by its resource guard,
        say, or a cluster member without a quorum yet).
        """

        async def probe() -> dict | None:
            if self._watch is not None and self._watch.ended.called:
                raise RuntimeError(f"node exited during start-up:\n{self.output}")
            response = await http_client(self.reactor).get(self.url + "/healthcheck", timeout=2)
            body = await response.content()
            if response.code not in (200, 503):
                return None
            data = json.loads(body).get("data")
            return data if isinstance(data, dict) else None

        return await wait_for(
            self.reactor, probe, timeout=timeout, what=f"node at {self.url} to be healthy"
        )

    def signal(self, signum: int) -> None:
        self._transport.signalProcess(signum)

    async def kill(self) -> None:
        """SIGKILL the node and wait until it is gone."""
        if self._watch is None or self._watch.ended.called:
            return
        os.kill(self._transport.pid, signal.SIGKILL)
        await self._watch.ended

    async def exited(self) -> Any:
        """Wait until the process has ended by itself; return how it ended."""
        assert self._watch is not None, "the node was never spawned"
        return await self._watch.ended

    async def stop(self) -> Any:
        """SIGTERM the node, wait until it has shut down, and return how it ended."""
        if self._watch is None or self._watch.ended.called:
            return None
        self._transport.signalProcess("TERM")
        return await self._watch.ended


async def run_cli(workdir: str, *args: str) -> tuple[str, str, int]:
    """Run the C{scheduler0} CLI as a new process; return (stdout, stderr, exit code)."""
    from twisted.internet.utils import getProcessOutputAndValue

    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out, err, code = await getProcessOutputAndValue(
        sys.executable, ["-m", "scheduler0", *args], env=env, path=workdir
    )
    return out.decode(), err.decode(), code


async def prepare_single_node(reactor: Any, workdir: str, extra_config: str = "") -> NodeProcess:
    """
    Write a single-node config with free ports into C{workdir}, create its
    peer credentials with the CLI, and return the (not yet started) node.
    """
    os.makedirs(workdir, exist_ok=True)
    http_port = free_port()
    config_path = os.path.join(workdir, "config.yml")
    with open(config_path, "w") as f:
        f.write(
            "NodeId: 1\n"
            f"Port: {http_port}\n"
            f"RaftAddress: 127.0.0.1:{free_port()}\n"
            "DataDir: data\n" + extra_config
        )
    await init_peer_credentials(workdir, config_path)
    return NodeProcess(reactor, workdir, config_path, http_port)


# The peer credentials every test node gets (the nodes of one cluster must share them).
PEER_USERNAME = "admin"
PEER_PASSWORD = "admin-password"
PEER_SECRET_KEY = "peer-secret"


async def init_peer_credentials(workdir: str, config_path: str) -> None:
    """Run C{scheduler0 credential init} with the test peer credentials beside C{config_path}."""
    out, err, code = await run_cli(
        workdir,
        "credential",
        "init",
        "--config",
        config_path,
        "--username",
        PEER_USERNAME,
        "--password",
        PEER_PASSWORD,
        "--secret-key",
        PEER_SECRET_KEY,
    )
    if code:
        raise RuntimeError(f"credential init for {config_path} failed ({code}): {err}{out}")


async def client_headers(node: NodeProcess) -> dict[str, str]:
    """Make a client credential with C{scheduler0 create credential}; return its headers."""
    out, err, code = await run_cli(
        node.workdir, "create", "credential", "--json", "--config", node.config_path
    )
    if code:
        raise RuntimeError(f"create credential failed: {err}")
    credential = json.loads(out)
    return {"x-api-key": credential["api_key"], "x-secret-key": credential["api_secret"]}


@attrs.define(eq=False)
class OkAndFailingJobs:
    """A running node with two C{@every 1s} jobs: C{/ok} answered 200, C{/fail} 500."""

    node: NodeProcess
    headers: dict[str, str]
    receiver: Any
    project_uuid: str
    jobs: dict[str, str]  # "ok" / "fail" -> job uuid


async def ok_and_failing_jobs(
    case: Any, reactor: Any, extra_config: str = "", retry_max: int = 0, plugin_args: tuple = ()
) -> OkAndFailingJobs:
    """
    Start a node (its config plus C{extra_config}) and a receiver, both
    stopped by C{case}'s cleanups, and give the node a job whose callbacks
    succeed and one whose callbacks fail, each with C{retry_max}.
    """
    from harness.receiver import CallbackReceiver

    receiver = CallbackReceiver(reactor, status_for=lambda p: 500 if p == "/fail" else 200)
    port = await receiver.listen(reactor)
    case.addCleanup(receiver.stop)
    node = await prepare_single_node(reactor, os.path.abspath(case.mktemp()), extra_config)
    node.plugin_args = tuple(plugin_args)
    case.addCleanup(node.kill)
    await node.start()
    headers = await client_headers(node)
    http = http_client(reactor)
    response = await http.post(
        node.url + "/projects",
        json={"name": "two jobs", "description": "ok, fail"},
        headers=headers,
    )
    project = (await response.json())["data"]["uuid"]
    response = await http.post(
        node.url + "/jobs",
        json=[
            {
                "project_uuid": project,
                "name": name,
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{port}/{name}",
                "retry_max": retry_max,
            }
            for name in ("ok", "fail")
        ],
        headers=headers,
    )
    if response.code != 201:
        raise RuntimeError(f"creating the jobs answered {response.code}: {await response.text()}")
    jobs = {job["name"]: job["uuid"] for job in (await response.json())["data"]}
    return OkAndFailingJobs(node, headers, receiver, project, jobs)
