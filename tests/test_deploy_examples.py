"""
The deployment examples (C{Containerfile}, C{deploy/container},
C{deploy/kubernetes}, C{deploy/systemd}) name only what the node really has:
every C{SCHEDULER0_*} variable and config key is one the config module knows
(its own table, L{environment_variables}, and the checks the plugin
runs when it loads the config), every probe names an anonymous GET route of the API's route
table on the port the pods' config listens on, every Service sends to those
ports, and each command is C{twistd} with options twistd and the
C{scheduler0} plugin accept, parsed by their own option parsers (which load
the config each example gives the node).

Each check is a function returning the problems it finds; the tests run them
on the real files, and on altered copies to show that each one can fail.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

import attrs
import yaml
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.api.routes import ANONYMOUS, PREFIXES, ROUTES
from scheduler0.config import (
    CONFIG_ENV,
    ENV_PREFIX,
    Config,
    ConfigError,
    environment_variables,
    split_host_port,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO_ROOT, "deploy")
KUBERNETES = os.path.join(DEPLOY, "kubernetes")
SYSTEMD = os.path.join(DEPLOY, "systemd")

#: The routes a probe may use: the anonymous GET routes, with and without the prefix.
PROBE_PATHS = frozenset(
    prefix + route.path
    for route in ROUTES
    if route.method == "GET" and route.auth == ANONYMOUS
    for prefix in PREFIXES
)


def unknown_variables(names: Iterable[str]) -> list[str]:
    """The C{SCHEDULER0_*} names among C{names} that no node or CLI reads."""
    known = environment_variables()
    return sorted(n for n in names if n.startswith(ENV_PREFIX) and n not in known)


# ---------------------------------------------------------------------------
# The Containerfile


@attrs.frozen
class Containerfile:
    """The instructions of a Containerfile that the examples depend on."""

    env: dict[str, str]
    entrypoint: list[str]
    healthcheck: list[str]
    copies: list[tuple[str, str]]  # (source in the build context, destination)
    exposed: list[int]
    user: str

    @classmethod
    def parse(cls, text: str) -> Containerfile:
        joined = re.sub(r"\\\n", " ", text)
        env: dict[str, str] = {}
        entrypoint: list[str] = []
        healthcheck: list[str] = []
        copies: list[tuple[str, str]] = []
        exposed: list[int] = []
        user = ""
        for line in joined.splitlines():
            words = line.strip().split(None, 1)
            if not words or words[0].startswith("#") or len(words) < 2:
                continue
            instruction, rest = words[0].upper(), words[1]
            if instruction == "ENV":
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    env[key] = value
            elif instruction == "ENTRYPOINT":
                entrypoint = json.loads(rest)
            elif instruction == "HEALTHCHECK":
                healthcheck = json.loads(rest.split(" CMD ", 1)[1])
            elif instruction == "COPY":
                parts = [p for p in shlex.split(rest) if not p.startswith("--")]
                copies.append((parts[0], parts[-1]))
            elif instruction == "EXPOSE":
                exposed.extend(int(p) for p in rest.split())
            elif instruction == "USER":
                user = rest.strip()
        return cls(env, entrypoint, healthcheck, copies, exposed, user)

    def copied_to(self, destination: str) -> str | None:
        """The build-context file copied to C{destination}, if any."""
        for source, target in self.copies:
            if target == destination:
                return source
        return None


def read_containerfile() -> Containerfile:
    with open(os.path.join(REPO_ROOT, "Containerfile"), encoding="utf-8") as f:
        return Containerfile.parse(f.read())


# ---------------------------------------------------------------------------
# Commands: twistd and its scheduler0 plugin, parsed as twistd would


def check_twistd(argv: list[str], environ: Mapping[str, str], files: Mapping[str, str]) -> Any:
    """
    Parse C{argv} (C{twistd ...}) with twistd's own option parser, the
    C{scheduler0} plugin's included, in C{environ}; C{files} maps the paths
    the command names (its config) to files of this checkout. Return the
    L{Config} the plugin loaded, or a list of problems.
    """
    if os.path.basename(argv[0]) != "twistd":
        return [f"{argv[0]} is not twistd"]
    if not entry_points(group="console_scripts", name="twistd"):
        return ["no twistd console script is installed"]
    args = [files.get(arg, arg) for arg in argv[1:]]
    environ = {k: files.get(v, v) for k, v in environ.items()}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        options = ServerOptions()
        options.parseOptions(args)
    except (usage.UsageError, ConfigError) as e:
        return [f"twistd {' '.join(args)}: {e}"]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if options.subCommand != "scheduler0":
        return [f"twistd runs {options.subCommand!r}, not the scheduler0 plugin"]
    if not options["nodaemon"]:
        return ["twistd would daemonize: a service manager needs --nodaemon"]
    return options.subOptions["loaded"]


# ---------------------------------------------------------------------------
# Kubernetes


def load_manifests(folder: str = KUBERNETES) -> dict[str, list[dict]]:
    """Every document of the folder's YAML files, by kind."""
    kinds: dict[str, list[dict]] = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                for document in yaml.safe_load_all(f):
                    if document:
                        kinds.setdefault(document["kind"], []).append(document)
    return kinds


def only(kinds: Mapping[str, list[dict]], kind: str) -> dict:
    (document,) = kinds[kind]
    return document


def named(documents: Iterable[dict], name: str) -> dict:
    (document,) = [d for d in documents if d["metadata"]["name"] == name]
    return document


def node_container(statefulset: dict) -> dict:
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def pod_environment(kinds: Mapping[str, list[dict]], image: Containerfile) -> dict[str, str]:
    """What a pod's process gets: the image's ENV, then the Secrets and env it names."""
    container = node_container(only(kinds, "StatefulSet"))
    environ = dict(image.env)
    for source in container.get("envFrom", ()):
        secret = named(kinds["Secret"], source["secretRef"]["name"])
        environ.update(secret.get("stringData", {}))
    for variable in container.get("env", ()):
        environ[variable["name"]] = str(variable.get("value", ""))
    return environ


def run_pod_command(
    command: list[str], environ: Mapping[str, str], hostname: str
) -> tuple[list[str], dict[str, str]]:
    """
    Run the pod's command (its shell lines) as the pod would, with a stand-in
    C{twistd} first on the PATH that records what it was given; return the
    arguments and environment the node would have started with.
    """
    with tempfile.TemporaryDirectory() as bin_dir:
        record = os.path.join(bin_dir, "record.json")
        stand_in = os.path.join(bin_dir, "twistd")
        with open(stand_in, "w") as f:
            f.write(
                f"#!{sys.executable}\n"
                "import json, os, sys\n"
                f"json.dump([sys.argv, dict(os.environ)], open({record!r}, 'w'))\n"
            )
        os.chmod(stand_in, stat.S_IRWXU)
        env = {**environ, "HOSTNAME": hostname, "PATH": f"{bin_dir}:/usr/bin:/bin"}
        subprocess.run(command, env=env, check=True, timeout=30)
        with open(record) as f:
            argv, started = json.load(f)
    started.pop("PATH", None)
    started.pop("HOSTNAME", None)
    started.pop("PWD", None)
    return ["twistd", *argv[1:]], started


def check_probes(container: dict) -> list[str]:
    """Each probe of the container asks an anonymous GET route on one of its named ports."""
    problems = []
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(kind)
        if probe is None:
            problems.append(f"{kind} is missing")
            continue
        path, port = probe["httpGet"]["path"], probe["httpGet"]["port"]
        if path not in PROBE_PATHS:
            problems.append(f"{kind} asks {path}, which is no anonymous GET route")
        if port not in ports and port not in ports.values():
            problems.append(f"{kind} asks port {port!r}, which the container does not name")
    for kind, path in (("livenessProbe", "/livez"), ("readinessProbe", "/healthcheck")):
        if container.get(kind, {}).get("httpGet", {}).get("path") != path:
            problems.append(f"{kind} should ask {path}")
    return problems


def endpoint_port(description: str) -> int | None:
    """The port of a C{tcp:PORT:...} or C{ssl:PORT:...} server endpoint string."""
    match = re.match(r"(?:tcp|ssl|tcp6):(?:port=)?(\d+)", description)
    return int(match.group(1)) if match else None


def check_ports(kinds: Mapping[str, list[dict]], config: Config) -> list[str]:
    """
    The container's C{http} and C{raft} ports are where the config listens,
    the Services send to them on the same numbers, and the Replicas reach
    each pod at its headless DNS name on them.
    """
    problems = []
    statefulset = only(kinds, "StatefulSet")
    container = node_container(statefulset)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    raft_port = split_host_port(config.raft_address)[1]
    listening = {
        "http": endpoint_port(config.http_endpoint) if config.http_endpoint else config.port,
        "raft": endpoint_port(config.raft_endpoint) if config.raft_endpoint else raft_port,
    }
    for name, port in listening.items():
        if ports.get(name) != port:
            problems.append(
                f"container port {name} is {ports.get(name)}, the node listens on {port}"
            )
    if config.port != listening["http"]:
        problems.append(f"Port is {config.port} but HTTPEndpoint listens on {listening['http']}")
    if raft_port != listening["raft"]:
        problems.append(
            f"RaftAddress port is {raft_port}, RaftEndpoint listens on {listening['raft']}"
        )
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for service in kinds["Service"]:
        selector = service["spec"]["selector"]
        if any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"Service {service['metadata']['name']} selects no node pod")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            number = ports.get(target, target)
            if number not in ports.values() or number != port["port"]:
                problems.append(
                    f"Service {service['metadata']['name']} port {port['port']} sends to "
                    f"{target!r}, not the container's port of that number"
                )
    headless = named(kinds["Service"], statefulset["spec"]["serviceName"])
    if headless["spec"].get("clusterIP") != "None":
        problems.append("the StatefulSet's serviceName is not a headless Service")
    name, service = statefulset["metadata"]["name"], statefulset["spec"]["serviceName"]
    expected = {
        (
            f"{config.protocol}://{name}-{i}.{service}:{listening['http']}",
            f"{name}-{i}.{service}:{listening['raft']}",
            i + 1,
        )
        for i in range(statefulset["spec"]["replicas"])
    }
    given = {(r.address, r.raft_address, r.node_id) for r in config.replicas}
    if given != expected:
        problems.append(f"Replicas {sorted(given)} are not the pods {sorted(expected)}")
    return problems


# ---------------------------------------------------------------------------
# systemd


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections: each key with every value it is given, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def parse_env_file(text: str) -> dict[str, str]:
    """C{KEY=VALUE} lines of a systemd C{EnvironmentFile}."""
    environ = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            environ[key.strip()] = value.strip().strip('"')
    return environ


REQUIRED_SERVICE = {
    "Type": "simple",
    "Restart": "on-failure",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
}


def check_unit_settings(service: Mapping[str, list[str]]) -> list[str]:
    """The [Service] settings the example promises."""
    problems = []
    for key, value in REQUIRED_SERVICE.items():
        if service.get(key, [None])[-1] != value:
            problems.append(f"{key}={value} is missing")
    for key in ("User", "StateDirectory", "ReadWritePaths", "LimitNOFILE", "EnvironmentFile"):
        if not service.get(key, [""])[-1]:
            problems.append(f"{key} is missing")
    return problems


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class ContainerfileTests(SynchronousTestCase):
    """The image's environment, config file, command and health check."""

    def setUp(self) -> None:
        self.image = read_containerfile()

    def test_environment_names_are_known(self) -> None:
        """Every SCHEDULER0_* variable the image sets is one the node reads."""
        self.assertIn(CONFIG_ENV, self.image.env)
        self.assertEqual(unknown_variables(self.image.env), [])

    def test_made_up_variable_is_caught(self) -> None:
        """A variable no node reads is reported, beside the known ones."""
        text = _read(os.path.join(REPO_ROOT, "Containerfile"))
        altered = Containerfile.parse(text + "\nENV SCHEDULER0_MADE_UP=1\n")
        self.assertEqual(unknown_variables(altered.env), ["SCHEDULER0_MADE_UP"])

    def test_entrypoint_starts_the_node_on_the_image_config(self) -> None:
        """
        The entrypoint is twistd with the scheduler0 plugin; with the image's
        environment it loads the config file the image copies to
        $SCHEDULER0_CONFIG, which listens on a port the image exposes.
        """
        config_path = self.image.env[CONFIG_ENV]
        source = self.image.copied_to(config_path)
        self.assertIsNotNone(source, f"nothing is copied to {config_path}")
        assert source is not None
        files = {config_path: os.path.join(REPO_ROOT, source)}
        config = check_twistd(self.image.entrypoint, self.image.env, files)
        self.assertIsInstance(config, Config, str(config))
        self.assertIn(config.port, self.image.exposed)
        self.assertIn(split_host_port(config.raft_address)[1], self.image.exposed)
        self.assertTrue(config.data_path().startswith("/var/lib/scheduler0/"))

    def test_wrong_plugin_or_option_is_caught(self) -> None:
        """A plugin that does not exist, or an option twistd lacks, is reported."""
        files = {self.image.env[CONFIG_ENV]: os.path.join(DEPLOY, "container", "config.yml")}
        for argv in (
            ["twistd", "--nodaemon", "scheduler1"],
            ["twistd", "--no-daemon", "scheduler0"],
            ["twistd", "scheduler0", "--config-file", "x.yml"],
            ["twistd", "scheduler0"],
        ):
            problems = check_twistd(argv, self.image.env, files)
            self.assertIsInstance(problems, list, argv)
            self.assertEqual(len(problems), 1, problems)
        bad = {**self.image.env, "SCHEDULER0_PORTS": "1"}
        problems = check_twistd(self.image.entrypoint, bad, files)
        self.assertIn("SCHEDULER0_PORTS", problems[0])

    def test_healthcheck_is_a_copied_program_on_the_path(self) -> None:
        """The HEALTHCHECK runs a program the image copies into a folder on its PATH."""
        (program,) = self.image.healthcheck
        folders = self.image.env["PATH"].split(":")
        sources = [self.image.copied_to(os.path.join(folder, program)) for folder in folders]
        found = [source for source in sources if source]
        self.assertEqual(len(found), 1, f"{program} is not copied onto the PATH")
        self.assertTrue(os.path.isfile(os.path.join(REPO_ROOT, found[0])))
        with open(os.path.join(REPO_ROOT, found[0])) as f:
            self.assertIn("/livez", f.read())


class KubernetesTests(SynchronousTestCase):
    """The StatefulSet, its Services, Secret, ConfigMap and PodDisruptionBudget."""

    def setUp(self) -> None:
        self.image = read_containerfile()
        self.kinds = load_manifests()
        self.statefulset = only(self.kinds, "StatefulSet")
        self.container = node_container(self.statefulset)

    def pod_config(self, ordinal: int, kinds: Mapping[str, list[dict]] | None = None) -> Any:
        """What pod C{ordinal}'s node starts with: its command run, then parsed by twistd."""
        kinds = kinds or self.kinds
        statefulset = only(kinds, "StatefulSet")
        container = node_container(statefulset)
        argv, environ = run_pod_command(
            container["command"],
            pod_environment(kinds, self.image),
            f"{statefulset['metadata']['name']}-{ordinal}",
        )
        directory = self.mktemp()
        os.makedirs(directory)
        files = {}
        volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
        for mount in container["volumeMounts"]:
            config_map = volumes.get(mount["name"], {}).get("configMap")
            if config_map is None:
                continue
            for key, text in named(kinds["ConfigMap"], config_map["name"])["data"].items():
                path = os.path.join(directory, key)
                with open(path, "w") as f:
                    f.write(text)
                files[os.path.join(mount["mountPath"], key)] = path
        return check_twistd(argv, environ, files)

    def test_variables_and_config_keys_are_known(self) -> None:
        """
        The Secret's variables, the variables the pod's command sets and the
        ConfigMap's keys are all the node's: each pod starts with a valid
        config, its own NodeId and address, and no warning.
        """
        self.assertEqual(unknown_variables(pod_environment(self.kinds, self.image)), [])
        for ordinal in range(self.statefulset["spec"]["replicas"]):
            config = self.pod_config(ordinal)
            self.assertIsInstance(config, Config, str(config))
            self.assertEqual(config.node_id, ordinal + 1)
            self.assertEqual(config.warnings, ())
            self.assertTrue(config.data_path().startswith("/var/lib/scheduler0/"))

    def test_made_up_variable_or_key_is_caught(self) -> None:
        """A made-up variable in the Secret, or a made-up key in the ConfigMap, stops the pod."""
        kinds = copy.deepcopy(self.kinds)
        kinds["Secret"][0]["stringData"]["SCHEDULER0_MADE_UP"] = "1"
        self.assertEqual(
            unknown_variables(pod_environment(kinds, self.image)), ["SCHEDULER0_MADE_UP"]
        )
        problems = self.pod_config(0, kinds)
        self.assertIn("SCHEDULER0_MADE_UP", problems[0])
        kinds = copy.deepcopy(self.kinds)
        (config_map,) = kinds["ConfigMap"]
        config_map["data"]["config.yml"] += "MadeUpKey: 1\n"
        problems = self.pod_config(0, kinds)
        self.assertIn("unknown key 'MadeUpKey'", problems[0])

    def test_probes_name_real_routes(self) -> None:
        """Liveness asks /livez, readiness /healthcheck, on the container's HTTP port."""
        self.assertEqual(check_probes(self.container), [])
        altered = copy.deepcopy(self.container)
        altered["readinessProbe"]["httpGet"]["path"] = "/ready"
        altered["livenessProbe"]["httpGet"]["port"] = "api"
        self.assertEqual(len(check_probes(altered)), 3, check_probes(altered))

    def test_ports_match_the_config(self) -> None:
        """Container ports, Services and Replicas agree with where the node listens."""
        config = self.pod_config(0)
        self.assertIsInstance(config, Config, str(config))
        self.assertEqual(check_ports(self.kinds, config), [])
        kinds = copy.deepcopy(self.kinds)
        node_container(only(kinds, "StatefulSet"))["ports"][0]["containerPort"] = 8080
        self.assertNotEqual(check_ports(kinds, config), [])
        self.assertNotEqual(check_ports(self.kinds, attrs.evolve(config, port=9999)), [])

    def test_cluster_settings(self) -> None:
        """
        Three replicas start in parallel, as non-root with the image's uid; the
        disruption budget keeps a majority; the Secret and ConfigMap named exist.
        """
        spec = self.statefulset["spec"]
        self.assertEqual((spec["replicas"], spec["podManagementPolicy"]), (3, "Parallel"))
        pod = spec["template"]["spec"]["securityContext"]
        uid, _, gid = self.image.user.partition(":")
        self.assertEqual(
            (pod["runAsNonRoot"], pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]),
            (True, int(uid), int(gid), int(gid)),
        )
        self.assertFalse(self.container["securityContext"]["allowPrivilegeEscalation"])
        limits = self.container["resources"]
        self.assertEqual(sorted(limits), ["limits", "requests"])
        budget = only(self.kinds, "PodDisruptionBudget")["spec"]
        self.assertEqual(budget["minAvailable"], spec["replicas"] // 2 + 1)
        labels = spec["template"]["metadata"]["labels"]
        self.assertEqual(budget["selector"]["matchLabels"], labels)
        for source in self.container["envFrom"]:
            named(self.kinds["Secret"], source["secretRef"]["name"])


def cli_problems(text: str) -> list[str]:
    """
    The C{scheduler0 ...} commands quoted in C{text} that the installed
    C{scheduler0} console script's parser refuses.
    """
    (script,) = entry_points(group="console_scripts", name="scheduler0")
    module, _, function = script.value.partition(":")
    main = importlib.import_module(module)
    if not callable(getattr(main, function, None)):
        return [f"the scheduler0 console script names {script.value}, which does not exist"]
    problems = []
    for quoted in re.findall(r"`(scheduler0 [^`]+)`", text):
        argv = shlex.split(" ".join(quoted.split()))[1:]
        stderr = io.StringIO()
        try:
            main.build_parser(io.StringIO(), stderr).parse_args(argv)
        except Exception:
            problems.append(f"{quoted}: {stderr.getvalue().strip()}")
    return problems


class SystemdTests(SynchronousTestCase):
    """The unit, its environment file and its config file."""

    def setUp(self) -> None:
        self.unit = parse_unit(_read(os.path.join(SYSTEMD, "scheduler0.service")))
        self.service = self.unit["Service"]
        self.environ = parse_env_file(_read(os.path.join(SYSTEMD, "scheduler0.env")))

    def start(self, environ: Mapping[str, str]) -> Any:
        argv = shlex.split(self.service["ExecStart"][-1])
        files = {"/etc/scheduler0/config.yml": os.path.join(SYSTEMD, "config.yml")}
        return check_twistd(argv, environ, files)

    def test_command_and_variables_are_real(self) -> None:
        """
        ExecStart is twistd with the scheduler0 plugin, loading the example
        config with the example environment, its data under the unit's
        StateDirectory, which is writable under ProtectSystem=strict.
        """
        self.assertEqual(unknown_variables(self.environ), [])
        self.assertEqual(
            sorted(self.service["EnvironmentFile"]), ["/etc/scheduler0/scheduler0.env"]
        )
        config = self.start(self.environ)
        self.assertIsInstance(config, Config, str(config))
        state = os.path.join("/var/lib", self.service["StateDirectory"][-1])
        self.assertTrue(config.data_path().startswith(state + "/"), config.data_path())
        self.assertIn(state, self.service["ReadWritePaths"][-1].split())

    def test_made_up_variable_is_caught(self) -> None:
        """A variable no node reads in the environment file stops the node."""
        environ = {**self.environ, "SCHEDULER0_MADE_UP": "1"}
        self.assertEqual(unknown_variables(environ), ["SCHEDULER0_MADE_UP"])
        self.assertIn("SCHEDULER0_MADE_UP", self.start(environ)[0])

    def test_cli_commands_quoted_are_real(self) -> None:
        """
        The scheduler0 commands deploy/README.md quotes parse with the CLI the
        scheduler0 console script runs; a made-up one is refused.
        """
        self.assertEqual(cli_problems(_read(os.path.join(DEPLOY, "README.md"))), [])
        quoted = re.findall(r"`scheduler0 [^`]+`", _read(os.path.join(DEPLOY, "README.md")))
        self.assertNotEqual(quoted, [])
        self.assertEqual(len(cli_problems("`scheduler0 credential begin --config x.yml`")), 1)

    def test_hardening_and_limits(self) -> None:
        """The settings the example promises are there; one taken away is reported."""
        self.assertEqual(check_unit_settings(self.service), [])
        altered = {k: v for k, v in self.service.items() if k != "ProtectSystem"}
        self.assertEqual(check_unit_settings(altered), ["ProtectSystem=strict is missing"])
