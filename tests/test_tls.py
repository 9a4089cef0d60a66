"""
Tests for optional TLS: endpoint strings and their file paths, the start-up
checks of the TLS keys, HTTPS on the API (in process and in a real node) and
mutual TLS on real Raft links on 127.0.0.1.

Certificates are made fresh by the tests (a throw-away CA, node certificates
for 127.0.0.1, and an impostor CA) and written into each test's temp dir.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from treq.client import HTTPClient
from twisted.internet.defer import TimeoutError
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.protocols.policies import WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from harness.process import http_client, prepare_single_node
from harness.waiting import wait_for
from scheduler0.config import Config, ConfigError, config_from_mapping
from scheduler0.raft.transport import RaftTransport
from scheduler0.tls import (
    TLSServerEndpoint,
    api_server_endpoint,
    check_tls_config,
    endpoint_warnings,
    load_raft_tls,
    raft_client_endpoint_factory,
    raft_server_endpoint,
    resolve_endpoint_paths,
)

SECRET = b"cluster secret for tls tests"
LOCALHOST = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))

# ---------------------------------------------------------------------------
# Certificates


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _certificate(
    subject: str, key, issuer: str, issuer_key, *, ca: bool, not_after: datetime | None = None
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(not_after or now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([LOCALHOST, x509.DNSName("localhost")]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@functools.cache
def material() -> dict[str, bytes]:
    """
    PEM files: the cluster CA, node certificates it signed, an impostor CA
    and a node certificate the impostor signed, and an expired node
    certificate.  Made once per test run (EC keys are quick to make).
    """
    files: dict[str, bytes] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Scheduler0 test CA", ca_key, "Scheduler0 test CA", ca_key, ca=True)
    files["ca.crt"] = _pem_cert(ca)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _certificate("Impostor CA", other_key, "Impostor CA", other_key, ca=True)
    files["other-ca.crt"] = _pem_cert(other)
    files["both-ca.crt"] = files["ca.crt"] + files["other-ca.crt"]
    for name, signer, signer_key in (
        ("node1", "Scheduler0 test CA", ca_key),
        ("node2", "Scheduler0 test CA", ca_key),
        ("impostor", "Impostor CA", other_key),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{name}.key"] = _pem_key(key)
        files[f"{name}.crt"] = _pem_cert(_certificate(name, key, signer, signer_key, ca=False))
    key = ec.generate_private_key(ec.SECP256R1())
    files["expired.key"] = _pem_key(key)
    files["expired.crt"] = _pem_cert(
        _certificate(
            "expired",
            key,
            "Scheduler0 test CA",
            ca_key,
            ca=False,
            not_after=datetime.now(UTC) - timedelta(minutes=1),
        )
    )
    return files


def write_material(directory: str) -> str:
    """Write every PEM file of L{material} into C{directory}; return it."""
    os.makedirs(directory, exist_ok=True)
    for name, data in material().items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    return directory


def raft_tls_keys(node: str, ca: str = "ca.crt") -> dict[str, str]:
    return {
        "RaftTLSCertificate": f"{node}.crt",
        "RaftTLSPrivateKey": f"{node}.key",
        "RaftTLSCA": ca,
    }


def trusting_client(reactor, ca_file: str):
    """A treq client that trusts only the CA in C{ca_file} and keeps no connections."""
    from twisted.internet.ssl import Certificate

    with open(ca_file, "rb") as f:
        authority = Certificate.loadPEM(f.read())
    agent = Agent(
        reactor,
        contextFactory=BrowserLikePolicyForHTTPS(trustRoot=authority),
        pool=HTTPConnectionPool(reactor, persistent=False),
    )
    return HTTPClient(agent)


# ---------------------------------------------------------------------------
# Endpoint strings


class EndpointStringTests(unittest.SynchronousTestCase):
    """File arguments of endpoint strings are relative to the config file."""

    def test_relative_ssl_files_are_resolved_against_the_config_dir(self):
        """privateKey and certKey given relative become absolute under the config dir."""
        self.assertEqual(
            resolve_endpoint_paths(
                "ssl:9443:interface=127.0.0.1:privateKey=tls/key.pem:certKey=cert.pem",
                "/etc/scheduler0",
            ),
            "ssl:9443:interface=127.0.0.1:privateKey=/etc/scheduler0/tls/key.pem"
            ":certKey=/etc/scheduler0/cert.pem",
        )

    def test_absolute_files_and_other_arguments_are_kept(self):
        """An absolute path and non-file arguments pass through unchanged."""
        description = "ssl:9443:privateKey=/srv/key.pem:interface=0.0.0.0:backlog=5"
        self.assertEqual(resolve_endpoint_paths(description, "/etc"), description)

    def test_escaped_colons_in_paths_stay_escaped(self):
        """A backslash-escaped colon inside a file name survives the rewrite."""
        self.assertEqual(
            resolve_endpoint_paths(r"ssl:9443:privateKey=a\:b.pem", "/cfg"),
            r"ssl:9443:privateKey=/cfg/a\:b.pem",
        )

    def test_ssl_without_private_key_uses_server_pem_in_the_config_dir(self):
        """Twisted's default key file, server.pem, is looked up beside the config file."""
        self.assertEqual(
            resolve_endpoint_paths("ssl:9443", "/cfg"), "ssl:9443:privateKey=/cfg/server.pem"
        )

    def test_other_endpoint_types_are_unchanged(self):
        """A tcp: string has no file arguments and is left as written."""
        self.assertEqual(
            resolve_endpoint_paths("tcp:9091:interface=127.0.0.1", "/cfg"),
            "tcp:9091:interface=127.0.0.1",
        )


# ---------------------------------------------------------------------------
# Configuration and start-up checks


class ConfigTests(unittest.SynchronousTestCase):
    """The TLS keys load from the file and the environment; bad ones stop start-up."""

    def setUp(self):
        self.dir = write_material(os.path.abspath(self.mktemp()))

    def config(self, **keys) -> Config:
        return config_from_mapping(keys, base_dir=self.dir)

    def assertConfigError(self, config: Config, *fragments: str) -> str:
        error = self.assertRaises(ConfigError, check_tls_config, config)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        return str(error)

    def test_keys_default_to_empty_and_tls_off(self):
        """Without the new keys the node listens on plain TCP, and the checks pass."""
        config = self.config()
        self.assertEqual(
            (
                config.http_endpoint,
                config.raft_endpoint,
                config.raft_tls_certificate,
                config.raft_tls_private_key,
                config.raft_tls_ca,
            ),
            ("", "", "", "", ""),
        )
        self.assertIsNone(load_raft_tls(config))
        check_tls_config(config)

    def test_keys_are_read_from_the_environment(self):
        """Each key has its SCHEDULER0_ variable."""
        config = config_from_mapping(
            {},
            base_dir=self.dir,
            environ={
                "SCHEDULER0_HTTP_ENDPOINT": "tcp:9443",
                "SCHEDULER0_RAFT_ENDPOINT": "tcp:7071",
                "SCHEDULER0_RAFT_TLS_CERTIFICATE": "node1.crt",
                "SCHEDULER0_RAFT_TLS_PRIVATE_KEY": "node1.key",
                "SCHEDULER0_RAFT_TLSCA": "ca.crt",
            },
        )
        self.assertEqual(
            (
                config.http_endpoint,
                config.raft_endpoint,
                config.raft_tls_certificate,
                config.raft_tls_private_key,
                config.raft_tls_ca,
            ),
            ("tcp:9443", "tcp:7071", "node1.crt", "node1.key", "ca.crt"),
        )

    def test_a_non_string_value_names_the_key(self):
        """HTTPEndpoint: 9443 (a number) is refused, naming the key."""
        error = self.assertRaises(ConfigError, config_from_mapping, {"HTTPEndpoint": 9443})
        self.assertIn("HTTPEndpoint", str(error))

    def test_good_raft_tls_files_pass(self):
        """A CA-signed certificate with its key and the CA is accepted."""
        config = self.config(**raft_tls_keys("node1"))
        check_tls_config(config)
        self.assertIsNotNone(load_raft_tls(config))

    def test_missing_certificate_file_names_the_key_and_path(self):
        """A RaftTLSCertificate that does not exist is a start-up error naming both."""
        keys = raft_tls_keys("node1")
        keys["RaftTLSCertificate"] = "missing.crt"
        self.assertConfigError(
            self.config(**keys),
            "RaftTLSCertificate",
            "file not found",
            os.path.join(self.dir, "missing.crt"),
        )

    def test_missing_ca_file_names_the_key(self):
        """A RaftTLSCA that does not exist is a start-up error naming it."""
        self.assertConfigError(
            self.config(**raft_tls_keys("node1", ca="nope.crt")), "RaftTLSCA", "file not found"
        )

    def test_unreadable_certificate_pem_names_the_key(self):
        """A RaftTLSCertificate that holds no PEM certificate is refused."""
        keys = raft_tls_keys("node1")
        keys["RaftTLSCertificate"] = "node1.key"  # a key, not a certificate
        self.assertConfigError(
            self.config(**keys), "RaftTLSCertificate", "no readable PEM certificate"
        )

    def test_unreadable_private_key_names_the_key(self):
        """A RaftTLSPrivateKey that holds no PEM key is refused."""
        keys = raft_tls_keys("node1")
        keys["RaftTLSPrivateKey"] = "node1.crt"
        self.assertConfigError(
            self.config(**keys), "RaftTLSPrivateKey", "no readable PEM private key"
        )

    def test_encrypted_private_key_is_refused_without_prompting(self):
        """A passphrase-protected key is a clear error, never a terminal prompt."""
        key = serialization.load_pem_private_key(material()["node1.key"], None)
        with open(os.path.join(self.dir, "locked.key"), "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"passphrase"),
                )
            )
        keys = raft_tls_keys("node1")
        keys["RaftTLSPrivateKey"] = "locked.key"
        self.assertConfigError(self.config(**keys), "RaftTLSPrivateKey", "encrypted")

    def test_key_of_another_certificate_is_refused(self):
        """A private key that does not match the certificate is refused."""
        keys = raft_tls_keys("node1")
        keys["RaftTLSPrivateKey"] = "node2.key"
        self.assertConfigError(self.config(**keys), "RaftTLSPrivateKey", "does not belong")

    def test_certificate_from_another_ca_is_refused(self):
        """A certificate the configured CA did not sign is refused at start-up (peers would)."""
        self.assertConfigError(
            self.config(**raft_tls_keys("impostor")), "RaftTLSCertificate", "not signed"
        )

    def test_expired_certificate_is_refused(self):
        """An expired RaftTLSCertificate is a start-up error with its end date."""
        self.assertConfigError(
            self.config(**raft_tls_keys("expired")), "RaftTLSCertificate", "expired on"
        )

    def test_partial_raft_tls_keys_name_the_missing_one(self):
        """Setting the certificate without the key and CA names what is missing."""
        self.assertConfigError(
            self.config(RaftTLSCertificate="node1.crt"),
            "RaftTLSPrivateKey: missing",
            "RaftTLSCertificate is set",
        )

    def test_ssl_http_endpoint_with_a_missing_key_file_names_the_key(self):
        """HTTPEndpoint pointing at a missing privateKey fails at start-up, naming both."""
        self.assertConfigError(
            self.config(HTTPEndpoint="ssl:0:privateKey=gone.key:certKey=node1.crt"),
            "HTTPEndpoint privateKey",
            "file not found",
            os.path.join(self.dir, "gone.key"),
        )

    def test_ssl_http_endpoint_with_a_mismatched_key_is_refused(self):
        """HTTPEndpoint's privateKey must belong to its certKey."""
        self.assertConfigError(
            self.config(HTTPEndpoint="ssl:0:privateKey=node2.key:certKey=node1.crt"),
            "HTTPEndpoint privateKey",
            "does not belong",
        )

    def test_unknown_http_endpoint_type_names_the_key(self):
        """An endpoint string Twisted cannot parse is a start-up error naming HTTPEndpoint."""
        self.assertConfigError(
            self.config(HTTPEndpoint="carrier-pigeon:80"),
            "HTTPEndpoint: invalid endpoint",
            "carrier-pigeon",
        )

    def test_bad_http_endpoint_argument_names_the_key(self):
        """An argument the endpoint type does not take is a start-up error naming the key."""
        self.assertConfigError(
            self.config(HTTPEndpoint="tcp:80:colour=blue"), "HTTPEndpoint: invalid endpoint"
        )

    def test_protocol_that_disagrees_with_the_endpoint_is_warned_about(self):
        """Protocol http with an ssl: HTTPEndpoint (or https without one) gives a warning."""
        ssl = "ssl:9443:privateKey=node1.key:certKey=node1.crt"
        self.assertEqual(endpoint_warnings(self.config(Protocol="https", HTTPEndpoint=ssl)), [])
        self.assertEqual(endpoint_warnings(self.config()), [])
        [warning] = endpoint_warnings(self.config(HTTPEndpoint=ssl))
        self.assertIn("Protocol is http", warning)
        [warning] = endpoint_warnings(self.config(Protocol="https"))
        self.assertIn("does not serve TLS", warning)

    def test_ssl_raft_endpoint_is_refused_in_favour_of_the_tls_keys(self):
        """An ssl: RaftEndpoint would not check peers; the error points to the TLS keys."""
        self.assertConfigError(
            self.config(RaftEndpoint="ssl:7071:privateKey=node1.key:certKey=node1.crt"),
            "RaftEndpoint",
            "RaftTLSCertificate",
        )


# ---------------------------------------------------------------------------
# What the endpoints are


class EndpointTests(unittest.SynchronousTestCase):
    """The endpoint functions pick plain TCP by default and wrap TLS when asked."""

    def setUp(self):
        self.dir = write_material(os.path.abspath(self.mktemp()))
        self.reactor = MemoryReactor()

    def config(self, **keys) -> Config:
        return config_from_mapping(keys, base_dir=self.dir)

    def test_default_api_endpoint_is_tcp_on_host_and_port(self):
        """With no HTTPEndpoint the API listens on Host:Port, as before."""
        endpoint = api_server_endpoint(self.reactor, self.config(Host="127.0.0.2", Port=9555))
        endpoint.listen(Factory())
        port, _, _, interface = self.reactor.tcpServers[0]
        self.assertEqual((port, interface), (9555, "127.0.0.2"))

    def test_api_endpoint_string_is_used(self):
        """HTTPEndpoint tcp:... chooses the port and interface."""
        endpoint = api_server_endpoint(
            self.reactor, self.config(HTTPEndpoint="tcp:9666:interface=127.0.0.3")
        )
        self.assertIsInstance(endpoint, TCP4ServerEndpoint)
        endpoint.listen(Factory())
        port, _, _, interface = self.reactor.tcpServers[0]
        self.assertEqual((port, interface), (9666, "127.0.0.3"))

    def test_ssl_api_endpoint_reads_files_beside_the_config(self):
        """An ssl: HTTPEndpoint with relative file names gives an SSL endpoint."""
        endpoint = api_server_endpoint(
            self.reactor,
            self.config(HTTPEndpoint="ssl:9443:privateKey=node1.key:certKey=node1.crt"),
        )
        self.assertIsInstance(endpoint, SSL4ServerEndpoint)

    def test_default_raft_endpoint_is_tcp_on_raft_address(self):
        """With no RaftEndpoint and no TLS the Raft listener is plain TCP on RaftAddress."""
        endpoint = raft_server_endpoint(self.reactor, self.config(RaftAddress="127.0.0.4:7444"))
        factory = Factory()
        endpoint.listen(factory)
        port, listened, _, interface = self.reactor.tcpServers[0]
        self.assertEqual((port, interface, listened), (7444, "127.0.0.4", factory))

    def test_raft_endpoint_string_is_used(self):
        """RaftEndpoint chooses where the Raft listener listens."""
        endpoint = raft_server_endpoint(self.reactor, self.config(RaftEndpoint="tcp:7555"))
        endpoint.listen(Factory())
        self.assertEqual(self.reactor.tcpServers[0][0], 7555)

    def test_raft_tls_wraps_every_accepted_connection(self):
        """With the Raft TLS keys the listener's factory is TLS around the Raft factory."""
        endpoint = raft_server_endpoint(
            self.reactor, self.config(RaftAddress="127.0.0.1:7666", **raft_tls_keys("node1"))
        )
        self.assertIsInstance(endpoint, TLSServerEndpoint)
        factory = Factory()
        endpoint.listen(factory)
        port, listened, _, _ = self.reactor.tcpServers[0]
        self.assertEqual(port, 7666)
        self.assertIsInstance(listened, TLSMemoryBIOFactory)
        self.assertIs(listened.wrappedFactory, factory)

    def dial(self, config: Config) -> tuple[tuple, bytes]:
        """
        Dial 127.0.0.9:7071 with a protocol that writes C{b"hello"} on
        connecting; return what was dialled and the first bytes on the wire.
        """
        connect = raft_client_endpoint_factory(self.reactor, config)
        connect("127.0.0.9", 7071).connect(Factory.forProtocol(_SaysHello))
        host, port, dialled, timeout, _ = self.reactor.tcpClients[0]
        wire = StringTransport()
        dialled.buildProtocol(None).makeConnection(wire)
        return (host, port, timeout), wire.value()

    def test_plain_client_endpoint_uses_the_transport_timeout(self):
        """Without TLS a peer is dialled over plain TCP with RaftTransportTimeout."""
        where, wire = self.dial(self.config(RaftTransportTimeout=3.5))
        self.assertEqual(where, ("127.0.0.9", 7071, 3.5))
        self.assertEqual(wire, b"hello")

    def test_tls_client_endpoint_speaks_tls_first(self):
        """With the Raft TLS keys the first bytes to a peer are a TLS handshake, not Raft's."""
        where, wire = self.dial(self.config(RaftTransportTimeout=2, **raft_tls_keys("node1")))
        self.assertEqual(where, ("127.0.0.9", 7071, 2))
        self.assertNotIn(b"hello", wire)
        self.assertEqual(wire[:1], b"\x16")  # TLS record type: handshake


class _SaysHello(Protocol):
    def connectionMade(self):
        self.transport.write(b"hello")


# ---------------------------------------------------------------------------
# HTTPS for the API


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello over tls"


class HTTPSInProcessTests(unittest.TestCase):
    """The API endpoint from an ssl: HTTPEndpoint serves HTTPS a CA-trusting client accepts."""

    timeout = 15

    async def test_site_served_on_the_api_endpoint_answers_over_https(self):
        """A GET over HTTPS, verified against the CA, gets the page."""
        from twisted.internet import reactor

        directory = write_material(os.path.abspath(self.mktemp()))
        config = config_from_mapping(
            {"HTTPEndpoint": "ssl:0:interface=127.0.0.1:privateKey=node1.key:certKey=node1.crt"},
            base_dir=directory,
        )
        root = Resource()
        root.putChild(b"hello", _Hello())
        root.putChild(b"", Data(b"root", "text/plain"))
        connections = WrappingFactory(Site(root))
        port = await api_server_endpoint(reactor, config).listen(connections)
        self.addCleanup(port.stopListening)
        url = f"https://127.0.0.1:{port.getHost().port}/hello"

        response = await trusting_client(reactor, os.path.join(directory, "ca.crt")).get(url)
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.content(), b"hello over tls")

        # A client that does not trust the test CA refuses the server.
        untrusting = trusting_client(reactor, os.path.join(directory, "other-ca.crt"))
        with self.assertRaises(Exception) as raised:
            await untrusting.get(url)
        self.assertIn("certificate verify failed", repr(raised.exception).lower())

        await wait_for(
            reactor,
            lambda: not connections.protocols,
            timeout=5,
            what="server connections to close",
        )


class NodeOverHTTPSTests(unittest.TestCase):
    """A real node configured with an ssl: HTTPEndpoint and Protocol https."""

    timeout = 60

    async def test_node_serves_healthcheck_over_https(self):
        """GET /healthcheck over HTTPS, trusting only the test CA, answers 200 from node 1."""
        from twisted.internet import reactor

        workdir = os.path.abspath(self.mktemp())
        node = await prepare_single_node(reactor, workdir, "Protocol: https\n")
        write_material(workdir)
        with open(node.config_path, "a") as f:
            f.write(
                f"HTTPEndpoint: ssl:{node.http_port}:interface=127.0.0.1"
                ":privateKey=node1.key:certKey=node1.crt\n"
            )
        self.addCleanup(node.kill)
        node.spawn()
        client = trusting_client(reactor, os.path.join(workdir, "ca.crt"))
        url = f"https://127.0.0.1:{node.http_port}/healthcheck"

        plain = http_client(reactor)

        async def probe():
            try:
                response = await client.get(url, timeout=2)
            except Exception:
                # Answering plain HTTP means HTTPEndpoint was ignored: stop waiting.
                response = await plain.get(url.replace("https:", "http:"), timeout=2)
                return "plain HTTP", None
            return response.code, json.loads(await response.content())

        try:
            code, body = await wait_for(reactor, probe, timeout=20, what=f"node to answer at {url}")
        except TimeoutError:
            self.fail(f"node never answered over HTTPS; its output:\n{node.output}")
        if code == "plain HTTP":
            self.fail(
                "the node answers plain HTTP: the service does not listen on "
                "scheduler0.tls.api_server_endpoint(reactor, config)"
            )
        self.assertEqual(code, 200)
        self.assertEqual(body["data"]["node_id"], 1)
        self.assertTrue(body["data"]["leader_address"].startswith("https://"))
        await node.stop()


# ---------------------------------------------------------------------------
# Mutual TLS on Raft links


class RaftTLSTests(unittest.TestCase):
    """RaftTransports over real TLS on 127.0.0.1."""

    timeout = 15

    def setUp(self):
        self.dir = write_material(os.path.abspath(self.mktemp()))

    def node(self, node_id: int, keys: dict[str, str]):
        """A RaftTransport for C{node_id} built from a config with C{keys}; and its inbox."""
        from twisted.internet import reactor

        config = config_from_mapping(
            {
                "NodeId": node_id,
                "RaftEndpoint": "tcp:0:interface=127.0.0.1",
                "RaftTransportTimeout": 5,
                **keys,
            },
            base_dir=self.dir,
        )
        check_tls_config(config)
        inbox: list[tuple[int, bytes]] = []
        transport = RaftTransport(
            reactor=reactor,
            node_id=node_id,
            secret_key=SECRET,
            listen_endpoint=raft_server_endpoint(reactor, config),
            peers={},
            on_message=lambda sender, payload: inbox.append((sender, payload)),
            connect_endpoint_factory=raft_client_endpoint_factory(reactor, config),
            timeout_s=config.raft_transport_timeout,
            large_frame_threshold=1024,
        )
        self.addCleanup(transport.stop)
        return transport, inbox

    async def pair(self, keys1: dict[str, str], keys2: dict[str, str]):
        """Start nodes 1 and 2 and make them peers of each other."""
        (t1, inbox1), (t2, inbox2) = self.node(1, keys1), self.node(2, keys2)
        port1 = (await t1.start()).getHost().port
        port2 = (await t2.start()).getHost().port
        t1.set_peers({2: f"127.0.0.1:{port2}"})
        t2.set_peers({1: f"127.0.0.1:{port1}"})
        return (t1, inbox1), (t2, inbox2)

    async def assert_nothing_exchanged(self, t1, inbox1, t2, inbox2):
        from twisted.internet import reactor

        t1.send(2, b"from 1")
        t2.send(1, b"from 2")
        await wait_for(
            reactor,
            lambda: (
                t1.stats()[2]["connect_failures"] >= 2 and t2.stats()[1]["connect_failures"] >= 2
            ),
            timeout=10,
            what="both nodes to fail to connect twice",
        )
        self.assertEqual((inbox1, inbox2), ([], []))
        self.assertFalse(t1.stats()[2]["connected"])
        self.assertFalse(t2.stats()[1]["connected"])

    async def test_nodes_with_ca_signed_certificates_exchange_messages(self):
        """Two nodes whose certificates the shared CA signed exchange small and large messages."""
        from twisted.internet import reactor

        (t1, inbox1), (t2, inbox2) = await self.pair(raft_tls_keys("node1"), raft_tls_keys("node2"))
        large = os.urandom(200_000)  # goes on a bulk connection
        t1.send(2, b"hello from 1")
        t2.send(1, b"hello from 2")
        await wait_for(reactor, lambda: inbox1 and inbox2, timeout=10, what="first messages")
        t1.send(2, large)
        await wait_for(reactor, lambda: len(inbox2) == 2, timeout=10, what="the large message")
        self.assertEqual(inbox1, [(2, b"hello from 2")])
        self.assertEqual(inbox2, [(1, b"hello from 1"), (1, large)])
        self.assertEqual(t1.stats()[2]["connections"], 2)

    async def test_peer_with_a_certificate_from_another_ca_exchanges_nothing(self):
        """
        A node with the right secret but a certificate the cluster CA did not
        sign can neither send to nor receive from a node of the cluster.
        """
        (t1, inbox1), (t2, inbox2) = await self.pair(
            raft_tls_keys("node1"), raft_tls_keys("impostor", ca="both-ca.crt")
        )
        await self.assert_nothing_exchanged(t1, inbox1, t2, inbox2)

    async def test_plain_tcp_peer_and_tls_node_exchange_nothing(self):
        """A node without TLS and a node with Raft TLS exchange no message either way."""
        (t1, inbox1), (t2, inbox2) = await self.pair(raft_tls_keys("node1"), {})
        await self.assert_nothing_exchanged(t1, inbox1, t2, inbox2)
