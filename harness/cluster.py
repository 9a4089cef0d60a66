"""
Run an N-node Scheduler0 cluster of real C{twistd} processes on 127.0.0.1
for fault-injection tests.

Every link from node i to node j, Raft and peer HTTP alike, passes through
its own L{TCPProxy}: node i's config lists node j at the proxies' ports, so
cutting those two proxies partitions i from j in that direction. Test
clients talk to each node's real HTTP port directly.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs
import yaml
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, gatherResults

from harness.process import (
    NodeProcess,
    client_headers,
    free_port,
    http_client,
    init_peer_credentials,
)
from harness.tcpproxy import TCPProxy
from harness.waiting import wait_for

#: The peer credentials every node of a harness cluster shares.

LOG_TAIL_LINES = 40


@attrs.frozen
class Link:
    """The two proxies that carry everything node C{source} dials to node C{target}."""

    source: int
    target: int
    raft: TCPProxy
    http: TCPProxy

    @property
    def proxies(self) -> tuple[TCPProxy, TCPProxy]:
        return (self.raft, self.http)


@attrs.frozen
class NodeAddresses:
    """Where node C{node_id} really listens."""

    node_id: int
    http_port: int
    raft_port: int

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def raft_address(self) -> str:
        return f"127.0.0.1:{self.raft_port}"


def tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last C{lines} lines of a text file, or a note that it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})\n"


def _distinct_free_ports(count: int) -> list[int]:
    """C{count} different ports that nothing listens on right now."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@attrs.define(eq=False)
class Cluster:
    """
    A cluster of C{size} real nodes under C{base_dir}/node-<i>, 1-based ids.

    C{bootstrap} is "all" (every node has C{Bootstrap: true} and the full
    Replicas list) or "first" (only node 1 has C{Bootstrap: true}).
    C{extra_config} is YAML appended to every node's config and
    C{node_config} maps a node id to YAML appended to that node's only (and
    C{node_env} to environment variables for that node's process); keys
    the harness writes (NodeId, Host, Port, RaftAddress, Bootstrap, DataDir,
    Replicas) must not be repeated there. With C{direct} no proxy is made:
    every node lists the others at their real ports (for benchmarks, where a
    proxy would distort the figures), and the fault methods raise.
    """

    reactor: Any
    base_dir: str
    size: int = 3
    extra_config: str = ""
    bootstrap: Literal["all", "first"] = "all"
    node_config: Mapping[int, str] = attrs.field(factory=dict)
    env: Mapping[str, str] = attrs.field(factory=dict)
    # Environment variables of one node only, on top of env (e.g. libfaketime's).
    node_env: Mapping[int, Mapping[str, str]] = attrs.field(factory=dict)
    # Options every node's scheduler0 plugin gets (e.g. ("--log-format", "json")).
    plugin_args: tuple[str, ...] = ()
    direct: bool = False
    nodes: list[NodeProcess] = attrs.field(factory=list)
    addresses: dict[int, NodeAddresses] = attrs.field(factory=dict)
    links: dict[tuple[int, int], Link] = attrs.field(factory=dict)
    headers: dict[str, str] | None = None
    paused: set[int] = attrs.field(factory=set)
    _prepared: bool = False

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size: invalid value {self.size!r}; expected an integer >= 1")
        if self.bootstrap not in ("all", "first"):
            raise ValueError(
                f"bootstrap: invalid value {self.bootstrap!r}; expected 'all' or 'first'"
            )
        for name, given in (("node_config", self.node_config), ("node_env", self.node_env)):
            unknown = sorted(set(given) - set(self.ids))
            if unknown:
                raise ValueError(f"{name}: unknown node ids {unknown}; nodes are 1..{self.size}")

    # -- layout ---------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        return list(range(1, self.size + 1))

    def node(self, node_id: int) -> NodeProcess:
        """The process of node C{node_id} (1-based)."""
        self._check_id(node_id)
        return self.nodes[node_id - 1]

    def link(self, source: int, target: int) -> Link:
        """The proxies for everything node C{source} dials to node C{target}."""
        self._require_proxies("link")
        self._check_id(source)
        self._check_id(target)
        if source == target:
            raise ValueError(f"link: a node has no link to itself (node {source})")
        return self.links[(source, target)]

    def workdir(self, node_id: int) -> str:
        return os.path.join(os.path.abspath(self.base_dir), f"node-{node_id}")

    def config_path(self, node_id: int) -> str:
        return os.path.join(self.workdir(node_id), "config.yml")

    def _require_proxies(self, what: str) -> None:
        if self.direct:
            raise RuntimeError(
                f"{what}: this cluster was made with direct=True, so its links have no proxy "
                "to cut, drop or delay; make it with direct=False for fault injection"
            )

    def _check_id(self, node_id: int) -> None:
        if node_id not in self.ids:
            raise ValueError(f"node id: invalid value {node_id!r}; nodes are 1..{self.size}")

    def render_config(self, node_id: int) -> str:
        """The YAML config of node C{node_id}: its own ports, peers via the proxies."""
        own = self.addresses[node_id]
        replicas: list[dict[str, Any]] = []
        for other in self.ids:
            if other == node_id or self.direct:
                real = self.addresses[other]
                replicas.append(
                    {"Address": real.address, "RaftAddress": real.raft_address, "NodeId": other}
                )
            else:
                link = self.links[(node_id, other)]
                replicas.append(
                    {
                        "Address": f"http://127.0.0.1:{link.http.port}",
                        "RaftAddress": f"127.0.0.1:{link.raft.port}",
                        "NodeId": other,
                    }
                )
        document = {
            "NodeId": node_id,
            "Protocol": "http",
            "Host": "127.0.0.1",
            "Port": own.http_port,
            "RaftAddress": own.raft_address,
            "Bootstrap": self.bootstrap == "all" or node_id == 1,
            "DataDir": "data",
            "Replicas": replicas,
        }
        text = yaml.safe_dump(document, sort_keys=False)
        for extra in (self.extra_config, self.node_config.get(node_id, "")):
            if extra:
                text += extra if extra.endswith("\n") else extra + "\n"
        return text

    # -- life cycle -----------------------------------------------------

    async def prepare(self) -> None:
        """Pick ports, start every proxy, write every config and peer credential."""
        if self._prepared:
            raise RuntimeError("Cluster.prepare: already prepared")
        self._prepared = True
        ports = _distinct_free_ports(2 * self.size)
        for index, node_id in enumerate(self.ids):
            self.addresses[node_id] = NodeAddresses(node_id, ports[2 * index], ports[2 * index + 1])
        for source in self.ids:
            for target in self.ids:
                if source == target or self.direct:
                    continue
                real = self.addresses[target]
                link = Link(
                    source,
                    target,
                    raft=TCPProxy(self.reactor, "127.0.0.1", real.raft_port),
                    http=TCPProxy(self.reactor, "127.0.0.1", real.http_port),
                )
                self.links[(source, target)] = link
                for proxy in link.proxies:
                    await proxy.start()
        for node_id in self.ids:
            os.makedirs(self.workdir(node_id), exist_ok=True)
            with open(self.config_path(node_id), "w", encoding="utf-8") as f:
                f.write(self.render_config(node_id))
            self.nodes.append(
                NodeProcess(
                    self.reactor,
                    self.workdir(node_id),
                    self.config_path(node_id),
                    self.addresses[node_id].http_port,
                    env={**self.env, **self.node_env.get(node_id, {})},
                    plugin_args=self.plugin_args,
                )
            )
        await gatherResults(
            [Deferred.fromCoroutine(self._credential_init(n)) for n in self.ids],
            consumeErrors=True,
        )

    async def _credential_init(self, node_id: int) -> None:
        await init_peer_credentials(self.workdir(node_id), self.config_path(node_id))

    async def start(self, timeout: float = 30.0, ids: Iterable[int] | None = None) -> None:
        """Spawn every node (or C{ids}), then wait until each one's health check answers."""
        chosen = list(self.ids if ids is None else ids)
        for node_id in chosen:
            self._check_id(node_id)
            if self.is_running(node_id):
                raise RuntimeError(f"Cluster.start: node {node_id} is already running")
        for node_id in chosen:
            self.node(node_id).spawn()
            self.paused.discard(node_id)
        await self._wait_healthy(chosen, timeout)

    async def _wait_healthy(self, ids: list[int], timeout: float) -> None:
        async def probe() -> bool | _NodeExited:
            for node_id in ids:
                if not self.is_running(node_id):
                    return _NodeExited(node_id)  # truthy: stop waiting, report below
            answers = await gatherResults(
                [Deferred.fromCoroutine(self.health(node_id)) for node_id in ids]
            )
            return all(answer is not None for answer in answers)

        try:
            result = await wait_for(
                self.reactor, probe, timeout=timeout, what=f"nodes {ids} to answer /healthcheck"
            )
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.logs()}") from None
        if isinstance(result, _NodeExited):
            raise RuntimeError(f"node {result.node_id} exited during start-up\n{self.logs()}")

    def is_running(self, node_id: int) -> bool:
        """Whether node C{node_id}'s process was spawned and has not ended (paused counts)."""
        watch = getattr(self.node(node_id), "_watch", None)
        return watch is not None and not watch.ended.called

    async def kill(self, node_id: int) -> None:
        """SIGKILL node C{node_id} and wait until it is gone."""
        await self.node(node_id).kill()
        self.paused.discard(node_id)

    async def stop(self, node_id: int) -> Any:
        """SIGTERM node C{node_id}, wait until it has shut down; return how it ended."""
        if node_id in self.paused:
            self.resume(node_id)
        return await self.node(node_id).stop()

    def pause(self, node_id: int) -> None:
        """SIGSTOP node C{node_id}: it keeps its sockets but answers nothing."""
        self.node(node_id).signal(signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        """SIGCONT a node paused with L{pause}."""
        self.node(node_id).signal(signal.SIGCONT)
        self.paused.discard(node_id)

    async def restart(self, node_id: int, timeout: float = 30.0) -> None:
        """Kill node C{node_id} if it runs, start it again on the same data, wait until healthy."""
        await self.kill(node_id)
        await self.start(timeout, ids=[node_id])

    async def stop_all(self) -> None:
        """SIGTERM every running node and wait for all of them to end."""
        running = [n for n in self.ids if self.is_running(n)]
        await DeferredList([Deferred.fromCoroutine(self.stop(n)) for n in running])

    async def close(self) -> None:
        """Kill every node still running and stop every proxy (for test cleanup)."""
        for node_id in list(self.paused):
            if self.is_running(node_id):
                self.resume(node_id)
        await DeferredList(
            [Deferred.fromCoroutine(self.kill(n)) for n in self.ids[: len(self.nodes)]]
        )
        await DeferredList(
            [Deferred.fromCoroutine(p.stop()) for link in self.links.values() for p in link.proxies]
        )

    # -- faults ---------------------------------------------------------

    def cut(self, source: int, target: int) -> None:
        """Cut everything node C{source} dials to node C{target} (Raft and HTTP)."""
        self._require_proxies("cut")
        for proxy in self.link(source, target).proxies:
            proxy.cut()

    def isolate(self, node_id: int) -> None:
        """Cut every link to and from node C{node_id}."""
        self._require_proxies("isolate")
        self._check_id(node_id)
        for other in self.ids:
            if other != node_id:
                self.cut(node_id, other)
                self.cut(other, node_id)

    def partition(self, *groups: Iterable[int]) -> None:
        """
        Cut every link between nodes of different groups, both ways; nodes in
        no group are cut off from everyone. Links inside a group are left alone.
        """
        self._require_proxies("partition")
        group_of: dict[int, int] = {}
        for index, group in enumerate(groups):
            for node_id in group:
                self._check_id(node_id)
                if node_id in group_of:
                    raise ValueError(f"partition: node {node_id} is in more than one group")
                group_of[node_id] = index
        for source, target in self.links:
            if (
                source not in group_of
                or target not in group_of
                or group_of[source] != group_of[target]
            ):
                self.cut(source, target)

    def heal(self) -> None:
        """Undo every fault on every link."""
        self._require_proxies("heal")
        for link in self.links.values():
            for proxy in link.proxies:
                proxy.heal()

    # -- observation ----------------------------------------------------

    async def health(self, node_id: int, timeout: float = 2.0) -> dict | None:
        """
        Node C{node_id}'s parsed C{/healthcheck} data, ready or not, or None
        when it does not answer.
        """
        answer = await self.health_answer(node_id, timeout)
        return answer[1] if answer is not None else None

    async def health_answer(self, node_id: int, timeout: float = 2.0) -> tuple[int, dict] | None:
        """
        Node C{node_id}'s C{/healthcheck} status (200: ready, 503: not ready)
        and data, or None when it does not answer with them.
        """
        url = self.addresses[node_id].address + "/healthcheck"
        try:
            response = await http_client(self.reactor).get(url, timeout=timeout)
            body = await response.content()
            if response.code not in (200, 503):
                return None
            data = json.loads(body)["data"]
        except Exception:
            return None
        return (response.code, data) if isinstance(data, dict) else None

    async def wait_leader(self, timeout: float = 30.0, among: Iterable[int] | None = None) -> int:
        """
        Wait until the nodes of C{among} (default: every running, unpaused
        node) all answer, all report the same C{leader_id} and term, and that
        leader is one of them reporting role "leader"; return its id.
        """
        fixed = None if among is None else list(among)
        for node_id in fixed or ():
            self._check_id(node_id)
        last: dict[int, dict | None] = {}

        async def probe() -> int | None:
            ids = (
                fixed
                if fixed is not None
                else [n for n in self.ids if self.is_running(n) and n not in self.paused]
            )
            if not ids:
                return None
            answers = await gatherResults(
                [Deferred.fromCoroutine(self.health(n, timeout=1.0)) for n in ids]
            )
            last.clear()
            last.update(zip(ids, answers, strict=False))
            if any(answer is None for answer in answers):
                return None
            leaders: set[Any] = {a.get("leader_id") for a in answers if a is not None}
            terms = {a.get("term") for a in answers if a is not None}
            if len(leaders) != 1 or len(terms) != 1:
                return None
            (leader,) = leaders
            leader_health = last.get(leader)
            if leader not in ids or not leader_health or leader_health.get("role") != "leader":
                return None
            return int(leader)

        try:
            return await wait_for(
                self.reactor,
                probe,
                timeout=timeout,
                interval=0.1,
                what=f"one leader agreed by nodes {fixed or 'running'}",
            )
        except TimeoutError as e:
            seen = {
                n: None if a is None else {k: a.get(k) for k in ("role", "leader_id", "term")}
                for n, a in last.items()
            }
            raise TimeoutError(f"{e}\nlast health: {seen}\n{self.logs()}") from None

    async def make_headers(self, timeout: float = 30.0) -> dict[str, str]:
        """Create a client credential on the leader; keep and return its headers."""
        leader = await self.wait_leader(timeout)
        self.headers = await client_headers(self.node(leader))
        return self.headers

    def logs(self, lines: int = LOG_TAIL_LINES) -> str:
        """The tail of every node's current log and process output, for failure messages."""
        parts = []
        for node_id, node in zip(self.ids, self.nodes, strict=False):
            state = "running" if self.is_running(node_id) else "not running"
            if node_id in self.paused:
                state = "paused"
            parts.append(f"----- node {node_id} ({state}) -----")
            if node.starts:
                parts.append(tail(os.path.join(node.workdir, f"node-{node.starts}.log"), lines))
            output = node.output.strip()
            if output:
                parts.append("stdout/stderr:\n" + "\n".join(output.splitlines()[-lines:]))
        return "\n".join(parts)


@attrs.frozen
class _NodeExited:
    """A node ended while the harness waited for it to come up."""

    node_id: int
