"""
Tests for L{scheduler0.config} and L{scheduler0.credentials}.
"""

from __future__ import annotations

import os
import re
import stat
import textwrap

import attrs
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.config import (
    KEYS,
    Config,
    ConfigError,
    Replica,
    config_from_mapping,
    env_name,
    environment_variables,
    find_config_path,
    load_config,
    render_default_config,
    split_host_port,
)
from scheduler0.credentials import (
    PREVIOUS_KEYS_VARIABLE,
    AdminCredentials,
    CredentialsError,
    credentials_path,
    ensure_admin_credentials,
    generate_admin_credentials,
    load_admin_credentials,
    save_admin_credentials,
    token,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The sample from the seed README, unchanged.
SEED_SAMPLE = """\
LogLevel: DEBUG
Protocol: http
Host: 127.0.0.1
Port: 9091
MaxMemory: 5000
MaxCPU: 50
Bootstrap: true
NodeId: 1
RaftAddress: 127.0.0.1:7071
RaftTransportMaxPool: 100
RaftTransportTimeout: 1
RaftApplyTimeout: 2
RaftSnapshotInterval: 1
RaftSnapshotThreshold: 1
PeerConnectRetryMax: 2
PeerConnectRetryDelay: 1
PeerAuthRequestTimeoutMs: 2
JobExecutionTimeout: 30
JobExecutionRetryDelay: 1
JobExecutionRetryMax: 10
MaxWorkers: 1
MaxQueue: 1
ExecutionLogFetchFanIn: 2
ExecutionLogFetchIntervalSeconds: 2
HTTPExecutorPayloadMaxSizeMb: 2
Replicas:
  - Address: http://127.0.0.1:9091
    RaftAddress: 127.0.0.1:7071
    NodeId: 1
  - Address: http://127.0.0.1:9092
    RaftAddress: 127.0.0.1:7072
    NodeId: 2
  - Address: http://127.0.0.1:9093
    RaftAddress: 127.0.0.1:7073
    NodeId: 3
"""


class _Directory:
    """Helpers for a fresh directory per test."""

    def make_dir(self) -> str:
        path = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(path)
        return path

    def write(self, directory: str, text: str, name: str = "config.yml") -> str:
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))
        if name == ".scheduler0":
            # As `scheduler0 credential init` writes it; other modes are refused.
            os.chmod(path, 0o600)
        return path

    def load_text(self, text: str, environ: dict[str, str] | None = None) -> Config:
        directory = self.make_dir()
        self.write(directory, text)
        return load_config(None, environ or {}, directory)

    def error_for(self, text: str, environ: dict[str, str] | None = None) -> str:
        directory = self.make_dir()
        self.write(directory, text)
        error = self.assertRaises(  # type: ignore[attr-defined]
            ConfigError, load_config, None, environ or {}, directory
        )
        message = str(error)
        self.assertNotIn("\n", message)  # type: ignore[attr-defined]
        return message


class LookupTests(_Directory, SynchronousTestCase):
    """Where the config file comes from."""

    def test_no_file_anywhere_gives_defaults(self) -> None:
        """With no file and no variables the node runs on embedded defaults."""
        directory = self.make_dir()
        config = load_config(None, {}, directory)
        self.assertEqual(config, Config(base_dir=directory))
        self.assertIsNone(config.source)
        self.assertEqual(config.http_address, "http://127.0.0.1:9091")
        self.assertEqual(config.data_path(), os.path.join(directory, "scheduler0-data"))

    def test_cwd_config_yml_is_found(self) -> None:
        """./config.yml is used when nothing else names a file."""
        directory = self.make_dir()
        path = self.write(directory, "Port: 9100\n")
        self.assertEqual(find_config_path(None, {}, directory), path)
        self.assertEqual(load_config(None, {}, directory).port, 9100)

    def test_environment_variable_beats_cwd(self) -> None:
        """$SCHEDULER0_CONFIG is preferred over ./config.yml."""
        directory = self.make_dir()
        self.write(directory, "Port: 9100\n")
        other = self.write(directory, "Port: 9200\n", name="other.yml")
        environ = {"SCHEDULER0_CONFIG": "other.yml"}
        self.assertEqual(find_config_path(None, environ, directory), other)
        self.assertEqual(load_config(None, environ, directory).port, 9200)

    def test_explicit_path_beats_everything(self) -> None:
        """--config is preferred over $SCHEDULER0_CONFIG and ./config.yml."""
        directory = self.make_dir()
        self.write(directory, "Port: 9100\n")
        self.write(directory, "Port: 9200\n", name="other.yml")
        chosen = self.write(directory, "Port: 9300\n", name="chosen.yml")
        environ = {"SCHEDULER0_CONFIG": "other.yml"}
        self.assertEqual(find_config_path("chosen.yml", environ, directory), chosen)
        config = load_config("chosen.yml", environ, directory)
        self.assertEqual((config.port, config.source), (9300, chosen))

    def test_explicit_missing_file_is_an_error(self) -> None:
        """A --config path that does not exist is an error, not a silent fall-back."""
        directory = self.make_dir()
        error = self.assertRaises(ConfigError, load_config, "missing.yml", {}, directory)
        self.assertEqual(str(error), f"config: file not found: {directory}/missing.yml")

    def test_environment_missing_file_is_an_error(self) -> None:
        """A $SCHEDULER0_CONFIG that does not exist is an error too."""
        directory = self.make_dir()
        error = self.assertRaises(
            ConfigError, find_config_path, None, {"SCHEDULER0_CONFIG": "/nope.yml"}, directory
        )
        self.assertEqual(str(error), "config: file not found: /nope.yml")

    def test_base_dir_is_the_file_directory(self) -> None:
        """A relative DataDir resolves beside the config file, not the working directory."""
        directory = self.make_dir()
        nested = os.path.join(directory, "etc")
        os.makedirs(nested)
        self.write(nested, "DataDir: data\n")
        config = load_config("etc/config.yml", {}, directory)
        self.assertEqual(config.base_dir, nested)
        self.assertEqual(config.data_path(), os.path.join(nested, "data"))

    def test_absolute_data_dir_is_kept(self) -> None:
        """An absolute DataDir is used as is."""
        config = self.load_text("DataDir: /var/lib/s0\n")
        self.assertEqual(config.data_path(), "/var/lib/s0")

    def test_empty_file_gives_defaults(self) -> None:
        """An empty file (or only comments) means every key at its default."""
        config = self.load_text("# nothing here\n")
        self.assertEqual(attrs.evolve(config, source=None, base_dir="."), Config())


class SampleTests(_Directory, SynchronousTestCase):
    """The seed's sample and the project's own default file."""

    def test_seed_sample_loads_unchanged(self) -> None:
        """The seed README's sample config is accepted as written."""
        config = self.load_text(SEED_SAMPLE)
        self.assertEqual(config.log_level, "DEBUG")
        self.assertEqual(config.max_memory, 5000)
        self.assertEqual(config.max_cpu, 50)
        self.assertEqual(config.raft_transport_max_pool, 100)
        self.assertEqual(config.raft_snapshot_interval, 1)
        self.assertEqual(config.max_queue, 1)
        self.assertEqual(
            config.replicas,
            (
                Replica("http://127.0.0.1:9091", "127.0.0.1:7071", 1),
                Replica("http://127.0.0.1:9092", "127.0.0.1:7072", 2),
                Replica("http://127.0.0.1:9093", "127.0.0.1:7073", 3),
            ),
        )

    def test_seed_peer_auth_timeout_is_read_as_seconds(self) -> None:
        """PeerAuthRequestTimeoutMs: 2 means 2 s, with a warning saying so."""
        config = self.load_text(SEED_SAMPLE)
        self.assertEqual(config.peer_auth_request_timeout_ms, 2000)
        self.assertEqual(len(config.warnings), 1)
        self.assertIn("PeerAuthRequestTimeoutMs", config.warnings[0])
        self.assertIn("2000 ms", config.warnings[0])

    def test_large_peer_auth_timeout_is_milliseconds(self) -> None:
        """A PeerAuthRequestTimeoutMs of 100 or more is milliseconds, without a warning."""
        config = self.load_text("PeerAuthRequestTimeoutMs: 150\n")
        self.assertEqual((config.peer_auth_request_timeout_ms, config.warnings), (150, ()))

    def test_rendered_default_config_loads_to_defaults(self) -> None:
        """The file `config init` writes holds every key and loads to the defaults."""
        text = render_default_config()
        for key in KEYS:
            self.assertIn(f"\n{key.name}: ", text)
        config = self.load_text(text)
        self.assertEqual(attrs.evolve(config, source=None, base_dir="."), Config())
        self.assertEqual(config.warnings, ())

    def test_repository_config_yml_is_what_config_init_writes(self) -> None:
        """
        The repository's config.yml is exactly C{scheduler0 config init}'s
        file, so its defaults and comments come from the key table and
        cannot drift from it (regenerate it after changing a key).
        """
        with open(os.path.join(REPO_ROOT, "config.yml"), encoding="utf-8") as f:
            self.assertEqual(f.read(), render_default_config())

    def test_repository_config_yml_loads_to_defaults(self) -> None:
        """The repository's config.yml is valid and describes the defaults."""
        path = os.path.join(REPO_ROOT, "config.yml")
        config = load_config(path, {}, REPO_ROOT)
        self.assertEqual(attrs.evolve(config, source=None, base_dir="."), Config())

    def test_members_of_a_single_node(self) -> None:
        """Without Replicas the cluster is this node alone."""
        self.assertEqual(
            Config().members(), (Replica("http://127.0.0.1:9091", "127.0.0.1:7071", 1),)
        )

    def test_aliases(self) -> None:
        """The seed-era alias names set the same settings."""
        config = self.load_text("PeerConnectRetryDelaySeconds: 3\nExecutionLogFetchInterval: 4\n")
        self.assertEqual(config.peer_connect_retry_delay, 3)
        self.assertEqual(config.execution_log_fetch_interval_seconds, 4)

    def test_case_insensitive_enums_are_normalized(self) -> None:
        """LogLevel and Protocol are case-insensitive and stored in canonical case."""
        config = self.load_text("LogLevel: debug\nProtocol: HTTPS\n")
        self.assertEqual((config.log_level, config.protocol), ("DEBUG", "https"))
        self.assertEqual(config.http_address, "https://127.0.0.1:9091")

    def test_networks_are_parsed(self) -> None:
        """Callback network lists hold normalized CIDR strings."""
        config = self.load_text("CallbackDenyNetworks: [169.254.169.254, 10.1.2.3/8]\n")
        self.assertEqual(config.callback_deny_networks, ("169.254.169.254/32", "10.0.0.0/8"))


class EnvironmentTests(_Directory, SynchronousTestCase):
    """SCHEDULER0_* variables on top of the file."""

    def test_env_names(self) -> None:
        """File keys map to upper snake case variables."""
        self.assertEqual(env_name("NodeId"), "SCHEDULER0_NODE_ID")
        self.assertEqual(env_name("MaxCPU"), "SCHEDULER0_MAX_CPU")
        self.assertEqual(
            env_name("HTTPExecutorPayloadMaxSizeMb"), "SCHEDULER0_HTTP_EXECUTOR_PAYLOAD_MAX_SIZE_MB"
        )
        self.assertEqual(env_name("RaftAddress"), "SCHEDULER0_RAFT_ADDRESS")
        self.assertEqual(
            env_name("ExecutionLogFetchFanIn"), "SCHEDULER0_EXECUTION_LOG_FETCH_FAN_IN"
        )

    def test_environment_overrides_the_file(self) -> None:
        """A variable replaces the file's value; other file keys still apply."""
        config = self.load_text(
            SEED_SAMPLE,
            {
                "SCHEDULER0_NODE_ID": "2",
                "SCHEDULER0_MAX_CPU": "12.5",
                "SCHEDULER0_HTTP_EXECUTOR_PAYLOAD_MAX_SIZE_MB": "8",
                "SCHEDULER0_RAFT_ADDRESS": "127.0.0.1:7072",
                "SCHEDULER0_PORT": "9092",
                "SCHEDULER0_BOOTSTRAP": "false",
            },
        )
        self.assertEqual(config.node_id, 2)
        self.assertEqual(config.max_cpu, 12.5)
        self.assertEqual(config.http_executor_payload_max_size_mb, 8)
        self.assertEqual(config.raft_address, "127.0.0.1:7072")
        self.assertEqual(config.port, 9092)
        self.assertIs(config.bootstrap, False)
        self.assertEqual(config.max_memory, 5000)  # from the file
        self.assertEqual(len(config.replicas), 3)

    def test_environment_alias(self) -> None:
        """Alias variables work like their key's own variable."""
        config = self.load_text("", {"SCHEDULER0_PEER_CONNECT_RETRY_DELAY_SECONDS": "7"})
        self.assertEqual(config.peer_connect_retry_delay, 7)

    def test_environment_replicas_as_json(self) -> None:
        """Replicas and network lists come from YAML or JSON text."""
        config = self.load_text(
            "",
            {
                "SCHEDULER0_REPLICAS": '[{"Address": "http://10.0.0.1:9091", '
                '"RaftAddress": "10.0.0.1:7071", "NodeId": 1}]',
                "SCHEDULER0_CALLBACK_ALLOW_NETWORKS": "10.0.0.0/8, 192.168.0.0/16",
            },
        )
        self.assertEqual(config.replicas, (Replica("http://10.0.0.1:9091", "10.0.0.1:7071", 1),))
        self.assertEqual(config.callback_allow_networks, ("10.0.0.0/8", "192.168.0.0/16"))

    def test_environment_string_is_taken_verbatim(self) -> None:
        """A text key's variable is not reinterpreted as YAML."""
        config = self.load_text("", {"SCHEDULER0_HOST": "10.0.0.5", "SCHEDULER0_DATA_DIR": "123"})
        self.assertEqual((config.host, config.data_dir), ("10.0.0.5", "123"))

    def test_bad_environment_value_names_the_variable(self) -> None:
        """A variable that does not parse names the variable, value and expectation."""
        message = self.error_for("", {"SCHEDULER0_PORT": "ninety"})
        self.assertEqual(
            message,
            'environment: SCHEDULER0_PORT: invalid value "ninety"; '
            "expected an integer from 1 to 65535",
        )

    def test_unknown_variable_stops_the_node(self) -> None:
        """
        An unknown SCHEDULER0_* variable stops the node as an unknown file key
        does: one line naming it and the closest known name. Variables without
        the prefix are not ours and are left alone.
        """
        message = self.error_for("", {"SCHEDULER0_NODEID": "3", "OTHER": "x"})
        self.assertEqual(
            message,
            "environment: unknown variable SCHEDULER0_NODEID (did you mean "
            "'SCHEDULER0_NODE_ID'?); unset it or correct its name",
        )
        self.assertEqual(self.load_text("", {"OTHER": "x"}).warnings, ())

    def test_every_variable_the_package_reads_is_known(self) -> None:
        """
        Each SCHEDULER0_* name written in the package (the credentials', the
        CLI's, the config path) is a key's variable or reserved, so setting it
        does not stop the node.
        """
        package = os.path.join(REPO_ROOT, "scheduler0")
        named = set()
        for folder, _dirs, files in os.walk(package):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), encoding="utf-8") as f:
                        named.update(re.findall(r"\bSCHEDULER0_[A-Z0-9_]*[A-Z0-9]\b", f.read()))
        self.assertIn(PREVIOUS_KEYS_VARIABLE, named)
        self.assertEqual(named - environment_variables(), set())

    def test_reserved_variables_are_not_config_keys(self) -> None:
        """The credentials, config-path and CLI client variables raise no warning."""
        config = self.load_text(
            "",
            {
                "SCHEDULER0_AUTH_USERNAME": "a",
                "SCHEDULER0_AUTH_PASSWORD": "b",
                "SCHEDULER0_SECRET_KEY": "c",
                "SCHEDULER0_PREVIOUS_SECRET_KEYS": "d,e",
                "SCHEDULER0_ENDPOINT": "http://127.0.0.1:9091",
                "SCHEDULER0_API_KEY": "k",
                "SCHEDULER0_API_SECRET": "s",
            },
        )
        self.assertEqual(config.warnings, ())


class ValidationTests(_Directory, SynchronousTestCase):
    """Every class of bad input is one line naming the key, the value and the expectation."""

    def test_unknown_key_suggests_closest(self) -> None:
        """A typo names the closest valid key."""
        message = self.error_for("MaxWorker: 3\n")
        self.assertIn("unknown key 'MaxWorker' (did you mean 'MaxWorkers'?)", message)
        self.assertIn("config.yml", message)

    def test_unknown_key_case_typo(self) -> None:
        """A key in the wrong case suggests the right spelling."""
        self.assertIn("(did you mean 'NodeId'?)", self.error_for("nodeid: 1\n"))

    def test_unknown_key_without_suggestion(self) -> None:
        """A key like nothing known is named without a guess."""
        message = self.error_for("Zebra: 1\n")
        self.assertTrue(message.endswith("unknown key 'Zebra'"), message)

    def test_bool_is_not_an_integer(self) -> None:
        """true for an integer key is a type error."""
        message = self.error_for("MaxWorkers: true\n")
        self.assertIn("MaxWorkers: invalid value true; expected an integer >= 1", message)

    def test_string_is_not_an_integer_in_a_file(self) -> None:
        """A quoted number in the file is a string, and wrong for an integer key."""
        message = self.error_for('JobExecutionTimeout: "30"\n')
        self.assertIn('JobExecutionTimeout: invalid value "30"; expected a number > 0', message)

    def test_float_is_not_an_integer(self) -> None:
        """A fraction for an integer key is wrong."""
        self.assertIn("NodeId: invalid value 1.5", self.error_for("NodeId: 1.5\n"))

    def test_port_out_of_range(self) -> None:
        """Ports are 1..65535."""
        self.assertIn(
            "Port: invalid value 70000; expected an integer from 1 to 65535",
            self.error_for("Port: 70000\n"),
        )
        self.assertIn("Port: invalid value 0", self.error_for("Port: 0\n"))

    def test_node_id_must_be_positive(self) -> None:
        """NodeId 0 is rejected."""
        self.assertIn(
            "NodeId: invalid value 0; expected an integer >= 1", self.error_for("NodeId: 0\n")
        )

    def test_negative_resource_limits(self) -> None:
        """MaxMemory and MaxCPU cannot be negative."""
        self.assertIn(
            "MaxMemory: invalid value -1; expected a number >= 0", self.error_for("MaxMemory: -1\n")
        )
        self.assertIn("MaxCPU: invalid value -5", self.error_for("MaxCPU: -5\n"))

    def test_zero_count_rejected(self) -> None:
        """Counts where zero makes no sense must be at least 1."""
        self.assertIn("MaxQueue: invalid value 0", self.error_for("MaxQueue: 0\n"))
        self.assertIn(
            "ExecutionHistoryPerJob: invalid value 0", self.error_for("ExecutionHistoryPerJob: 0\n")
        )

    def test_zero_timeout_rejected(self) -> None:
        """Timeouts must be positive."""
        self.assertIn(
            "RaftApplyTimeout: invalid value 0; expected a number > 0",
            self.error_for("RaftApplyTimeout: 0\n"),
        )

    def test_log_level(self) -> None:
        """LogLevel is one of four names."""
        self.assertIn(
            'LogLevel: invalid value "LOUD"; expected one of ERROR, WARN, INFO, DEBUG',
            self.error_for("LogLevel: LOUD\n"),
        )

    def test_protocol(self) -> None:
        """Protocol is http or https."""
        self.assertIn(
            'Protocol: invalid value "ftp"; expected http or https',
            self.error_for("Protocol: ftp\n"),
        )

    def test_raft_address_needs_a_port(self) -> None:
        """RaftAddress is host:port."""
        self.assertIn(
            'RaftAddress: invalid value "127.0.0.1"; expected host:port',
            self.error_for("RaftAddress: 127.0.0.1\n"),
        )
        self.assertIn("RaftAddress", self.error_for("RaftAddress: 'h:99999'\n"))

    def test_split_host_port(self) -> None:
        """host:port and [v6]:port split; a bare v6 address does not."""
        self.assertEqual(split_host_port("10.0.0.1:7071"), ("10.0.0.1", 7071))
        self.assertEqual(split_host_port("[::1]:7071"), ("::1", 7071))
        self.assertRaises(ValueError, split_host_port, "::1:7071")
        self.assertRaises(ValueError, split_host_port, ":7071")

    def test_replica_address_must_be_a_url(self) -> None:
        """A replica Address without a scheme is rejected, naming the entry."""
        message = self.error_for(
            """\
            Replicas:
              - Address: 127.0.0.1:9091
                RaftAddress: 127.0.0.1:7071
                NodeId: 1
            """
        )
        self.assertIn(
            'Replicas[0].Address: invalid value "127.0.0.1:9091"; expected an http://', message
        )

    def test_replica_missing_field(self) -> None:
        """Every replica needs all three fields."""
        message = self.error_for("Replicas:\n  - Address: http://a:1\n    NodeId: 1\n")
        self.assertIn("Replicas[0]: missing RaftAddress", message)

    def test_replica_unknown_field(self) -> None:
        """A misspelt replica field suggests the right one."""
        message = self.error_for(
            "Replicas:\n  - Address: http://a:1\n    RaftAdress: a:2\n    NodeId: 1\n"
        )
        self.assertIn(
            "Replicas[0]: unknown key 'RaftAdress' (did you mean 'RaftAddress'?)", message
        )

    def test_replicas_must_be_a_list(self) -> None:
        """Replicas is a list of mappings."""
        self.assertIn("Replicas: invalid value", self.error_for("Replicas: node1\n"))
        self.assertIn("Replicas[0]: invalid value", self.error_for("Replicas: [3]\n"))

    def test_duplicate_node_ids(self) -> None:
        """Two replicas with one NodeId are rejected."""
        message = self.error_for(
            """\
            Replicas:
              - {Address: "http://a:1", RaftAddress: "a:2", NodeId: 1}
              - {Address: "http://b:1", RaftAddress: "b:2", NodeId: 1}
            """
        )
        self.assertIn("Replicas[1].NodeId: duplicate value 1 (also in Replicas[0])", message)

    def test_replicas_must_contain_this_node(self) -> None:
        """A non-empty Replicas list without this NodeId is an error."""
        message = self.error_for(
            SEED_SAMPLE.replace("NodeId: 1\nRaftAddress", "NodeId: 4\nRaftAddress")
        )
        self.assertIn(
            "NodeId: invalid value 4; expected one of the Replicas NodeIds (1, 2, 3)", message
        )

    def test_own_replica_entry_mismatch_is_a_warning(self) -> None:
        """This node's Replicas entry disagreeing with Host/Port is reported."""
        config = self.load_text(SEED_SAMPLE.replace("Port: 9091", "Port: 9099"))
        self.assertTrue(any("http://127.0.0.1:9099" in w for w in config.warnings))

    def test_heartbeat_below_election_timeout(self) -> None:
        """The heartbeat interval must be shorter than the election timeout."""
        message = self.error_for("RaftElectionTimeoutMs: 500\nRaftHeartbeatIntervalMs: 500\n")
        self.assertIn(
            "RaftHeartbeatIntervalMs: invalid value 500; expected less than "
            "RaftElectionTimeoutMs (500)",
            message,
        )

    def test_retry_max_delay_not_below_retry_delay(self) -> None:
        """JobExecutionRetryMaxDelay bounds the doubling delay: it cannot be below its start."""
        message = self.error_for("JobExecutionRetryDelay: 5\nJobExecutionRetryMaxDelay: 2\n")
        self.assertIn(
            "JobExecutionRetryMaxDelay: invalid value 2; expected at least "
            "JobExecutionRetryDelay (5)",
            message,
        )
        message = self.error_for("JobExecutionRetryMaxDelay: 90000\n")
        self.assertIn(
            "JobExecutionRetryMaxDelay: invalid value 90000; expected at most 86400", message
        )

    def test_alias_and_key_together(self) -> None:
        """Giving a key and its alias is ambiguous."""
        message = self.error_for("PeerConnectRetryDelay: 1\nPeerConnectRetryDelaySeconds: 2\n")
        self.assertIn("PeerConnectRetryDelaySeconds and PeerConnectRetryDelay", message)

    def test_bad_network(self) -> None:
        """A network that is not CIDR is rejected."""
        self.assertIn(
            "CallbackAllowNetworks: invalid value",
            self.error_for("CallbackAllowNetworks: [10.0.0.0/33]\n"),
        )

    def test_top_level_must_be_a_mapping(self) -> None:
        """A list at the top level is rejected."""
        self.assertIn("the top level must be a mapping", self.error_for("- Port: 1\n"))

    def test_yaml_syntax_error_has_line_number(self) -> None:
        """A YAML syntax error is one line with the line number."""
        message = self.error_for("Port: 9091\nHost: [unclosed\nNodeId: 1\n")
        self.assertIn("YAML syntax error at line", message)

    def test_yaml_syntax_error_line_is_right(self) -> None:
        """The reported line is where the problem is."""
        message = self.error_for("Port: 9091\nHost: x\n  bad: indent\n")
        self.assertIn("at line 3", message)

    def test_duplicate_key(self) -> None:
        """The same key twice is an error rather than a silent last-wins."""
        message = self.error_for("Port: 9091\nPort: 9092\n")
        self.assertIn("duplicate key 'Port'", message)
        self.assertIn("line 2", message)

    def test_config_from_mapping(self) -> None:
        """An already-parsed mapping validates the same way as a file."""
        config = config_from_mapping({"NodeId": 2, "Port": 9300}, environ={})
        self.assertEqual((config.node_id, config.port), (2, 9300))
        self.assertRaises(ConfigError, config_from_mapping, {"Port": "x"})


class MetricsConfigTests(_Directory, SynchronousTestCase):
    """MetricsMaxJobSeries: how many jobs get per-job series in GET /metrics."""

    def test_default_is_a_thousand(self) -> None:
        """Without the key, 1000 jobs may have per-job series."""
        self.assertEqual(self.load_text("NodeId: 1\n").metrics_max_job_series, 1000)

    def test_zero_turns_per_job_series_off(self) -> None:
        """0 is allowed (no per-job series); other counts are taken as given."""
        self.assertEqual(self.load_text("MetricsMaxJobSeries: 0\n").metrics_max_job_series, 0)
        self.assertEqual(self.load_text("MetricsMaxJobSeries: 50\n").metrics_max_job_series, 50)

    def test_bad_values_name_the_key(self) -> None:
        """A negative or non-integer value is refused naming MetricsMaxJobSeries."""
        self.assertIn(
            "MetricsMaxJobSeries: invalid value -1; expected an integer >= 0",
            self.error_for("MetricsMaxJobSeries: -1\n"),
        )
        self.assertIn(
            "MetricsMaxJobSeries: invalid value", self.error_for("MetricsMaxJobSeries: many\n")
        )

    def test_environment_sets_it(self) -> None:
        """SCHEDULER0_METRICS_MAX_JOB_SERIES overrides the file."""
        config = self.load_text(
            "MetricsMaxJobSeries: 5\n", {"SCHEDULER0_METRICS_MAX_JOB_SERIES": "7"}
        )
        self.assertEqual(config.metrics_max_job_series, 7)


class CredentialsTests(_Directory, SynchronousTestCase):
    """The .scheduler0 admin credentials file."""

    def config(self) -> Config:
        return Config(base_dir=self.make_dir())

    def test_tokens_never_begin_with_a_dash(self) -> None:
        """
        Generated secrets can follow a command-line option as its value
        (C{--api-secret VALUE}): none begins with C{-}, which argparse would
        take for another option; the rest of the alphabet stays.
        """
        tokens = [token(3) for _ in range(3000)]
        self.assertFalse([t for t in tokens if t.startswith("-")])
        self.assertTrue(any("-" in t for t in tokens))
        self.assertEqual({len(t) for t in tokens}, {4})

    def test_path_is_beside_the_config(self) -> None:
        """.scheduler0 lives in the config's base directory."""
        config = self.config()
        self.assertEqual(credentials_path(config), os.path.join(config.base_dir, ".scheduler0"))

    def test_save_and_load_round_trip(self) -> None:
        """Saved credentials load back unchanged."""
        config = self.config()
        creds = AdminCredentials("root", "pw: with colon", "s3cret")
        save_admin_credentials(credentials_path(config), creds)
        self.assertEqual(load_admin_credentials(config, {}), creds)

    def test_saved_file_mode_is_0600(self) -> None:
        """The file is readable by its owner only."""
        path = credentials_path(self.config())
        save_admin_credentials(path, generate_admin_credentials())
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_existing_open_file_becomes_0600(self) -> None:
        """Replacing a world-readable file leaves a 0600 file."""
        path = credentials_path(self.config())
        with open(path, "w") as f:
            f.write("AuthUsername: x\n")
        os.chmod(path, 0o644)
        save_admin_credentials(path, generate_admin_credentials())
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_no_temporary_file_is_left(self) -> None:
        """The atomic write leaves only .scheduler0 in the directory."""
        config = self.config()
        save_admin_credentials(credentials_path(config), generate_admin_credentials())
        self.assertEqual(os.listdir(config.base_dir), [".scheduler0"])

    def test_missing_file_gives_none(self) -> None:
        """Without a file or variables there are no credentials."""
        self.assertIsNone(load_admin_credentials(self.config(), {}))

    def test_partial_file_gives_none(self) -> None:
        """A file missing a field does not give credentials on its own."""
        config = self.config()
        self.write(config.base_dir, "AuthUsername: admin\n", name=".scheduler0")
        self.assertIsNone(load_admin_credentials(config, {}))

    def test_environment_overrides_the_file(self) -> None:
        """Each variable replaces its field of the file."""
        config = self.config()
        save_admin_credentials(credentials_path(config), AdminCredentials("a", "b", "c"))
        creds = load_admin_credentials(config, {"SCHEDULER0_AUTH_PASSWORD": "env-pw"})
        self.assertEqual(creds, AdminCredentials("a", "env-pw", "c"))

    def test_environment_alone_is_enough(self) -> None:
        """All three variables give credentials without any file."""
        creds = load_admin_credentials(
            self.config(),
            {
                "SCHEDULER0_AUTH_USERNAME": "u",
                "SCHEDULER0_AUTH_PASSWORD": "p",
                "SCHEDULER0_SECRET_KEY": "k",
            },
        )
        self.assertEqual(creds, AdminCredentials("u", "p", "k"))

    def test_repr_hides_secrets(self) -> None:
        """repr shows the username but never the password or secret key."""
        text = repr(AdminCredentials("admin", "hunter2", "topsecret"))
        self.assertIn("admin", text)
        self.assertNotIn("hunter2", text)
        self.assertNotIn("topsecret", text)

    def test_generated_credentials_are_random(self) -> None:
        """Two generated sets differ and are long."""
        first, second = generate_admin_credentials(), generate_admin_credentials("ops")
        self.assertEqual((first.username, second.username), ("admin", "ops"))
        self.assertNotEqual(first.password, second.password)
        self.assertNotEqual(first.secret_key, second.secret_key)
        self.assertGreaterEqual(len(first.password), 24)

    def test_ensure_creates_once(self) -> None:
        """ensure writes the file the first time and reuses it afterwards."""
        config = self.config()
        creds, created = ensure_admin_credentials(config, {})
        self.assertTrue(created)
        self.assertEqual(stat.S_IMODE(os.stat(credentials_path(config)).st_mode), 0o600)
        again, created_again = ensure_admin_credentials(config, {})
        self.assertEqual((again, created_again), (creds, False))

    def test_ensure_keeps_given_fields(self) -> None:
        """ensure generates only what neither the file nor the environment gives."""
        config = self.config()
        creds, created = ensure_admin_credentials(config, {"SCHEDULER0_AUTH_USERNAME": "ops"})
        self.assertTrue(created)
        self.assertEqual(creds.username, "ops")

    def test_bad_file_is_an_error_without_echoing_secrets(self) -> None:
        """A malformed file is a one-line error that does not print the value."""
        config = self.config()
        self.write(
            config.base_dir,
            "AuthUsername: a\nAuthPassword: [1]\nSecretKey: zz\n",
            name=".scheduler0",
        )
        error = self.assertRaises(CredentialsError, load_admin_credentials, config, {})
        self.assertIn("AuthPassword: expected a non-empty string", str(error))

    def test_file_others_can_read_is_refused(self) -> None:
        """A .scheduler0 that group or others may read or write is an error saying how to fix it."""
        config = self.config()
        path = self.write(
            config.base_dir, "AuthUsername: a\nAuthPassword: b\nSecretKey: c\n", name=".scheduler0"
        )
        for mode in (0o644, 0o640, 0o604, 0o620):
            os.chmod(path, mode)
            error = self.assertRaises(CredentialsError, load_admin_credentials, config, {})
            self.assertIn(f"mode {mode:04o}", str(error))
            self.assertIn(f"chmod 600 {path}", str(error))
            self.assertNotIn("AuthPassword: b", str(error))
        os.chmod(path, 0o600)
        self.assertEqual(load_admin_credentials(config, {}).password, "b")

    def test_unknown_key_in_file(self) -> None:
        """An unknown key in .scheduler0 is named."""
        config = self.config()
        self.write(config.base_dir, "Username: a\n", name=".scheduler0")
        error = self.assertRaises(CredentialsError, load_admin_credentials, config, {})
        self.assertIn("unknown key 'Username'", str(error))
