"""
Node configuration: where the file is found, what each key means, and the
checks that turn a bad file or environment variable into one clear line.

The file uses the seed's CamelCase keys; every key can be overridden by an
environment variable C{SCHEDULER0_<KEY_IN_UPPER_SNAKE>} on top of the file.
Loading reads a small local file once at start-up, before the reactor runs.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
import yaml

CONFIG_FILE_NAME = "config.yml"
CONFIG_ENV = "SCHEDULER0_CONFIG"
ENV_PREFIX = "SCHEDULER0_"

# SCHEDULER0_* variables that are not configuration keys. Any other
# SCHEDULER0_* variable that names no key stops the node, as an unknown file
# key does (see environment_variables).
RESERVED_ENV = frozenset(
    {
        CONFIG_ENV,
        # The admin credentials of .scheduler0 (scheduler0.credentials).
        "SCHEDULER0_AUTH_USERNAME",
        "SCHEDULER0_AUTH_PASSWORD",
        "SCHEDULER0_SECRET_KEY",
        "SCHEDULER0_PREVIOUS_SECRET_KEYS",
        # Where and as whom the CLI's resource commands call the API.
        "SCHEDULER0_ENDPOINT",
        "SCHEDULER0_API_KEY",
        "SCHEDULER0_API_SECRET",
    }
)

# A PeerAuthRequestTimeoutMs under this is taken to be seconds (the seed sample says 2).
_PEER_AUTH_SECONDS_BELOW = 100


class ConfigError(Exception):
    """
    A configuration the node cannot start with. C{str()} is one line meant for
    the operator: it names the key, the value and what is expected.
    """


@attrs.frozen
class Replica:
    """One voter of the initial cluster, as listed under C{Replicas}."""

    address: str
    raft_address: str
    node_id: int


#: The longest retry delay a job (and so the config's default) may have, s.
MAX_RETRY_DELAY_S = 24 * 3600


@attrs.frozen
class Config:
    """Everything one node reads from its config file and environment."""

    log_level: str = "INFO"
    protocol: str = "http"
    host: str = "127.0.0.1"
    port: int = 9091
    max_memory: float = 0
    max_cpu: float = 0
    bootstrap: bool = True
    node_id: int = 1
    raft_address: str = "127.0.0.1:7071"
    raft_transport_max_pool: int = 3
    raft_transport_timeout: float = 1
    raft_apply_timeout: float = 2
    raft_snapshot_interval: float = 120
    raft_snapshot_threshold: int = 8192
    raft_election_timeout_ms: int = 500
    raft_heartbeat_interval_ms: int = 50
    peer_connect_retry_max: int = 10
    peer_connect_retry_delay: float = 1
    peer_auth_request_timeout_ms: int = 2000
    max_clock_offset_ms: int = 500
    job_execution_timeout: float = 30
    job_execution_retry_delay: float = 1
    job_execution_retry_max: int = 10
    job_execution_retry_max_delay: float = 60
    max_workers: int = 64
    max_workers_per_url: int = 16
    max_workers_per_host: int = 32
    max_queue: int = 10000
    execution_log_fetch_fan_in: int = 2
    execution_log_fetch_interval_seconds: float = 2
    http_executor_payload_max_size_mb: float = 2
    replicas: tuple[Replica, ...] = ()
    data_dir: str = "./scheduler0-data"
    data_dir_min_free_mb: float = 64
    catch_up_window_seconds: float = 60
    execution_history_per_job: int = 100
    # Issue 19: the audit records the replicated state keeps (the newest).
    audit_log_max_entries: int = 100_000
    execution_records_max_pending: int = 100_000
    metrics_max_job_series: int = 1000
    callback_allow_networks: tuple[str, ...] = ()
    callback_deny_networks: tuple[str, ...] = ()
    callback_signing_grace_seconds: float = 86400
    max_callback_response_bytes: int = 65536
    callback_response_excerpt_bytes: int = 1024
    max_request_body_bytes: int = 4 * 1024 * 1024
    max_jobs_per_request: int = 10000
    max_json_depth: int = 32
    rate_limit_per_second: float = 1000
    rate_limit_burst: int = 2000
    auth_failure_limit: int = 5
    auth_failure_window_seconds: float = 10
    http_request_timeout_seconds: float = 30
    http_idle_timeout_seconds: float = 60
    http_endpoint: str = ""
    raft_endpoint: str = ""
    raft_tls_certificate: str = ""
    raft_tls_private_key: str = ""
    raft_tls_ca: str = ""
    source: str | None = None
    base_dir: str = "."
    warnings: tuple[str, ...] = ()

    @property
    def http_address(self) -> str:
        """This node's HTTP address as peers and the CLI reach it."""
        return f"{self.protocol}://{self.host}:{self.port}"

    def data_path(self) -> str:
        """The absolute data directory; a relative C{DataDir} is relative to C{base_dir}."""
        return os.path.abspath(os.path.join(self.base_dir, os.path.expanduser(self.data_dir)))

    def members(self) -> tuple[Replica, ...]:
        """The initial voter set: C{Replicas}, or this node alone when it is empty."""
        if self.replicas:
            return self.replicas
        return (Replica(self.http_address, self.raft_address, self.node_id),)


# ---------------------------------------------------------------------------
# Value checks. Each takes the YAML value and returns the typed value or
# raises _Invalid with the expectation text.


class _Invalid(Exception):
    """A value that does not fit its key; the message is the expectation."""


def _integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    if high is not None:
        expected = f"an integer from {low} to {high}"
    elif low is not None:
        expected = f"an integer >= {low}"
    else:
        expected = "an integer"

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(expected)
        if (low is not None and value < low) or (high is not None and value > high):
            raise _Invalid(expected)
        return value

    return check


def _number(low: float = 0, *, exclusive: bool = False) -> Callable[[Any], float]:
    expected = f"a number {'>' if exclusive else '>='} {low:g}"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(expected)
        if not math.isfinite(value) or value < low or (exclusive and value == low):
            raise _Invalid(expected)
        return float(value)

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("a non-empty string")
    return value.strip()


def _optional_text(value: Any) -> str:
    """A non-empty string, or "" when the key is empty or null (the feature is off)."""
    return "" if value in (None, "") else _text(value)


_LOG_LEVELS = {
    "ERROR": "ERROR",
    "WARN": "WARN",
    "WARNING": "WARN",
    "INFO": "INFO",
    "DEBUG": "DEBUG",
}


def _log_level(value: Any) -> str:
    if isinstance(value, str) and value.strip().upper() in _LOG_LEVELS:
        return _LOG_LEVELS[value.strip().upper()]
    raise _Invalid("one of ERROR, WARN, INFO, DEBUG")


def _protocol(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in ("http", "https"):
        return value.strip().lower()
    raise _Invalid("http or https")


def split_host_port(text: str) -> tuple[str, int]:
    """
    Split C{host:port} (or C{[v6]:port}) into its parts; raise C{ValueError}
    unless both are present and the port is 1..65535.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    bare_v6 = ":" in host and not text.strip().startswith("[")
    if not host or bare_v6 or not 1 <= port <= 65535:
        raise ValueError(text)
    return host, port


def _host_port(value: Any) -> str:
    expected = "host:port with a port from 1 to 65535"
    if not isinstance(value, str):
        raise _Invalid(expected)
    try:
        split_host_port(value)
    except ValueError:
        raise _Invalid(expected) from None
    return value.strip()


def _url(value: Any) -> str:
    expected = "an http:// or https:// URL such as http://127.0.0.1:9091"
    if not isinstance(value, str):
        raise _Invalid(expected)
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise _Invalid(expected) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid(expected)
    if port is not None and not 1 <= port <= 65535:
        raise _Invalid(expected)
    return value.strip().rstrip("/")


def _networks(value: Any) -> tuple[str, ...]:
    expected = 'a list of CIDR networks such as [10.0.0.0/8, "::1/128"]'
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        raise _Invalid(expected)
    networks = []
    for item in value:
        if not isinstance(item, str):
            raise _Invalid(expected)
        try:
            networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise _Invalid(f"{expected}; {item!r} is not a network") from None
    return tuple(networks)


_REPLICA_FIELDS = {"Address": "address", "RaftAddress": "raft_address", "NodeId": "node_id"}
_REPLICA_CHECKS: dict[str, Callable[[Any], Any]] = {
    "Address": _url,
    "RaftAddress": _host_port,
    "NodeId": _integer(1),
}


@attrs.frozen
class _Key:
    """One configuration key: its file name, attribute, check and comment."""

    name: str
    attr: str
    check: Callable[[Any], Any]
    comment: str
    aliases: tuple[str, ...] = ()
    text: bool = False  # an environment value is taken verbatim, not parsed as YAML


KEYS: tuple[_Key, ...] = (
    _Key("LogLevel", "log_level", _log_level, "ERROR, WARN, INFO or DEBUG", text=True),
    _Key(
        "Protocol",
        "protocol",
        _protocol,
        "http or https: how peers and the CLI reach this node",
        text=True,
    ),
    _Key(
        "Host", "host", _text, "host peers and the CLI use to reach this node's HTTP API", text=True
    ),
    _Key("Port", "port", _integer(1, 65535), "HTTP API port"),
    _Key(
        "MaxMemory",
        "max_memory",
        _number(0),
        "MB; at 70% RSS the node pauses new executions, resumes under 60% (0 = off)",
    ),
    _Key(
        "MaxCPU",
        "max_cpu",
        _number(0),
        "percent of one core over 5 s; same pause/resume as MaxMemory (0 = off)",
    ),
    _Key(
        "Bootstrap",
        "bootstrap",
        _boolean,
        "true: start the cluster from Replicas (on every initial member, or on one); false: join"
        " a running cluster",
    ),
    _Key("NodeId", "node_id", _integer(1), "unique positive id of this node"),
    _Key(
        "RaftAddress",
        "raft_address",
        _host_port,
        "host:port of this node's Raft listener",
        text=True,
    ),
    _Key(
        "RaftTransportMaxPool", "raft_transport_max_pool", _integer(1), "Raft connections per peer"
    ),
    _Key(
        "RaftTransportTimeout",
        "raft_transport_timeout",
        _number(0, exclusive=True),
        "s, connect/IO timeout on Raft links",
    ),
    _Key(
        "RaftApplyTimeout",
        "raft_apply_timeout",
        _number(0, exclusive=True),
        "s, a write not committed and applied by then answers 503",
    ),
    _Key(
        "RaftSnapshotInterval",
        "raft_snapshot_interval",
        _number(0, exclusive=True),
        "s; not used (snapshots follow RaftSnapshotThreshold), accepted for older files",
    ),
    _Key(
        "RaftSnapshotThreshold",
        "raft_snapshot_threshold",
        _integer(1),
        "log entries since the last snapshot that trigger a new one",
    ),
    _Key(
        "RaftElectionTimeoutMs",
        "raft_election_timeout_ms",
        _integer(1),
        "ms, base election timeout (randomized up to twice this)",
    ),
    _Key(
        "RaftHeartbeatIntervalMs",
        "raft_heartbeat_interval_ms",
        _integer(1),
        "ms between leader heartbeats; must be below RaftElectionTimeoutMs",
    ),
    _Key(
        "PeerConnectRetryMax",
        "peer_connect_retry_max",
        _integer(0),
        "attempts to reach a leader that does not answer with a forwarded write (a peer is"
        " never given up)",
    ),
    _Key(
        "PeerConnectRetryDelay",
        "peer_connect_retry_delay",
        _number(0),
        "s, the longest wait between Raft reconnection attempts",
        aliases=("PeerConnectRetryDelaySeconds",),
    ),
    _Key(
        "PeerAuthRequestTimeoutMs",
        "peer_auth_request_timeout_ms",
        _integer(1),
        "ms to wait for a peer's handshake (under 100 is read as seconds)",
    ),
    _Key(
        "MaxClockOffsetMs",
        "max_clock_offset_ms",
        _integer(1),
        "ms, the largest offset of this node's clock from the leader's at which it fires",
    ),
    _Key(
        "JobExecutionTimeout",
        "job_execution_timeout",
        _number(0, exclusive=True),
        "s per callback attempt",
    ),
    _Key(
        "JobExecutionRetryDelay",
        "job_execution_retry_delay",
        _number(0),
        "s before the first retry, doubling per attempt up to JobExecutionRetryMaxDelay",
    ),
    _Key(
        "JobExecutionRetryMax",
        "job_execution_retry_max",
        _integer(0),
        "retries after the first callback attempt",
    ),
    _Key(
        "JobExecutionRetryMaxDelay",
        "job_execution_retry_max_delay",
        _number(0),
        "s, the longest wait between two attempts (a job's default retry_max_delay_s)",
    ),
    _Key("MaxWorkers", "max_workers", _integer(1), "concurrent outbound callback requests"),
    _Key(
        "MaxWorkersPerURL",
        "max_workers_per_url",
        _integer(1),
        "concurrent callback requests to one callback URL",
    ),
    _Key(
        "MaxWorkersPerHost",
        "max_workers_per_host",
        _integer(1),
        "concurrent callback requests to one host (scheme, host and port)",
    ),
    _Key(
        "MaxQueue",
        "max_queue",
        _integer(1),
        "due executions waiting for a worker before load is shed",
    ),
    _Key(
        "ExecutionLogFetchFanIn",
        "execution_log_fetch_fan_in",
        _integer(1),
        "nodes the leader asks per tick how far they got (progress marks)",
    ),
    _Key(
        "ExecutionLogFetchIntervalSeconds",
        "execution_log_fetch_interval_seconds",
        _number(0, exclusive=True),
        "s between progress fan-in ticks",
        aliases=("ExecutionLogFetchInterval",),
    ),
    _Key(
        "HTTPExecutorPayloadMaxSizeMb",
        "http_executor_payload_max_size_mb",
        _number(0, exclusive=True),
        "MB cap on one callback request body",
    ),
    _Key(
        "Replicas",
        "replicas",
        lambda value: value,  # checked by _replicas
        "initial voters [{Address, RaftAddress, NodeId}]; empty = single node",
    ),
    _Key("DataDir", "data_dir", _text, "data directory, relative to this file", text=True),
    _Key(
        "DataDirMinFreeMB",
        "data_dir_min_free_mb",
        _number(0),
        "MB; below this much free space in DataDir writes answer 507 and the node does not"
        " start (0 = only a full disk)",
    ),
    _Key(
        "CatchUpWindowSeconds",
        "catch_up_window_seconds",
        _number(0),
        "s, default window in which missed slots still fire",
    ),
    _Key(
        "ExecutionHistoryPerJob",
        "execution_history_per_job",
        _integer(1),
        "execution records kept per job",
    ),
    _Key(
        "AuditLogMaxEntries",
        "audit_log_max_entries",
        _integer(1),
        "audit records kept (the newest), one per write made through the API",
    ),
    _Key(
        "ExecutionRecordsMaxPending",
        "execution_records_max_pending",
        _integer(1),
        "execution records held in memory while they cannot be written (a full disk);"
        " at this many the node fires no new slots until they are",
    ),
    _Key(
        "MetricsMaxJobSeries",
        "metrics_max_job_series",
        _integer(0),
        "jobs given per-job series in GET /metrics, first seen first (0 = none)",
    ),
    _Key(
        "CallbackAllowNetworks",
        "callback_allow_networks",
        _networks,
        "CIDR list callbacks may reach (empty = any but link-local/metadata; naming e.g."
        " 169.254.169.254/32 opens it)",
    ),
    _Key(
        "CallbackDenyNetworks",
        "callback_deny_networks",
        _networks,
        "CIDR list callbacks may never reach",
    ),
    _Key(
        "CallbackSigningGraceSeconds",
        "callback_signing_grace_seconds",
        _number(0),
        "s a rotated project signing secret keeps signing beside the new one",
    ),
    _Key(
        "MaxCallbackResponseBytes",
        "max_callback_response_bytes",
        _integer(0),
        "bytes of a callback's answer read at most (the rest is discarded)",
    ),
    _Key(
        "CallbackResponseExcerptBytes",
        "callback_response_excerpt_bytes",
        _integer(0),
        "bytes of a failed callback's answer kept in its execution record",
    ),
    _Key(
        "MaxRequestBodyBytes",
        "max_request_body_bytes",
        _integer(1024),
        "largest HTTP API request body; larger ones get 413",
    ),
    _Key(
        "MaxJobsPerRequest",
        "max_jobs_per_request",
        _integer(1, 100000),
        "most jobs one POST /jobs array may hold",
    ),
    _Key(
        "MaxJSONDepth",
        "max_json_depth",
        _integer(2, 1000),
        "deepest nesting of arrays and objects a request body may have",
    ),
    _Key(
        "RateLimitPerSecond",
        "rate_limit_per_second",
        _number(0),
        "API requests per second allowed per credential (0 = no limit); beyond it 429",
    ),
    _Key(
        "RateLimitBurst",
        "rate_limit_burst",
        _integer(1),
        "requests a credential may make at once above its steady rate",
    ),
    _Key(
        "AuthFailureLimit",
        "auth_failure_limit",
        _integer(0, 100000),
        "failed authentications per source address and per API key within"
        " AuthFailureWindowSeconds before their requests get 429 (0 = no throttle)",
    ),
    _Key(
        "AuthFailureWindowSeconds",
        "auth_failure_window_seconds",
        _number(0, exclusive=True),
        "s the failures are counted over, and how long a throttled address or key gets 429",
    ),
    _Key(
        "HTTPRequestTimeoutSeconds",
        "http_request_timeout_seconds",
        _number(0, exclusive=True),
        "s a client has to send a whole request (headers and body)",
    ),
    _Key(
        "HTTPIdleTimeoutSeconds",
        "http_idle_timeout_seconds",
        _number(0, exclusive=True),
        "s an idle HTTP API connection is kept open",
    ),
    _Key(
        "HTTPEndpoint",
        "http_endpoint",
        _optional_text,
        "Twisted server endpoint for the API, e.g. ssl:9443:privateKey=key.pem:certKey=cert.pem"
        " (empty = tcp on Host:Port)",
        text=True,
    ),
    _Key(
        "RaftEndpoint",
        "raft_endpoint",
        _optional_text,
        "Twisted server endpoint for Raft, e.g. tcp:7071:interface=0.0.0.0 (empty = RaftAddress)",
        text=True,
    ),
    _Key(
        "RaftTLSCertificate",
        "raft_tls_certificate",
        _optional_text,
        "PEM certificate (signed by RaftTLSCA) for TLS on Raft links (empty = no TLS)",
        text=True,
    ),
    _Key(
        "RaftTLSPrivateKey",
        "raft_tls_private_key",
        _optional_text,
        "PEM private key of RaftTLSCertificate, unencrypted",
        text=True,
    ),
    _Key(
        "RaftTLSCA",
        "raft_tls_ca",
        _optional_text,
        "PEM CA certificate(s) that sign every node's RaftTLSCertificate",
        text=True,
    ),
)

_BY_NAME: dict[str, _Key] = {}
for _key in KEYS:
    _BY_NAME[_key.name] = _key
    for _alias in _key.aliases:
        _BY_NAME[_alias] = _key

_REPLICA_EXPECTED = "a list of {Address, RaftAddress, NodeId} mappings"


def env_name(key: str) -> str:
    """
    The environment variable that overrides file key C{key}:
    C{NodeId} -> C{SCHEDULER0_NODE_ID}, C{MaxCPU} -> C{SCHEDULER0_MAX_CPU}.
    """
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", key)
    return ENV_PREFIX + snake.upper()


_BY_ENV: dict[str, str] = {env_name(name): name for name in _BY_NAME}


def environment_variables() -> frozenset[str]:
    """
    Every C{SCHEDULER0_*} variable a node or the CLI reads: one per key and
    alias, and the L{RESERVED_ENV} ones. Any other stops the node.
    """
    return frozenset(_BY_ENV) | RESERVED_ENV


def _show(value: Any) -> str:
    """A short rendering of a YAML value for an error line."""
    try:
        shown = json.dumps(value, default=str)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _suggest(name: str, choices: list[str]) -> str:
    """C{" (did you mean 'X'?)"} for the closest of C{choices}, or C{""}."""
    lowered = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


# ---------------------------------------------------------------------------
# Reading YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping with the same key twice."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                duplicate = False
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            try:
                seen.add(key)
            except TypeError:
                pass
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text, turning a syntax error into a one-line L{ConfigError}."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or e.context or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error{at}: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: YAML syntax error: {' '.join(str(e).split())}") from None


# ---------------------------------------------------------------------------
# Lookup and loading


def find_config_path(explicit: str | None, environ: Mapping[str, str], cwd: str) -> str | None:
    """
    The config file to use: C{--config}, then C{$SCHEDULER0_CONFIG}, then
    C{./config.yml}, else C{None} (embedded defaults). A path that was asked for
    but does not exist is an error rather than a silent fall-back to defaults.
    """
    for asked in (explicit, environ.get(CONFIG_ENV) or None):
        if asked:
            path = os.path.abspath(os.path.join(cwd, os.path.expanduser(asked)))
            if not os.path.isfile(path):
                what = "not a file" if os.path.exists(path) else "file not found"
                raise ConfigError(f"config: {what}: {path}")
            return path
    default = os.path.join(os.path.abspath(cwd), CONFIG_FILE_NAME)
    return default if os.path.isfile(default) else None


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Config:
    """
    Find, read and validate the node's configuration, with environment
    overrides applied on top of the file. Raise L{ConfigError} on any problem.
    """
    environ = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    found = find_config_path(path, environ, cwd)
    document: Any = None
    if found is not None:
        try:
            with open(found, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config: cannot read {found}: {e}") from None
        document = parse_yaml(text, f"config {found}")
    base_dir = os.path.dirname(found) if found else os.path.abspath(cwd)
    return config_from_mapping(document, source=found, base_dir=base_dir, environ=environ)


def config_from_mapping(
    document: Any,
    *,
    source: str | None = None,
    base_dir: str = ".",
    environ: Mapping[str, str] | None = None,
) -> Config:
    """
    Validate an already-parsed config document (a mapping of file keys, or
    C{None} for an empty file) plus environment overrides into a L{Config}.
    """
    where = f"config {source}" if source else "config"
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"{where}: the top level must be a mapping of keys such as 'Port: 9091', "
            f"not {type(document).__name__ if document is not None else 'empty'}"
        )

    # canonical key name -> (label for errors, where for errors, value, from_env)
    given: dict[str, tuple[str, str, Any, bool]] = {}
    for name, value in document.items():
        if not isinstance(name, str) or name not in _BY_NAME:
            suggestion = _suggest(str(name), list(_BY_NAME)) if isinstance(name, str) else ""
            raise ConfigError(f"{where}: unknown key {name!r}{suggestion}")
        key = _BY_NAME[name]
        if key.name in given:
            raise ConfigError(
                f"{where}: {name} and {given[key.name][0]} are the same setting; give only one"
            )
        given[key.name] = (name, where, value, False)

    warnings: list[str] = []
    env_given: dict[str, str] = {}
    for variable in sorted((environ or {}).keys()):
        if not variable.startswith(ENV_PREFIX) or variable in RESERVED_ENV:
            continue
        name = _BY_ENV.get(variable)
        if name is None:
            # A misspelt variable is as dangerous as a misspelt file key (a
            # NodeId or Replicas silently left at its default): both stop.
            hint = _suggest(variable, sorted(environment_variables()))
            raise ConfigError(
                f"environment: unknown variable {variable}{hint}; unset it or correct its name"
            )
        key = _BY_NAME[name]
        if key.name in env_given:
            raise ConfigError(
                f"environment: {variable} and {env_given[key.name]} are the same setting; "
                "set only one"
            )
        env_given[key.name] = variable
        raw = environ[variable]  # type: ignore[index]
        if key.text:
            value = raw
        else:
            try:
                value = yaml.safe_load(raw) if raw.strip() else raw
            except yaml.YAMLError:
                value = raw
        given[key.name] = (variable, "environment", value, True)

    values: dict[str, Any] = {}
    for name, (label, origin, value, _from_env) in given.items():
        key = _BY_NAME[name]
        if key.name == "Replicas":
            values["replicas"] = _replicas(value, label, origin)
            continue
        try:
            values[key.attr] = key.check(value)
        except _Invalid as e:
            raise ConfigError(
                f"{origin}: {label}: invalid value {_show(value)}; expected {e}"
            ) from None

    timeout = values.get("peer_auth_request_timeout_ms")
    if timeout is not None and timeout < _PEER_AUTH_SECONDS_BELOW:
        values["peer_auth_request_timeout_ms"] = timeout * 1000
        label = given["PeerAuthRequestTimeoutMs"][0]
        warnings.append(
            f"{label}: {timeout} is under {_PEER_AUTH_SECONDS_BELOW}, read as seconds "
            f"({timeout * 1000} ms)"
        )

    config = Config(
        **values,
        source=source,
        base_dir=os.path.abspath(base_dir),
        warnings=(),
    )
    _check_cluster(config, given, where)
    warnings.extend(_replica_notes(config))
    return attrs.evolve(config, warnings=tuple(warnings))


def _replicas(value: Any, label: str, origin: str) -> tuple[Replica, ...]:
    """Check a C{Replicas} list entry by entry, naming the entry and field at fault."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(
            f"{origin}: {label}: invalid value {_show(value)}; expected {_REPLICA_EXPECTED}"
        )
    replicas = []
    seen: dict[str, dict[Any, int]] = {"node_id": {}, "address": {}, "raft_address": {}}
    for index, entry in enumerate(value):
        at = f"{label}[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{origin}: {at}: invalid value {_show(entry)}; expected a mapping with "
                "Address, RaftAddress and NodeId"
            )
        for field in entry:
            if field not in _REPLICA_FIELDS:
                hint = _suggest(str(field), list(_REPLICA_FIELDS))
                raise ConfigError(f"{origin}: {at}: unknown key {field!r}{hint}")
        fields = {}
        for field, attr in _REPLICA_FIELDS.items():
            if field not in entry:
                raise ConfigError(f"{origin}: {at}: missing {field}")
            check = _REPLICA_CHECKS[field]
            try:
                fields[attr] = check(entry[field])
            except _Invalid as e:
                raise ConfigError(
                    f"{origin}: {at}.{field}: invalid value {_show(entry[field])}; expected {e}"
                ) from None
        for attr, field in (
            ("node_id", "NodeId"),
            ("address", "Address"),
            ("raft_address", "RaftAddress"),
        ):
            previous = seen[attr].get(fields[attr])
            if previous is not None:
                raise ConfigError(
                    f"{origin}: {at}.{field}: duplicate value {_show(fields[attr])} "
                    f"(also in {label}[{previous}]); each replica needs its own"
                )
            seen[attr][fields[attr]] = index
        replicas.append(Replica(**fields))
    return tuple(replicas)


def _check_cluster(
    config: Config, given: Mapping[str, tuple[str, str, Any, bool]], where: str
) -> None:
    """Checks that involve more than one key."""
    if config.raft_heartbeat_interval_ms >= config.raft_election_timeout_ms:
        label, origin = given.get(
            "RaftHeartbeatIntervalMs", ("RaftHeartbeatIntervalMs", where, None, False)
        )[:2]
        raise ConfigError(
            f"{origin}: {label}: invalid value {config.raft_heartbeat_interval_ms}; expected "
            f"less than RaftElectionTimeoutMs ({config.raft_election_timeout_ms})"
        )
    if config.job_execution_retry_max_delay < config.job_execution_retry_delay:
        label, origin = given.get(
            "JobExecutionRetryMaxDelay", ("JobExecutionRetryMaxDelay", where, None, False)
        )[:2]
        raise ConfigError(
            f"{origin}: {label}: invalid value {config.job_execution_retry_max_delay:g}; expected "
            f"at least JobExecutionRetryDelay ({config.job_execution_retry_delay:g})"
        )
    for key, attribute in (
        ("JobExecutionRetryDelay", "job_execution_retry_delay"),
        ("JobExecutionRetryMaxDelay", "job_execution_retry_max_delay"),
    ):
        if getattr(config, attribute) > MAX_RETRY_DELAY_S:
            label, origin = given.get(key, (key, where, None, False))[:2]
            raise ConfigError(
                f"{origin}: {label}: invalid value {getattr(config, attribute):g}; expected at "
                f"most {MAX_RETRY_DELAY_S:g} (a job's retry delays are bounded so)"
            )
    if config.replicas and config.node_id not in {r.node_id for r in config.replicas}:
        ids = ", ".join(str(r.node_id) for r in config.replicas)
        label, origin = given.get("NodeId", ("NodeId", where, None, False))[:2]
        raise ConfigError(
            f"{origin}: {label}: invalid value {config.node_id}; expected one of the "
            f"Replicas NodeIds ({ids}), or add this node to Replicas"
        )


def _replica_notes(config: Config) -> list[str]:
    """Warnings when this node's own Replicas entry disagrees with its addresses."""
    notes = []
    for replica in config.replicas:
        if replica.node_id != config.node_id:
            continue
        if replica.address != config.http_address:
            notes.append(
                f"Replicas entry for NodeId {config.node_id} has Address {replica.address} "
                f"but Protocol/Host/Port give {config.http_address}"
            )
        if replica.raft_address != config.raft_address:
            notes.append(
                f"Replicas entry for NodeId {config.node_id} has RaftAddress "
                f"{replica.raft_address} but RaftAddress is {config.raft_address}"
            )
    return notes


# ---------------------------------------------------------------------------
# The default file


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "[]" if not value else json.dumps(list(value))
    return str(value)


def render_default_config() -> str:
    """
    A config file with every key at its default and a one-line comment each,
    as written by C{scheduler0 config init}; it loads to exactly C{Config()}.
    """
    defaults = Config()
    width = max(len(f"{key.name}: {_yaml_scalar(getattr(defaults, key.attr))}") for key in KEYS)
    lines = [
        "# Scheduler0 node configuration. Every key can be overridden by an",
        "# environment variable SCHEDULER0_<KEY_IN_UPPER_SNAKE>, e.g. SCHEDULER0_NODE_ID=2.",
        "",
    ]
    for key in KEYS:
        entry = f"{key.name}: {_yaml_scalar(getattr(defaults, key.attr))}"
        lines.append(f"{entry.ljust(width)}  # {key.comment}")
        if key.name == "Replicas":
            lines.extend(
                [
                    "# Replicas:",
                    "#   - Address: http://127.0.0.1:9091",
                    "#     RaftAddress: 127.0.0.1:7071",
                    "#     NodeId: 1",
                    "#   - Address: http://127.0.0.1:9092",
                    "#     RaftAddress: 127.0.0.1:7072",
                    "#     NodeId: 2",
                ]
            )
    return "\n".join(lines) + "\n"
