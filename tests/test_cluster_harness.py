"""
The multi-node test harness, checked without needing a working multi-node
cluster: the configs it writes, the proxy wiring, the fault helpers, and a
one-node cluster of a real C{twistd} process.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from harness.cluster import Cluster
from harness.waiting import wait_for
from scheduler0.config import load_config


class _Sink(Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class PreparedClusterTests(TestCase):
    """A prepared (never started) three-node cluster."""

    timeout = 60

    async def prepared(self, **kwargs: Any) -> Cluster:
        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), size=3, **kwargs)
        self.addCleanup(lambda: Deferred.fromCoroutine(cluster.close()))
        await cluster.prepare()
        return cluster

    async def test_configs_load_and_route_peers_through_proxies(self) -> None:
        """
        Every node's config loads without error or warning; its own Replicas
        entry has its real ports, and each other node's entry points at the
        proxies of that directed link, which forward to the other's real ports.
        """
        cluster = await self.prepared(bootstrap="first", extra_config="LogLevel: DEBUG\n")
        for i in cluster.ids:
            config = load_config(cluster.config_path(i), environ={})
            self.assertEqual(config.warnings, ())
            self.assertEqual(config.node_id, i)
            self.assertEqual(config.bootstrap, i == 1)
            self.assertEqual(config.log_level, "DEBUG")
            self.assertEqual(config.data_path(), os.path.join(cluster.workdir(i), "data"))
            own = cluster.addresses[i]
            self.assertEqual(config.port, own.http_port)
            self.assertEqual(config.raft_address, own.raft_address)
            self.assertTrue(os.path.exists(os.path.join(cluster.workdir(i), ".scheduler0")))
            by_id = {r.node_id: r for r in config.replicas}
            self.assertEqual(sorted(by_id), [1, 2, 3])
            self.assertEqual(by_id[i].address, own.address)
            self.assertEqual(by_id[i].raft_address, own.raft_address)
            for j in cluster.ids:
                if j == i:
                    continue
                link = cluster.link(i, j)
                self.assertEqual(by_id[j].address, f"http://127.0.0.1:{link.http.port}")
                self.assertEqual(by_id[j].raft_address, f"127.0.0.1:{link.raft.port}")
                self.assertEqual(link.http.target_port, cluster.addresses[j].http_port)
                self.assertEqual(link.raft.target_port, cluster.addresses[j].raft_port)
        ports = [a.http_port for a in cluster.addresses.values()]
        ports += [a.raft_port for a in cluster.addresses.values()]
        ports += [p.port for link in cluster.links.values() for p in link.proxies]
        self.assertEqual(len(ports), len(set(ports)), "every listener has its own port")
        self.assertEqual(len(cluster.links), 6)

    async def test_bootstrap_all_marks_every_node(self) -> None:
        """With bootstrap="all" every node's config has Bootstrap: true."""
        cluster = await self.prepared(bootstrap="all", node_config={2: "MaxWorkers: 7\n"})
        configs = [load_config(cluster.config_path(i), environ={}) for i in cluster.ids]
        self.assertEqual([c.bootstrap for c in configs], [True, True, True])
        self.assertEqual([c.max_workers for c in configs][1], 7)
        self.assertNotEqual(configs[0].max_workers, 7)

    async def test_a_link_proxy_reaches_the_real_port(self) -> None:
        """Bytes sent to the HTTP and Raft proxies of link 1->2 arrive at node 2's real ports."""
        cluster = await self.prepared()
        for proxy, real_port in (
            (cluster.link(1, 2).http, cluster.addresses[2].http_port),
            (cluster.link(1, 2).raft, cluster.addresses[2].raft_port),
        ):
            sinks: list[_Sink] = []

            def accept(sinks: list[_Sink] = sinks) -> _Sink:
                sinks.append(_Sink())
                return sinks[-1]

            listening = await TCP4ServerEndpoint(reactor, real_port, interface="127.0.0.1").listen(
                Factory.forProtocol(accept)
            )
            client = await connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port), _Sink()
            )
            client.transport.write(b"hello")
            await wait_for(
                reactor, lambda s=sinks: s and s[0].received == b"hello", timeout=5, what="bytes"
            )
            client.transport.loseConnection()
            await client.lost
            await sinks[0].lost
            await listening.stopListening()

    async def test_fault_helpers_cut_the_right_links(self) -> None:
        """
        C{cut(i, j)} cuts both proxies of that directed link only;
        C{isolate}, C{partition} and C{heal} act on every link they name.
        """
        cluster = await self.prepared()

        def cut_links() -> set[tuple[int, int]]:
            found = set()
            for key, link in cluster.links.items():
                states = {p.is_cut for p in link.proxies}
                self.assertEqual(len(states), 1, f"Raft and HTTP of {key} disagree")
                if states == {True}:
                    found.add(key)
            return found

        cluster.cut(1, 2)
        self.assertEqual(cut_links(), {(1, 2)})
        cluster.heal()
        self.assertEqual(cut_links(), set())
        cluster.isolate(3)
        self.assertEqual(cut_links(), {(1, 3), (3, 1), (2, 3), (3, 2)})
        cluster.heal()
        cluster.partition([1], [2, 3])
        self.assertEqual(cut_links(), {(1, 2), (2, 1), (1, 3), (3, 1)})
        cluster.heal()
        cluster.partition([1, 2])
        self.assertEqual(cut_links(), {(1, 3), (3, 1), (2, 3), (3, 2)})
        cluster.heal()
        self.assertEqual(cut_links(), set())


class ClusterArgumentTests(SynchronousTestCase):
    def test_bad_arguments_are_named(self) -> None:
        """Bad size, bootstrap, node ids and self-links are rejected, naming what is wrong."""
        for kwargs, name in (
            ({"size": 0}, "size"),
            ({"bootstrap": "some"}, "bootstrap"),
            ({"node_config": {4: "x: 1"}}, "node_config"),
        ):
            error = self.assertRaises(ValueError, Cluster, None, "/tmp/x", **kwargs)
            self.assertIn(name, str(error))
        cluster = Cluster(None, "/tmp/x", size=2)
        self.assertIn("node id", str(self.assertRaises(ValueError, cluster.node, 3)))
        self.assertIn("itself", str(self.assertRaises(ValueError, cluster.link, 1, 1)))
        error = self.assertRaises(ValueError, cluster.partition, [1, 2], [2])
        self.assertIn("more than one group", str(error))


class SingleNodeClusterTests(TestCase):
    timeout = 90

    async def test_one_node_starts_and_leads(self) -> None:
        """
        A one-node cluster starts a real node that reports itself leader;
        a paused node makes C{wait_leader} time out with each node's log tail;
        after resume and restart on the same data it leads again.
        """
        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), size=1)
        self.addCleanup(lambda: Deferred.fromCoroutine(cluster.close()))
        await cluster.prepare()
        await cluster.start(timeout=30)
        self.assertEqual(await cluster.wait_leader(timeout=20), 1)
        health = await cluster.health(1)
        self.assertEqual(health["node_id"], 1)

        cluster.pause(1)
        error = None
        try:
            await cluster.wait_leader(timeout=0.5, among=[1])
        except TimeoutError as e:
            error = str(e)
        self.assertIsNotNone(error)
        self.assertIn("----- node 1 (paused) -----", error)
        self.assertIsNone(await cluster.health(1, timeout=0.3))
        cluster.resume(1)

        await cluster.restart(1)
        self.assertEqual(cluster.node(1).starts, 2)
        self.assertEqual(await cluster.wait_leader(timeout=20), 1)
        await cluster.stop_all()
        self.assertFalse(cluster.is_running(1))
