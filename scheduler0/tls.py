"""
Optional TLS for the HTTP API and the Raft links, chosen in the config.

The HTTP API listens on any Twisted server endpoint string (C{HTTPEndpoint},
e.g. C{ssl:9443:privateKey=key.pem:certKey=cert.pem}).  Raft links use
mutual TLS when C{RaftTLSCertificate}, C{RaftTLSPrivateKey} and C{RaftTLSCA}
are set: each node serves its certificate, presents it when it connects, and
accepts only peers whose certificate the shared CA signed; a connecting node
also checks that the certificate names the host it dialled.  The Raft HMAC
handshake still runs inside the TLS session, so a stolen certificate alone
does not make a peer.

Relative file names are relative to the config file's directory.  Every
problem with a key, a file or a PEM is reported as a L{ConfigError} naming
the key, so the node refuses to start with one clear line.  Files are read
when the endpoints are built, which the node does once at start-up; they are
a few kilobytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint
from zope.interface import implementer

from scheduler0.config import Config, ConfigError, split_host_port

#: Arguments of an endpoint string that name files, per endpoint type; a
#: relative one is taken relative to the config file's directory.
PATH_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "ssl": ("privateKey", "certKey", "extraCertChain", "dhParameters"),
}

#: The keys that together switch Raft links to TLS.
RAFT_TLS_KEYS = ("RaftTLSCertificate", "RaftTLSPrivateKey", "RaftTLSCA")


# ---------------------------------------------------------------------------
# Endpoint strings


def _split_unescaped(text: str, separator: str, limit: int = -1) -> list[str]:
    """
    Split C{text} at each C{separator} not preceded by a backslash escape, as
    Twisted's endpoint parser does; the pieces keep their escapes.
    """
    pieces: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(char)
            current.append(next(chars, ""))
        elif char == separator and limit != 0:
            pieces.append("".join(current))
            current = []
            limit -= 1
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


def _unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        out.append(next(chars, "") if char == "\\" else char)
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


@attrs.frozen
class _Description:
    """An endpoint string taken apart: its type and its keyword file arguments."""

    kind: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, description: str) -> _Description:
        segments = tuple(_split_unescaped(description.strip(), ":"))
        return cls(_unescape(segments[0]).strip().lower(), segments)

    def keyword(self, name: str) -> str | None:
        """The (unescaped) value of keyword argument C{name}, if given."""
        for segment in self.segments[1:]:
            parts = _split_unescaped(segment, "=", limit=1)
            if len(parts) == 2 and _unescape(parts[0]) == name:
                return _unescape(parts[1])
        return None


def resolve_endpoint_paths(description: str, base_dir: str) -> str:
    """
    Rewrite the file arguments of a server endpoint string (see
    L{PATH_ARGUMENTS}) to absolute paths, a relative one taken relative to
    C{base_dir}.  An C{ssl:} string without C{privateKey} gets Twisted's
    default C{server.pem}, also relative to C{base_dir}.  Other arguments and
    other endpoint types pass through unchanged.
    """
    parsed = _Description.parse(description)
    path_names = PATH_ARGUMENTS.get(parsed.kind, ())
    if not path_names:
        return description.strip()
    segments = [parsed.segments[0]]
    for segment in parsed.segments[1:]:
        parts = _split_unescaped(segment, "=", limit=1)
        if len(parts) == 2 and _unescape(parts[0]) in path_names:
            path = os.path.expanduser(_unescape(parts[1]))
            full = os.path.abspath(os.path.join(base_dir, path))
            segment = f"{parts[0]}={_escape(full)}"
        segments.append(segment)
    if parsed.kind == "ssl" and parsed.keyword("privateKey") is None:
        segments.append(f"privateKey={_escape(os.path.join(base_dir, 'server.pem'))}")
    return ":".join(segments)


# ---------------------------------------------------------------------------
# Reading PEM files


def _resolve(config: Config, path: str) -> str:
    return os.path.abspath(os.path.join(config.base_dir, os.path.expanduser(path)))


def _read(key: str, path: str, what: str) -> bytes:
    """The bytes of a small local file, or a L{ConfigError} naming C{key}."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"{key}: {what} file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{key}: {what} path is a directory, not a file: {path}") from None
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {what} file {path}: {e.strerror or e}") from None


def _load_certificates(key: str, path: str) -> list[Any]:
    """Every certificate in a PEM file (a leaf and its chain, or CA bundle)."""
    from cryptography import x509

    data = _read(key, path, "certificate")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(
            f"{key}: {path} holds no readable PEM certificate "
            "(expected '-----BEGIN CERTIFICATE-----' blocks)"
        ) from None
    return certificates


def _load_private_key(key: str, path: str) -> Any:
    """An unencrypted PEM private key."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    data = _read(key, path, "private key")
    try:
        return load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"{key}: the private key in {path} is encrypted; the node needs it unencrypted "
            "(protect the file with its permissions instead)"
        ) from None
    except Exception:  # ValueError, UnsupportedAlgorithm: not a key we can use
        raise ConfigError(
            f"{key}: {path} holds no readable PEM private key "
            "(expected a '-----BEGIN ... PRIVATE KEY-----' block)"
        ) from None


def _public_bytes(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return bytes(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def _check_pair(
    certificate_key: str,
    certificate_path: str,
    certificate: Any,
    key_key: str,
    key_path: str,
    private_key: Any,
) -> None:
    if _public_bytes(certificate.public_key()) != _public_bytes(private_key.public_key()):
        raise ConfigError(
            f"{key_key}: the private key in {key_path} does not belong to the certificate "
            f"in {certificate_key} ({certificate_path})"
        )


def _check_dates(key: str, path: str, certificate: Any, now: datetime) -> None:
    if certificate.not_valid_after_utc <= now:
        raise ConfigError(
            f"{key}: the certificate in {path} expired on "
            f"{certificate.not_valid_after_utc.isoformat()}"
        )
    if certificate.not_valid_before_utc > now:
        raise ConfigError(
            f"{key}: the certificate in {path} is not valid before "
            f"{certificate.not_valid_before_utc.isoformat()}"
        )


def _issued_by(certificate: Any, issuer: Any) -> bool:
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except Exception:  # wrong signature, or an issuer that cannot sign
        return False
    return True


def _chains_to(chain: list[Any], authorities: list[Any]) -> bool:
    """Whether C{chain[0]} is signed by an authority, directly or through C{chain[1:]}."""
    current = chain[0]
    intermediates = list(chain[1:])
    for _ in range(len(chain)):
        if any(_issued_by(current, authority) for authority in authorities):
            return True
        parent = next((c for c in intermediates if _issued_by(current, c)), None)
        if parent is None:
            return False
        intermediates.remove(parent)
        current = parent
    return False


# ---------------------------------------------------------------------------
# Raft TLS material


@attrs.frozen
class RaftTLS:
    """
    What a node needs for TLS on its Raft links: its own certificate (with
    any intermediates) and key, and the cluster CA certificates peers must
    chain to.  Values are Twisted's C{ssl} types.
    """

    certificate: Any  # twisted.internet.ssl.PrivateCertificate
    chain: tuple[Any, ...]  # OpenSSL X509 intermediates sent after the leaf
    authorities: tuple[Any, ...]  # twisted.internet.ssl.Certificate

    def server_options(self) -> Any:
        """Options for the listener: serve our certificate, require a CA-signed client."""
        from twisted.internet.ssl import CertificateOptions, trustRootFromCertificates

        return CertificateOptions(
            privateKey=self.certificate.privateKey.original,
            certificate=self.certificate.original,
            extraCertChain=list(self.chain),
            trustRoot=trustRootFromCertificates(list(self.authorities)),
        )

    def client_options(self, host: str) -> Any:
        """Options for dialling C{host}: present our certificate, verify the peer's."""
        from twisted.internet.ssl import optionsForClientTLS, trustRootFromCertificates

        return optionsForClientTLS(
            host,
            trustRoot=trustRootFromCertificates(list(self.authorities)),
            clientCertificate=self.certificate,
            extraCertificateOptions={"extraCertChain": list(self.chain)},
        )


def load_raft_tls(config: Config, now: datetime | None = None) -> RaftTLS | None:
    """
    Read and check the Raft TLS files, or return C{None} when Raft TLS is off
    (none of L{RAFT_TLS_KEYS} is set).  Raise L{ConfigError} when only some
    keys are set, a file is missing or unreadable, the key does not match the
    certificate, the certificate is out of its validity dates, or the CA did
    not sign it.
    """
    from OpenSSL.crypto import X509, PKey
    from twisted.internet.ssl import Certificate, KeyPair, PrivateCertificate

    values = {
        "RaftTLSCertificate": config.raft_tls_certificate,
        "RaftTLSPrivateKey": config.raft_tls_private_key,
        "RaftTLSCA": config.raft_tls_ca,
    }
    given = [key for key, value in values.items() if value]
    if not given:
        return None
    missing = [key for key in RAFT_TLS_KEYS if key not in given]
    if missing:
        raise ConfigError(
            f"{missing[0]}: missing; Raft TLS needs {', '.join(RAFT_TLS_KEYS)} all set "
            f"({', '.join(given)} {'is' if len(given) == 1 else 'are'} set)"
        )
    now = now or datetime.now(UTC)
    certificate_path = _resolve(config, config.raft_tls_certificate)
    key_path = _resolve(config, config.raft_tls_private_key)
    ca_path = _resolve(config, config.raft_tls_ca)
    chain = _load_certificates("RaftTLSCertificate", certificate_path)
    private_key = _load_private_key("RaftTLSPrivateKey", key_path)
    authorities = _load_certificates("RaftTLSCA", ca_path)
    _check_pair(
        "RaftTLSCertificate", certificate_path, chain[0], "RaftTLSPrivateKey", key_path, private_key
    )
    _check_dates("RaftTLSCertificate", certificate_path, chain[0], now)
    for authority in authorities:
        _check_dates("RaftTLSCA", ca_path, authority, now)
    if not _chains_to(chain, authorities):
        raise ConfigError(
            f"RaftTLSCertificate: the certificate in {certificate_path} is not signed by "
            f"a certificate in RaftTLSCA ({ca_path}); peers would refuse this node"
        )
    return RaftTLS(
        certificate=PrivateCertificate.fromCertificateAndKeyPair(
            Certificate(X509.from_cryptography(chain[0])),
            KeyPair(PKey.from_cryptography_key(private_key)),
        ),
        chain=tuple(X509.from_cryptography(c) for c in chain[1:]),
        authorities=tuple(Certificate(X509.from_cryptography(a)) for a in authorities),
    )


# ---------------------------------------------------------------------------
# Endpoints


@implementer(IStreamServerEndpoint)
@attrs.frozen
class TLSServerEndpoint:
    """Any stream server endpoint with TLS (from C{options}) on every connection."""

    wrapped: Any
    options: Any

    def listen(self, factory: Any) -> Any:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self.wrapped.listen(TLSMemoryBIOFactory(self.options, False, factory))


def _server_from_string(reactor: Any, key: str, description: str) -> Any:
    try:
        return serverFromString(reactor, description)
    except Exception as e:  # Twisted raises ValueError, TypeError, KeyError, OSError...
        reason = str(e) or type(e).__name__
        raise ConfigError(f"{key}: invalid endpoint {description!r}: {reason}") from None


def _tcp_server(reactor: Any, host: str, port: int) -> Any:
    endpoint_class = TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint
    return endpoint_class(reactor, port, interface=host)


def _check_ssl_files(key: str, description: str) -> None:
    """Read the certificate and key an C{ssl:} string names, for a clear start-up error."""
    parsed = _Description.parse(description)
    if parsed.kind != "ssl":
        return
    private_key_path = parsed.keyword("privateKey")
    assert private_key_path is not None  # resolve_endpoint_paths adds the default
    certificate_path = parsed.keyword("certKey") or private_key_path
    private_key = _load_private_key(f"{key} privateKey", private_key_path)
    chain = _load_certificates(f"{key} certKey", certificate_path)
    _check_pair(
        f"{key} certKey",
        certificate_path,
        chain[0],
        f"{key} privateKey",
        private_key_path,
        private_key,
    )
    extra = parsed.keyword("extraCertChain")
    if extra is not None:
        _load_certificates(f"{key} extraCertChain", extra)


def api_server_endpoint(reactor: Any, config: Config) -> IStreamServerEndpoint:
    """
    Where the HTTP API listens: the C{HTTPEndpoint} string (file arguments
    relative to the config file), or plain TCP on C{Host}:C{Port} when it is
    empty.  Raise L{ConfigError} naming C{HTTPEndpoint} when it cannot be used.
    """
    if not config.http_endpoint:
        return _tcp_server(reactor, config.host, config.port)
    description = resolve_endpoint_paths(config.http_endpoint, config.base_dir)
    _check_ssl_files("HTTPEndpoint", description)
    return _server_from_string(reactor, "HTTPEndpoint", description)


def raft_server_endpoint(
    reactor: Any, config: Config, tls: RaftTLS | None = None
) -> IStreamServerEndpoint:
    """
    Where the Raft listener listens: the C{RaftEndpoint} string, or TCP on
    C{RaftAddress}; with Raft TLS on, every accepted connection is TLS and
    must present a certificate the CA signed.  C{tls} is what
    L{load_raft_tls} returned (loaded here when not given).
    """
    if tls is None:
        tls = load_raft_tls(config)
    if config.raft_endpoint:
        kind = _Description.parse(config.raft_endpoint).kind
        if kind == "ssl":
            raise ConfigError(
                f"RaftEndpoint: invalid endpoint {config.raft_endpoint!r}: an ssl: endpoint "
                "does not check peers' certificates; use a tcp: endpoint and set "
                f"{', '.join(RAFT_TLS_KEYS)}"
            )
        description = resolve_endpoint_paths(config.raft_endpoint, config.base_dir)
        endpoint = _server_from_string(reactor, "RaftEndpoint", description)
    else:
        host, port = split_host_port(config.raft_address)
        endpoint = _tcp_server(reactor, host, port)
    if tls is None:
        return endpoint
    return TLSServerEndpoint(endpoint, tls.server_options())


def raft_client_endpoint_factory(
    reactor: Any, config: Config, tls: RaftTLS | None = None
) -> Callable[[str, int], IStreamClientEndpoint]:
    """
    How this node dials a peer's Raft listener: C{factory(host, port)} gives
    a TCP endpoint (timeout C{RaftTransportTimeout}), wrapped in TLS that
    presents this node's certificate and verifies the peer's against the CA
    and C{host} when Raft TLS is on.  Pass it to C{RaftTransport} as
    C{connect_endpoint_factory}.
    """
    if tls is None:
        tls = load_raft_tls(config)
    timeout = config.raft_transport_timeout
    client_options: dict[str, Any] = {}

    def factory(host: str, port: int) -> IStreamClientEndpoint:
        endpoint_class = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        endpoint = endpoint_class(reactor, host, port, timeout=timeout)
        if tls is None:
            return endpoint
        options = client_options.get(host)
        if options is None:
            options = client_options[host] = tls.client_options(host)
        return wrapClientTLS(options, endpoint)

    return factory


def check_tls_config(config: Config) -> None:
    """
    Check every TLS-related key now, so a node with a bad certificate path
    or endpoint string refuses to start with one line naming the key.  Call
    it where the config is loaded (it reads the PEM files).
    """
    api_server_endpoint(None, config)
    tls = load_raft_tls(config)
    raft_server_endpoint(None, config, tls)
    if tls is not None:
        try:
            tls.server_options().getContext()
        except Exception as e:
            raise ConfigError(
                f"RaftTLSCertificate: OpenSSL cannot use this certificate and key: {e}"
            ) from None


def endpoint_warnings(config: Config) -> list[str]:
    """
    Lines worth logging at start-up when C{Protocol} and C{HTTPEndpoint}
    disagree: peers and the CLI reach the node by C{Protocol://Host:Port}.
    Not errors, since a proxy in front of the node may add or remove TLS.
    """
    serves_tls = bool(config.http_endpoint) and (
        _Description.parse(config.http_endpoint).kind == "ssl"
    )
    if serves_tls and config.protocol != "https":
        return [
            f"HTTPEndpoint serves TLS but Protocol is {config.protocol}; peers and the CLI "
            f"will call {config.http_address}"
        ]
    if config.protocol == "https" and not serves_tls:
        return [
            "Protocol is https but HTTPEndpoint does not serve TLS; peers and the CLI will "
            f"call {config.http_address} (fine only behind a TLS proxy)"
        ]
    return []
