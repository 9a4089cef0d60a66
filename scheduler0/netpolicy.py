"""
Where callbacks may go: the C{CallbackAllowNetworks} / C{CallbackDenyNetworks}
policy.

A job's C{callback_url} is checked twice. When a job is created or updated,
L{check_url} gives the API a clear error for a URL that is plainly off
limits. That check cannot be the real guard, because a name may resolve to
something else later (DNS rebinding), so L{policy_agent} checks again when a
connection is made: it resolves the host once, refuses the connection if any
address is off limits, and connects to the checked address itself, never to
the name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.threads import deferToThreadPool
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: A host name resolver: a name in, a Deferred list of address strings out.
Resolver = Callable[[str], "Deferred[list[str]]"]

#: Names that mean this machine without asking DNS.
LOCALHOST_NAMES = frozenset({"localhost", "localhost."})
LOCALHOST_ADDRESSES = ("127.0.0.1", "::1")

#: How many networks an "is not in CallbackAllowNetworks" message lists.
_LISTED_NETWORKS = 4

#: Networks no callback reaches unless CallbackAllowNetworks names them:
#: link-local addresses and the cloud metadata services that live there.
#: 169.254.169.254 is the metadata address of AWS, GCP, Azure, Oracle Cloud
#: and DigitalOcean (and 169.254.170.2 AWS ECS task credentials).
DEFAULT_DENY_NETWORKS: tuple[tuple[str, str], ...] = (
    ("169.254.0.0/16", "IPv4 link-local, cloud metadata 169.254.169.254"),
    ("fe80::/10", "IPv6 link-local"),
    ("fd00:ec2::254/128", "AWS metadata over IPv6"),
    ("100.100.100.200/32", "Alibaba Cloud metadata"),
)


class BlockedTarget(Exception):
    """
    A callback was refused because its host is, or resolves to, an address
    the network policy does not allow.
    """

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(host, address, reason)
        self.host = host
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return f"callback_url: {describe_block(self.host, self.address, self.reason)}"


def describe_block(host: str, address: str, reason: str) -> str:
    """One line naming the address, the host it came from (if a name) and the rule."""
    if _same_host(host, address):
        return f"{address} {reason}"
    return f"{address} (from {host}) {reason}"


def _same_host(host: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address(address)
    except ValueError:
        return False


def _judged_address(ip_str: str) -> IPAddress:
    """The address as the policy judges it: IPv4-mapped IPv6 counts as its IPv4 address."""
    address = ipaddress.ip_address(ip_str.strip().strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse_networks(strings: Iterable[str], key: str) -> tuple[IPNetwork, ...]:
    networks = []
    for text in strings:
        try:
            networks.append(ipaddress.ip_network(str(text).strip(), strict=False))
        except ValueError as error:
            raise ValueError(
                f"{key}: {text!r} is not a CIDR network or IP address ({error})"
            ) from None
    return tuple(networks)


def _mapped_to_ipv4(network: IPNetwork) -> IPNetwork:
    """A network of IPv4-mapped IPv6 addresses (::ffff:0:0/96 or narrower) as IPv4."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


@attrs.frozen
class NetworkPolicy:
    """
    The allowed and denied networks for callback targets. An empty C{allow}
    allows every address; C{deny} wins over C{allow}. An address in one of
    C{default_deny} (L{DEFAULT_DENY_NETWORKS} when built from the config) is
    refused unless an C{allow} network inside that default network covers
    it: C{0.0.0.0/0} does not open the metadata service, C{169.254.0.0/16}
    or C{169.254.10.0/24} does.
    """

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    default_deny: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_config(
        cls, allow_strings: Iterable[str], deny_strings: Iterable[str]
    ) -> NetworkPolicy:
        """
        Build a policy from C{callback_allow_networks} / C{callback_deny_networks}
        (CIDR strings or bare IPs); raise C{ValueError} naming the key for a bad entry.
        """
        allow = _parse_networks(allow_strings, "CallbackAllowNetworks")
        deny = _parse_networks(deny_strings, "CallbackDenyNetworks")
        return cls(
            allow=tuple(_mapped_to_ipv4(n) for n in allow),
            deny=tuple(_mapped_to_ipv4(n) for n in deny),
            default_deny=tuple(
                ipaddress.ip_network(network) for network, _why in DEFAULT_DENY_NETWORKS
            ),
        )

    @property
    def is_open(self) -> bool:
        """No rules at all: every address is allowed and nothing needs resolving."""
        return not self.allow and not self.deny and not self.default_deny

    def _default_denial(self, address: IPAddress) -> str | None:
        """The reason a default-denied address is refused, unless an allow entry opens it."""
        for network in self.default_deny:
            if address not in network:
                continue
            opened = any(
                address in allowed
                and allowed.version == network.version
                and allowed.prefixlen >= network.prefixlen
                for allowed in self.allow
            )
            if not opened:
                return (
                    f"is in the default deny list {network}"
                    " (link-local and cloud metadata; name it in CallbackAllowNetworks to allow it)"
                )
        return None

    def allows_address(self, ip_str: str) -> str | None:
        """
        C{None} when the address may be called back, else the reason, e.g.
        C{"is in CallbackDenyNetworks 10.0.0.0/8"}. Text that is not an IP
        address is refused.
        """
        if self.is_open:
            return None
        try:
            address = _judged_address(ip_str)
        except ValueError:
            return "is not an IP address"
        for network in self.deny:
            if address in network:
                return f"is in CallbackDenyNetworks {network}"
        denied = self._default_denial(address)
        if denied is not None:
            return denied
        if self.allow and not any(address in network for network in self.allow):
            listed = ", ".join(str(n) for n in self.allow[:_LISTED_NETWORKS])
            more = len(self.allow) - _LISTED_NETWORKS
            if more > 0:
                listed += f" and {more} more"
            return f"is not in CallbackAllowNetworks ({listed})"
        return None


def _literal_address(host: str) -> str | None:
    """The host as an address string when it is an IP literal, else C{None}."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


async def _target_addresses(host: str, resolve: Resolver) -> list[str]:
    """The addresses a host name stands for: itself if a literal, localhost fixed, else DNS."""
    literal = _literal_address(host)
    if literal is not None:
        return [literal]
    if host.lower() in LOCALHOST_NAMES:
        return list(LOCALHOST_ADDRESSES)
    addresses = await resolve(host)
    if not addresses:
        raise DNSLookupError(f"{host}: no addresses")
    return list(addresses)


def _first_block(policy: NetworkPolicy, addresses: Sequence[str]) -> tuple[str, str] | None:
    for address in addresses:
        reason = policy.allows_address(address)
        if reason is not None:
            return address, reason
    return None


async def check_host(policy: NetworkPolicy, host: str, resolve: Resolver) -> str | None:
    """
    The static check of one host: C{None} when it may be called back (or
    does not resolve now), else one line naming the address and the rule.
    """
    if policy.is_open:
        return None
    try:
        addresses = await _target_addresses(host, resolve)
    except Exception:
        # Not resolvable now: accepted, and checked again when a callback is sent.
        return None
    blocked = _first_block(policy, addresses)
    if blocked is None:
        return None
    return describe_block(host, *blocked)


def _url_host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


async def check_url(policy: NetworkPolicy, url: str, resolve: Resolver) -> str | None:
    """
    Check a job's C{callback_url} on create/update: C{None} when it is
    accepted, else the reason (without the field name), e.g.
    C{"10.0.0.5 (from internal.example) is in CallbackDenyNetworks 10.0.0.0/8"}.
    Every address a name resolves to must be allowed; a name that does not
    resolve is accepted (it is checked again at send time).
    """
    if policy.is_open:
        return None
    host = _url_host(url)
    if not host:
        return None  # the URL checks report a URL without a host
    return await check_host(policy, host, resolve)


async def check_urls(
    policy: NetworkPolicy, urls: Sequence[str], resolve: Resolver
) -> list[str | None]:
    """L{check_url} for many URLs (a bulk job create), resolving each distinct host once."""
    if policy.is_open:
        return [None] * len(urls)
    hosts = [_url_host(url) for url in urls]
    pending: dict[str, Deferred[str | None]] = {}
    for host in hosts:
        if host and host not in pending:
            pending[host] = Deferred.fromCoroutine(check_host(policy, host, resolve))
    verdicts = {host: await verdict for host, verdict in pending.items()}
    return [verdicts[host] if host else None for host in hosts]


def _lookup(host: str, getaddrinfo: Callable[..., Any] = socket.getaddrinfo) -> list[str]:
    """Resolve C{host} to its unique addresses, in the resolver's order (blocking)."""
    try:
        infos = getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise DNSLookupError(f"{host}: {error}") from None
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DNSLookupError(f"{host}: no addresses")
    return addresses


def thread_resolver(reactor: Any) -> Resolver:
    """
    A resolver that runs C{socket.getaddrinfo} in the reactor's thread pool;
    a failed lookup fails with C{DNSLookupError}.
    """

    def resolve(host: str) -> Deferred[list[str]]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), _lookup, host)

    return resolve


@implementer(IStreamClientEndpoint)
@attrs.define(eq=False)
class _CheckedEndpoint:
    """
    Connect to a host only at addresses the policy allows: resolve once,
    refuse if any address is blocked, then connect to the addresses
    themselves (in order, until one answers).
    """

    reactor: Any
    policy: NetworkPolicy
    resolve: Resolver
    host: str
    port: int
    connect_timeout: float
    tls: Any = None

    def connect(self, protocol_factory: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._connect(protocol_factory))

    async def _connect(self, protocol_factory: Any) -> Any:
        addresses = await _target_addresses(self.host, self.resolve)
        blocked = _first_block(self.policy, addresses)
        if blocked is not None:
            raise BlockedTarget(self.host, *blocked)
        last_error: BaseException | None = None
        for address in addresses:
            endpoint = self._endpoint_for(address)
            try:
                return await endpoint.connect(protocol_factory)
            except ConnectError as error:
                last_error = error
        assert last_error is not None
        raise last_error

    def _endpoint_for(self, address: str) -> Any:
        endpoint: Any
        if isinstance(ipaddress.ip_address(address.split("%", 1)[0]), ipaddress.IPv6Address):
            endpoint = TCP6ClientEndpoint(
                self.reactor, address, self.port, timeout=self.connect_timeout
            )
        else:
            endpoint = TCP4ClientEndpoint(
                self.reactor, address, self.port, timeout=self.connect_timeout
            )
        if self.tls is not None:
            endpoint = wrapClientTLS(self.tls, endpoint)
        return endpoint


@implementer(IAgentEndpointFactory)
@attrs.define(eq=False)
class _CheckedEndpointFactory:
    """Endpoints for an Agent that check every new connection against the policy."""

    reactor: Any
    policy: NetworkPolicy
    resolve: Resolver
    connect_timeout: float
    tls_policy: IPolicyForHTTPS

    def endpointForURI(self, uri: Any) -> _CheckedEndpoint:
        host = uri.host.decode("ascii") if isinstance(uri.host, bytes) else str(uri.host)
        tls = None
        if uri.scheme == b"https":
            # SNI and the certificate check use the name from the URL.
            tls = self.tls_policy.creatorForNetloc(uri.host, uri.port)
        elif uri.scheme != b"http":
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme.decode('ascii', 'replace')}")
        return _CheckedEndpoint(
            self.reactor, self.policy, self.resolve, host, uri.port, self.connect_timeout, tls
        )


def policy_agent(
    reactor: Any,
    policy: NetworkPolicy,
    pool: HTTPConnectionPool | None,
    resolve: Resolver,
    connect_timeout: float,
    tls_policy: IPolicyForHTTPS | None = None,
) -> IAgent:
    """
    An Agent for callbacks that enforces C{policy} on every new connection
    (failing it with L{BlockedTarget}); with an open policy, a plain Agent.
    C{tls_policy} defaults to the platform trust store with hostname checks.
    """
    tls_policy = tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()
    if policy.is_open:
        return Agent(reactor, contextFactory=tls_policy, connectTimeout=connect_timeout, pool=pool)
    factory = _CheckedEndpointFactory(reactor, policy, resolve, connect_timeout, tls_policy)
    return Agent.usingEndpointFactory(reactor, factory, pool=pool)
