"""
Tests for L{scheduler0.netpolicy}: the callback network policy, the static
URL check for the API, and the Agent that enforces the policy per connection.
"""

from __future__ import annotations

import socket
from typing import Any

import attrs
import treq.client
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import URI, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgent, IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface.verify import verifyObject

from scheduler0.netpolicy import (
    BlockedTarget,
    NetworkPolicy,
    _CheckedEndpoint,
    _CheckedEndpointFactory,
    _lookup,
    check_url,
    check_urls,
    policy_agent,
    thread_resolver,
)


def policy(allow: tuple[str, ...] = (), deny: tuple[str, ...] = ()) -> NetworkPolicy:
    return NetworkPolicy.from_config(allow, deny)


@attrs.define(eq=False)
class FakeResolver:
    """Answers from a fixed table; unknown names fail like a failed DNS lookup."""

    table: dict[str, list[str]] = attrs.field(factory=dict)
    calls: list[str] = attrs.field(factory=list)

    def __call__(self, host: str) -> Deferred[list[str]]:
        self.calls.append(host)
        if host in self.table:
            return succeed(list(self.table[host]))
        return fail(DNSLookupError(host))


class PolicyTests(SynchronousTestCase):
    def test_no_rules_is_open(self) -> None:
        """A policy without rules, not even the default deny list, is open to every address."""
        p = NetworkPolicy()
        self.assertTrue(p.is_open)
        self.assertIsNone(p.allows_address("10.0.0.1"))
        self.assertIsNone(p.allows_address("::1"))

    def test_any_rule_closes_the_fast_path(self) -> None:
        """A policy with an allow or a deny rule is not open."""
        self.assertFalse(policy(allow=("10.0.0.0/8",)).is_open)
        self.assertFalse(policy(deny=("10.0.0.0/8",)).is_open)

    def test_from_config_accepts_cidrs_and_bare_ips(self) -> None:
        """CIDR strings and bare addresses both become networks (host bits are dropped)."""
        p = policy(allow=("10.1.2.3/8", "192.168.1.7"), deny=("::1",))
        self.assertEqual([str(n) for n in p.allow], ["10.0.0.0/8", "192.168.1.7/32"])
        self.assertEqual([str(n) for n in p.deny], ["::1/128"])

    def test_from_config_names_the_bad_key(self) -> None:
        """A bad entry is refused with the config key and the entry in the message."""
        with self.assertRaises(ValueError) as caught:
            policy(deny=("10.0.0.0/8", "not-a-network"))
        self.assertIn("CallbackDenyNetworks", str(caught.exception))
        self.assertIn("'not-a-network'", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            policy(allow=("300.1.1.1",))
        self.assertIn("CallbackAllowNetworks", str(caught.exception))

    def test_deny(self) -> None:
        """An address inside a denied network is refused with the rule; others pass."""
        p = policy(deny=("10.0.0.0/8",))
        self.assertEqual(p.allows_address("10.0.0.5"), "is in CallbackDenyNetworks 10.0.0.0/8")
        self.assertIsNone(p.allows_address("11.0.0.5"))

    def test_allow_list(self) -> None:
        """With an allow list, only addresses inside it pass."""
        p = policy(allow=("192.168.0.0/16",))
        self.assertIsNone(p.allows_address("192.168.3.4"))
        self.assertEqual(
            p.allows_address("8.8.8.8"), "is not in CallbackAllowNetworks (192.168.0.0/16)"
        )

    def test_long_allow_list_is_shortened(self) -> None:
        """The refusal lists the first allowed networks and counts the rest."""
        p = policy(allow=tuple(f"10.{n}.0.0/16" for n in range(6)))
        self.assertEqual(
            p.allows_address("8.8.8.8"),
            "is not in CallbackAllowNetworks "
            "(10.0.0.0/16, 10.1.0.0/16, 10.2.0.0/16, 10.3.0.0/16 and 2 more)",
        )

    def test_deny_wins_over_allow(self) -> None:
        """An address both allowed and denied is refused."""
        p = policy(allow=("10.0.0.0/8",), deny=("10.1.0.0/16",))
        self.assertIsNone(p.allows_address("10.2.0.1"))
        self.assertEqual(p.allows_address("10.1.0.1"), "is in CallbackDenyNetworks 10.1.0.0/16")

    def test_ipv6(self) -> None:
        """IPv6 addresses are judged against IPv6 networks, never against IPv4 ones."""
        p = policy(deny=("fc00::/7", "::1", "0.0.0.0/0"))
        self.assertEqual(p.allows_address("fd12::1"), "is in CallbackDenyNetworks fc00::/7")
        self.assertEqual(p.allows_address("::1"), "is in CallbackDenyNetworks ::1/128")
        self.assertIsNone(p.allows_address("2001:db8::1"))
        self.assertIsNone(p.allows_address("[2001:db8::2]"))

    def test_ipv6_allow_list(self) -> None:
        """An IPv4-only allow list refuses IPv6 targets."""
        p = policy(allow=("10.0.0.0/8",))
        self.assertEqual(
            p.allows_address("2001:db8::1"), "is not in CallbackAllowNetworks (10.0.0.0/8)"
        )

    def test_ipv4_mapped_is_judged_as_ipv4(self) -> None:
        """::ffff:10.0.0.1 is denied by 10.0.0.0/8 and allowed by an IPv4 allow list."""
        self.assertEqual(
            policy(deny=("10.0.0.0/8",)).allows_address("::ffff:10.0.0.1"),
            "is in CallbackDenyNetworks 10.0.0.0/8",
        )
        self.assertIsNone(policy(allow=("10.0.0.0/8",)).allows_address("::ffff:10.0.0.1"))

    def test_mapped_network_in_config_covers_ipv4(self) -> None:
        """A deny rule written as IPv4-mapped IPv6 also refuses the plain IPv4 address."""
        p = policy(deny=("::ffff:127.0.0.0/104",))
        self.assertEqual(p.allows_address("127.0.0.1"), "is in CallbackDenyNetworks 127.0.0.0/8")

    def test_not_an_address(self) -> None:
        """Text that is not an IP address is refused (when there are rules at all)."""
        self.assertEqual(
            policy(deny=("10.0.0.0/8",)).allows_address("example.com"), "is not an IP address"
        )


class DefaultDenyTests(SynchronousTestCase):
    """Link-local and cloud metadata addresses are refused unless explicitly allowed."""

    METADATA = ("169.254.169.254", "169.254.170.2", "fe80::1", "fd00:ec2::254", "100.100.100.200")

    def test_config_without_rules_denies_metadata(self) -> None:
        """A policy from a config without rules refuses every default-denied address."""
        p = policy()
        self.assertFalse(p.is_open)
        for address in self.METADATA:
            reason = p.allows_address(address)
            self.assertIsNotNone(reason, address)
            assert reason is not None
            self.assertIn("is in the default deny list", reason)
            self.assertIn("CallbackAllowNetworks", reason)
        self.assertIn("169.254.0.0/16", p.allows_address("169.254.169.254") or "")
        self.assertIn("fd00:ec2::254/128", p.allows_address("fd00:ec2::254") or "")

    def test_ipv4_mapped_metadata_is_denied(self) -> None:
        """The metadata address written as IPv4-mapped IPv6 is denied as well."""
        self.assertIsNotNone(policy().allows_address("::ffff:169.254.169.254"))

    def test_loopback_and_private_are_not_denied_by_default(self) -> None:
        """Loopback, private and public addresses pass a policy without rules."""
        p = policy()
        for address in ("127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "fd12::1", "8.8.8.8"):
            self.assertIsNone(p.allows_address(address), address)

    def test_explicit_allow_opens_a_default_denied_network(self) -> None:
        """An allow entry inside the default-denied network lets its addresses through."""
        p = policy(allow=("169.254.169.254/32", "127.0.0.0/8", "fe80::/10"))
        self.assertIsNone(p.allows_address("169.254.169.254"))
        self.assertIsNone(p.allows_address("fe80::1"))
        self.assertIsNone(p.allows_address("127.0.0.1"))
        self.assertIn("default deny list", p.allows_address("169.254.170.2") or "")

    def test_a_wide_allow_does_not_open_metadata(self) -> None:
        """0.0.0.0/0 or ::/0 in CallbackAllowNetworks does not open what the defaults deny."""
        p = policy(allow=("0.0.0.0/0", "::/0"))
        self.assertIsNone(p.allows_address("8.8.8.8"))
        self.assertIn("default deny list", p.allows_address("169.254.169.254") or "")
        self.assertIn("default deny list", p.allows_address("fd00:ec2::254") or "")

    def test_deny_still_wins_over_an_explicit_allow(self) -> None:
        """CallbackDenyNetworks refuses an address even if the allow list opens it."""
        p = policy(allow=("169.254.0.0/16",), deny=("169.254.169.254",))
        self.assertEqual(
            p.allows_address("169.254.169.254"), "is in CallbackDenyNetworks 169.254.169.254/32"
        )
        self.assertIsNone(p.allows_address("169.254.1.1"))

    def test_creation_check_refuses_metadata(self) -> None:
        """The create/update check refuses metadata literals and names resolving to them."""
        resolver = FakeResolver({"metadata.test": ["169.254.169.254"]})

        def check(p: NetworkPolicy, url: str) -> str | None:
            return self.successResultOf(Deferred.fromCoroutine(check_url(p, url, resolver)))

        self.assertIn(
            "169.254.169.254 is in the default deny list 169.254.0.0/16",
            check(policy(), "http://169.254.169.254/latest/meta-data/") or "",
        )
        self.assertIn(
            "169.254.169.254 (from metadata.test)", check(policy(), "http://metadata.test/") or ""
        )
        self.assertIn("fd00:ec2::254", check(policy(), "http://[fd00:ec2::254]/") or "")
        self.assertIsNone(check(policy(), "http://127.0.0.1:9000/hook"))
        opened = policy(allow=("169.254.169.254/32",))
        self.assertIsNone(check(opened, "http://metadata.test/"))

    def test_connect_refuses_metadata(self) -> None:
        """At connect time a name resolving to metadata fails with BlockedTarget, no connection."""
        reactor = MemoryReactorClock()
        resolver = FakeResolver({"rebound.test": ["169.254.169.254"]})
        endpoint = _CheckedEndpoint(reactor, policy(), resolver, "rebound.test", 80, 5.0)
        failure = self.failureResultOf(endpoint.connect(Factory()), BlockedTarget)
        self.assertIn("default deny list 169.254.0.0/16", str(failure.value))
        self.assertEqual(reactor.tcpClients, [])

    def test_connect_allowed_when_explicitly_allowed(self) -> None:
        """With an explicit allow the connection goes to the metadata address."""
        reactor = MemoryReactorClock()
        resolver = FakeResolver({"rebound.test": ["169.254.169.254"]})
        p = policy(allow=("169.254.169.254/32",))
        endpoint = _CheckedEndpoint(reactor, p, resolver, "rebound.test", 80, 5.0)
        self.assertNoResult(endpoint.connect(Factory()))
        self.assertEqual([c[:2] for c in reactor.tcpClients], [("169.254.169.254", 80)])


class BlockedTargetTests(SynchronousTestCase):
    def test_names_host_address_and_rule(self) -> None:
        """The error is one line naming the address, the host it came from and the rule."""
        error = BlockedTarget(
            "internal.example", "10.0.0.5", "is in CallbackDenyNetworks 10.0.0.0/8"
        )
        self.assertEqual(
            str(error),
            "callback_url: 10.0.0.5 (from internal.example) is in CallbackDenyNetworks 10.0.0.0/8",
        )

    def test_literal_host_is_not_repeated(self) -> None:
        """For an IP literal host the address is named once."""
        error = BlockedTarget("::1", "::1", "is in CallbackDenyNetworks ::1/128")
        self.assertEqual(str(error), "callback_url: ::1 is in CallbackDenyNetworks ::1/128")


class CheckURLTests(SynchronousTestCase):
    def check(self, p: NetworkPolicy, url: str, resolver: FakeResolver) -> str | None:
        return self.successResultOf(Deferred.fromCoroutine(check_url(p, url, resolver)))

    def test_open_policy_resolves_nothing(self) -> None:
        """With no rules every URL is accepted without a lookup."""
        resolver = FakeResolver({"evil.test": ["10.0.0.1"]})
        self.assertIsNone(self.check(NetworkPolicy(), "http://evil.test/", resolver))
        self.assertEqual(resolver.calls, [])

    def test_literal_ip_checked_directly(self) -> None:
        """An IP literal host is judged without a lookup."""
        resolver = FakeResolver()
        p = policy(deny=("10.0.0.0/8", "fc00::/7"))
        self.assertEqual(
            self.check(p, "http://10.0.0.5:8080/hook", resolver),
            "10.0.0.5 is in CallbackDenyNetworks 10.0.0.0/8",
        )
        self.assertEqual(
            self.check(p, "https://[fd00::7]/hook", resolver),
            "fd00::7 is in CallbackDenyNetworks fc00::/7",
        )
        self.assertIsNone(self.check(p, "http://11.0.0.5/hook", resolver))
        self.assertEqual(resolver.calls, [])

    def test_localhost_is_loopback(self) -> None:
        """localhost counts as 127.0.0.1 and ::1, without asking the resolver."""
        resolver = FakeResolver()
        self.assertEqual(
            self.check(policy(deny=("127.0.0.0/8",)), "http://localhost:9000/", resolver),
            "127.0.0.1 (from localhost) is in CallbackDenyNetworks 127.0.0.0/8",
        )
        self.assertEqual(
            self.check(policy(deny=("::1",)), "http://LOCALHOST/", resolver),
            "::1 (from localhost) is in CallbackDenyNetworks ::1/128",
        )
        self.assertEqual(resolver.calls, [])

    def test_name_resolving_to_a_blocked_address(self) -> None:
        """A name is refused when any of its addresses is refused."""
        resolver = FakeResolver({"internal.example": ["93.184.216.34", "10.0.0.5"]})
        self.assertEqual(
            self.check(policy(deny=("10.0.0.0/8",)), "https://internal.example/x", resolver),
            "10.0.0.5 (from internal.example) is in CallbackDenyNetworks 10.0.0.0/8",
        )
        self.assertEqual(resolver.calls, ["internal.example"])

    def test_name_resolving_outside_the_allow_list(self) -> None:
        """With an allow list, a name must resolve only inside it."""
        resolver = FakeResolver({"svc.test": ["10.1.1.1"], "far.test": ["10.1.1.2", "8.8.8.8"]})
        p = policy(allow=("10.0.0.0/8",))
        self.assertIsNone(self.check(p, "http://svc.test/", resolver))
        self.assertEqual(
            self.check(p, "http://far.test/", resolver),
            "8.8.8.8 (from far.test) is not in CallbackAllowNetworks (10.0.0.0/8)",
        )

    def test_unresolvable_name_is_accepted(self) -> None:
        """A name that does not resolve now is accepted (it is checked again at send time)."""
        resolver = FakeResolver()
        self.assertIsNone(self.check(policy(deny=("10.0.0.0/8",)), "http://gone.test/", resolver))
        self.assertEqual(resolver.calls, ["gone.test"])

    def test_check_urls_resolves_each_host_once(self) -> None:
        """The bulk check answers per URL and looks each distinct host up once."""
        resolver = FakeResolver({"a.test": ["10.0.0.1"], "b.test": ["8.8.8.8"]})
        verdicts = self.successResultOf(
            Deferred.fromCoroutine(
                check_urls(
                    policy(deny=("10.0.0.0/8",)),
                    ["http://a.test/1", "http://b.test/", "http://A.test/2", "http://10.2.3.4/"],
                    resolver,
                )
            )
        )
        self.assertEqual(
            verdicts,
            [
                "10.0.0.1 (from a.test) is in CallbackDenyNetworks 10.0.0.0/8",
                None,
                "10.0.0.1 (from a.test) is in CallbackDenyNetworks 10.0.0.0/8",
                "10.2.3.4 is in CallbackDenyNetworks 10.0.0.0/8",
            ],
        )
        self.assertEqual(sorted(resolver.calls), ["a.test", "b.test"])


class LookupTests(SynchronousTestCase):
    def test_unique_addresses_in_order(self) -> None:
        """The blocking lookup keeps the resolver's order and drops repeats."""

        def getaddrinfo(host: str, port: Any, family: int, type: int) -> list[Any]:
            self.assertEqual((host, type), ("svc.test", socket.SOCK_STREAM))
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 0, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 0)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 0, 0, 0)),
            ]

        self.assertEqual(_lookup("svc.test", getaddrinfo), ["2001:db8::1", "10.0.0.1"])

    def test_failure_is_a_dns_lookup_error(self) -> None:
        """A failed lookup raises DNSLookupError naming the host."""

        def getaddrinfo(*args: Any) -> list[Any]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        with self.assertRaises(DNSLookupError) as caught:
            _lookup("gone.test", getaddrinfo)
        self.assertIn("gone.test", str(caught.exception))


@attrs.define(eq=False)
class FakeTLSPolicy:
    """Records which name the TLS connection creator was made for."""

    asked: list[tuple[bytes, int]] = attrs.field(factory=list)

    def creatorForNetloc(self, hostname: bytes, port: int) -> object:
        self.asked.append((hostname, port))
        return object()


class EndpointFactoryTests(SynchronousTestCase):
    def factory(self, tls: FakeTLSPolicy) -> _CheckedEndpointFactory:
        return _CheckedEndpointFactory(
            object(), policy(deny=("10.0.0.0/8",)), FakeResolver(), 5.0, tls
        )

    def test_https_uses_the_url_hostname_for_tls(self) -> None:
        """For https the TLS creator is made for the name in the URL (SNI and certificate)."""
        tls = FakeTLSPolicy()
        endpoint = self.factory(tls).endpointForURI(URI.fromBytes(b"https://api.example.com/x"))
        self.assertIsInstance(endpoint, _CheckedEndpoint)
        self.assertEqual(tls.asked, [(b"api.example.com", 443)])
        self.assertIsNotNone(endpoint.tls)
        self.assertEqual((endpoint.host, endpoint.port), ("api.example.com", 443))

    def test_plain_http_has_no_tls(self) -> None:
        """For http no TLS creator is made."""
        tls = FakeTLSPolicy()
        endpoint = self.factory(tls).endpointForURI(URI.fromBytes(b"http://[::1]:8080/x"))
        self.assertEqual((endpoint.host, endpoint.port, endpoint.tls), ("::1", 8080, None))
        self.assertEqual(tls.asked, [])

    def test_interfaces(self) -> None:
        """The factory, its endpoints and the Agent provide Twisted's interfaces."""
        factory = self.factory(FakeTLSPolicy())
        self.assertTrue(verifyObject(IAgentEndpointFactory, factory))
        endpoint = factory.endpointForURI(URI.fromBytes(b"http://x.test/"))
        self.assertTrue(verifyObject(IStreamClientEndpoint, endpoint))
        for p in (policy(), policy(deny=("10.0.0.0/8",))):
            agent = policy_agent(Clock(), p, None, FakeResolver(), 5.0)
            self.assertTrue(verifyObject(IAgent, agent))

    def test_other_schemes_are_refused(self) -> None:
        """A scheme other than http/https is refused the way Agent expects."""
        with self.assertRaises(SchemeNotSupported):
            self.factory(FakeTLSPolicy()).endpointForURI(URI.fromBytes(b"ftp://x.test/"))


class Recorder(Resource):
    """A callback receiver that records each POST's Host header and body."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[str, bytes]] = []

    def render_POST(self, request: Any) -> bytes:
        host = request.getHeader(b"host") or b""
        self.posts.append((host.decode(), request.content.read()))
        return b"ok"


class CountingSite(Site):
    """A Site that counts the TCP connections it accepted."""

    connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        return super().buildProtocol(addr)


class AgentTests(TestCase):
    """The policy Agent against a real HTTP server on 127.0.0.1."""

    def setUp(self) -> None:
        self.receiver = Recorder()
        self.site = CountingSite(self.receiver)
        self.port = global_reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.pool = HTTPConnectionPool(global_reactor, persistent=True)
        self.addCleanup(self.pool.closeCachedConnections)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port.getHost().port}/hook"

    def client(self, p: NetworkPolicy, resolver: Any) -> treq.client.HTTPClient:
        return treq.client.HTTPClient(policy_agent(global_reactor, p, self.pool, resolver, 5.0))

    async def test_allowed_target_receives_the_post(self) -> None:
        """A target outside the denied networks receives the POST."""
        client = self.client(policy(deny=("10.0.0.0/8",)), FakeResolver())
        response = await client.post(self.url(), data=b"[1]")
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.content(), b"ok")
        self.assertEqual([body for _, body in self.receiver.posts], [b"[1]"])

    async def test_blocked_target_receives_nothing(self) -> None:
        """A denied target is never connected to and the request fails with BlockedTarget."""
        client = self.client(policy(deny=("127.0.0.0/8",)), FakeResolver())
        with self.assertRaises(BlockedTarget) as caught:
            await client.post(self.url(), data=b"[1]")
        self.assertEqual(
            str(caught.exception), "callback_url: 127.0.0.1 is in CallbackDenyNetworks 127.0.0.0/8"
        )
        self.assertEqual((self.site.connections, self.receiver.posts), (0, []))

    async def test_name_resolving_to_blocked_address_is_blocked_at_send_time(self) -> None:
        """A name whose DNS answer is denied is blocked when sending, whatever its text."""
        p = policy(deny=("127.0.0.0/8",))
        resolver = FakeResolver({"evil.test": ["127.0.0.1"]})
        with self.assertRaises(BlockedTarget) as caught:
            await self.client(p, resolver).post(self.url("evil.test"), data=b"[1]")
        self.assertIn("127.0.0.1 (from evil.test)", str(caught.exception))
        self.assertEqual((self.site.connections, self.receiver.posts), (0, []))
        self.assertEqual(resolver.calls, ["evil.test"])

    async def test_connects_to_the_checked_address(self) -> None:
        """
        The connection goes to the address that was checked (the name is
        resolved once and never again), while the Host header keeps the name.
        """
        resolver = FakeResolver({"good.test": ["127.0.0.1"]})
        client = self.client(policy(deny=("10.0.0.0/8",)), resolver)
        for n in range(2):
            response = await client.post(self.url("good.test"), data=b"[%d]" % n)
            self.assertEqual(response.code, 200)
            await response.content()
        port = self.port.getHost().port
        self.assertEqual(
            self.receiver.posts, [(f"good.test:{port}", b"[0]"), (f"good.test:{port}", b"[1]")]
        )
        # The second POST reused the pooled, already checked connection.
        self.assertEqual((resolver.calls, self.site.connections), (["good.test"], 1))

    async def test_any_blocked_address_blocks_the_name(self) -> None:
        """A name with one denied address among allowed ones is not connected to at all."""
        resolver = FakeResolver({"mixed.test": ["127.0.0.1", "10.0.0.5"]})
        client = self.client(policy(deny=("10.0.0.0/8",)), resolver)
        with self.assertRaises(BlockedTarget) as caught:
            await client.post(self.url("mixed.test"), data=b"[1]")
        self.assertIn("10.0.0.5 (from mixed.test)", str(caught.exception))
        self.assertEqual((self.site.connections, self.receiver.posts), (0, []))

    async def test_next_checked_address_after_a_refusal(self) -> None:
        """When the first address refuses the connection, the next checked one is tried."""
        # Nothing listens on 127.0.0.2 (loopback on Linux), so it refuses at once.
        resolver = FakeResolver({"two.test": ["127.0.0.2", "127.0.0.1"]})
        client = self.client(policy(deny=("10.0.0.0/8",)), resolver)
        response = await client.post(self.url("two.test"), data=b"[2]")
        self.assertEqual(response.code, 200)
        await response.content()
        self.assertEqual([body for _, body in self.receiver.posts], [b"[2]"])

    async def test_executor_records_a_blocked_callback_as_failed(self) -> None:
        """Through the executor, a blocked callback fails once, unretried, with the reason."""
        from scheduler0.delivery import Delivery, Outcome
        from scheduler0.executor.http import HTTPExecutor

        done: Deferred[Outcome] = Deferred()
        resolver = FakeResolver({"evil.test": ["127.0.0.1"]})
        executor = HTTPExecutor(
            global_reactor, self.client(policy(deny=("127.0.0.0/8",)), resolver), done.callback
        )
        executor.submit(
            Delivery(
                execution_id="e1",
                job_uuid="j1",
                project_uuid="p1",
                name="n",
                spec="@every 1s",
                data=None,
                scheduled_at="2026-03-01T12:00:00.000Z",
                callback_url=self.url("evil.test"),
                timeout_s=5.0,
                retry_max=3,
            )
        )
        outcome = await done
        self.assertEqual(
            (outcome.state, outcome.attempts, outcome.error),
            (
                "failed",
                1,
                "callback_url: 127.0.0.1 (from evil.test) is in CallbackDenyNetworks 127.0.0.0/8",
            ),
        )
        self.assertEqual((executor.retrying(), self.site.connections), (0, 0))

    async def test_default_policy_reaches_a_loopback_receiver(self) -> None:
        """The defaults deny nothing on loopback: a 127.0.0.1 receiver gets its POST."""
        response = await self.client(policy(), FakeResolver()).post(self.url(), data=b"[2]")
        self.assertEqual(response.code, 200)
        await response.content()
        self.assertEqual([body for _, body in self.receiver.posts], [b"[2]"])

    async def test_open_policy_is_a_plain_agent(self) -> None:
        """With no rules the Agent connects as usual, without the policy resolver."""
        resolver = FakeResolver()
        response = await self.client(NetworkPolicy(), resolver).post(self.url(), data=b"[]")
        self.assertEqual(response.code, 200)
        await response.content()
        self.assertEqual((len(self.receiver.posts), resolver.calls), (1, []))

    async def test_thread_resolver(self) -> None:
        """The thread-pool resolver answers an address literal with itself."""
        self.assertEqual(await thread_resolver(global_reactor)("127.0.0.1"), ["127.0.0.1"])
