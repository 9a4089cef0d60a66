"""
Tests for the C{scheduler0} command line, L{scheduler0.cli.main}.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from scheduler0 import __version__
from scheduler0.cli import context as cli_context
from scheduler0.cli import main as cli
from scheduler0.config import Config, load_config
from scheduler0.credentials import AdminCredentials, load_admin_credentials, save_admin_credentials

COMMANDS = ["config", "credential", "create", "start", "status", "version"]
LEAVES = [
    ["config", "init"],
    ["credential", "init"],
    ["credential", "show"],
    ["create", "credential"],
    ["start"],
    ["status"],
    ["version"],
]


class FakePrompt:
    """Answers prompts from a script and records what was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, bool]] = []

    def __call__(self, text: str, secret: bool) -> str:
        self.asked.append((text, secret))
        if not self.answers:
            raise AssertionError(f"unexpected prompt {text!r}")
        return self.answers.pop(0)


class FakeHttp:
    """Answers requests with one canned response (or exception) and records them."""

    def __init__(self, status: int = 200, body: Any = None, error: Exception | None = None):
        self.status = status
        self.body = body
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self, method: str, url: str, *, json: Any = None, auth: Any = None, timeout: float = 0
    ) -> tuple[int, Any]:
        self.calls.append(
            {"method": method, "url": url, "json": json, "auth": auth, "timeout": timeout}
        )
        if self.error is not None:
            raise self.error
        return self.status, self.body


class _TTYInput(io.StringIO):
    def isatty(self) -> bool:
        return True


class CliTestCase(SynchronousTestCase):
    """Runs the command in a fresh directory with captured streams."""

    def setUp(self) -> None:
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)
        self.environ: dict[str, str] = {}
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()

    def run_cli(
        self, *argv: str, stdin: io.StringIO | None = None, prompt: Any = None, http: Any = None
    ) -> int:
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        return cli.main(
            list(argv),
            stdin=stdin if stdin is not None else io.StringIO(""),
            stdout=self.stdout,
            stderr=self.stderr,
            environ=self.environ,
            cwd=self.cwd,
            prompt=prompt,
            http=http or FakeHttp(error=AssertionError("no HTTP expected")),
        )

    def one_error_line(self) -> str:
        """The single stderr line of a failed command."""
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, self.stderr.getvalue())
        self.assertNotIn("Traceback", lines[0])
        return lines[0]

    def config(self) -> Config:
        return load_config(None, self.environ, self.cwd)

    def save_admin(self, creds: AdminCredentials | None = None) -> AdminCredentials:
        creds = creds or AdminCredentials("admin", "pw-123", "key-456")
        save_admin_credentials(os.path.join(self.cwd, ".scheduler0"), creds)
        return creds


class HelpTests(CliTestCase):
    """--help, usage errors and version."""

    def test_help_lists_every_command(self) -> None:
        """scheduler0 --help names every command and exits 0."""
        self.assertEqual(self.run_cli("--help"), 0)
        for command in COMMANDS:
            self.assertIn(command, self.stdout.getvalue())

    def test_every_command_has_help_and_config(self) -> None:
        """Each command answers --help and accepts --config PATH."""
        for argv in LEAVES:
            self.assertEqual(self.run_cli(*argv, "--help"), 0, argv)
            self.assertIn("--config PATH", self.stdout.getvalue(), argv)

    def test_no_command_prints_usage(self) -> None:
        """Without a command the usage goes to stderr and the exit code is 2."""
        self.assertEqual(self.run_cli(), 2)
        self.assertIn("usage: scheduler0", self.stderr.getvalue())

    def test_group_without_action_prints_its_usage(self) -> None:
        """scheduler0 credential alone shows that group's actions."""
        self.assertEqual(self.run_cli("credential"), 2)
        self.assertIn("show", self.stderr.getvalue())

    def test_unknown_command_is_one_line(self) -> None:
        """An unknown command is a usage error on one line."""
        self.assertEqual(self.run_cli("frobnicate"), 2)
        self.assertIn("invalid choice: 'frobnicate'", self.one_error_line())

    def test_version(self) -> None:
        """version prints the package version."""
        self.assertEqual(self.run_cli("version"), 0)
        self.assertEqual(self.stdout.getvalue(), f"scheduler0 {__version__}\n")
        self.assertEqual(self.run_cli("--version"), 0)
        self.assertEqual(self.stdout.getvalue(), f"scheduler0 {__version__}\n")


class ConfigInitTests(CliTestCase):
    """scheduler0 config init."""

    def test_writes_a_loadable_default_file(self) -> None:
        """config init writes ./config.yml holding the defaults."""
        self.assertEqual(self.run_cli("config", "init"), 0)
        path = os.path.join(self.cwd, "config.yml")
        self.assertIn(path, self.stdout.getvalue())
        config = load_config(None, {}, self.cwd)
        self.assertEqual((config.source, config.port, config.node_id), (path, 9091, 1))

    def test_every_key_has_a_comment(self) -> None:
        """Each key line of the written file carries a comment."""
        self.run_cli("config", "init", "--path", "x.yml")
        with open(os.path.join(self.cwd, "x.yml")) as f:
            lines = [line for line in f if line[:1].isalpha()]
        self.assertGreaterEqual(len(lines), 33)
        for line in lines:
            self.assertIn("  # ", line)

    def test_refuses_to_overwrite(self) -> None:
        """An existing file is left alone without --force."""
        path = os.path.join(self.cwd, "config.yml")
        with open(path, "w") as f:
            f.write("Port: 9999\n")
        self.assertEqual(self.run_cli("config", "init"), 2)
        self.assertIn("already exists; pass --force", self.one_error_line())
        with open(path) as f:
            self.assertEqual(f.read(), "Port: 9999\n")

    def test_force_overwrites(self) -> None:
        """--force replaces an existing file."""
        path = os.path.join(self.cwd, "config.yml")
        with open(path, "w") as f:
            f.write("Port: 9999\n")
        self.assertEqual(self.run_cli("config", "init", "--force"), 0)
        self.assertEqual(load_config(None, {}, self.cwd).port, 9091)

    def test_does_not_touch_data(self) -> None:
        """config init never deletes the data directory or credentials."""
        os.makedirs(os.path.join(self.cwd, "scheduler0-data"))
        self.save_admin()
        self.run_cli("config", "init", "--force")
        self.assertTrue(os.path.isdir(os.path.join(self.cwd, "scheduler0-data")))
        self.assertTrue(os.path.exists(os.path.join(self.cwd, ".scheduler0")))

    def test_missing_directory(self) -> None:
        """A --path into a missing directory is one clear line."""
        self.assertEqual(self.run_cli("config", "init", "--path", "no/such/c.yml"), 2)
        self.assertIn("directory does not exist", self.one_error_line())


class CredentialInitTests(CliTestCase):
    """scheduler0 credential init."""

    def creds_file(self) -> str:
        return os.path.join(self.cwd, ".scheduler0")

    def test_flags_write_the_file_with_mode_0600(self) -> None:
        """All three flags write .scheduler0 (0600) without prompting."""
        code = self.run_cli(
            "credential", "init", "--username", "ops", "--password", "pw", "--secret-key", "sk"
        )
        self.assertEqual(code, 0, self.stderr.getvalue())
        self.assertEqual(stat.S_IMODE(os.stat(self.creds_file()).st_mode), 0o600)
        with open(self.creds_file()) as f:
            self.assertEqual(
                yaml.safe_load(f), {"AuthUsername": "ops", "AuthPassword": "pw", "SecretKey": "sk"}
            )
        self.assertNotIn("pw", self.stdout.getvalue().replace(".scheduler0", ""))

    def test_prompts_for_everything(self) -> None:
        """Interactively it asks for username, masked password and masked secret key."""
        prompt = FakePrompt("ops", "hunter2", "my-secret")
        self.assertEqual(self.run_cli("credential", "init", prompt=prompt), 0)
        self.assertEqual([secret for _, secret in prompt.asked], [False, True, True])
        self.assertIn("Auth Username", prompt.asked[0][0])
        self.assertIn("Auth Password", prompt.asked[1][0])
        self.assertIn("Secret Key", prompt.asked[2][0])
        creds = load_admin_credentials(self.config(), {})
        self.assertEqual(creds, AdminCredentials("ops", "hunter2", "my-secret"))
        self.assertNotIn("hunter2", self.stdout.getvalue() + self.stderr.getvalue())

    def test_blank_secret_key_is_generated(self) -> None:
        """A blank secret key answer generates one; a blank username means admin."""
        prompt = FakePrompt("", "hunter2", "")
        self.assertEqual(self.run_cli("credential", "init", prompt=prompt), 0)
        creds = load_admin_credentials(self.config(), {})
        assert creds is not None
        self.assertEqual(creds.username, "admin")
        self.assertGreaterEqual(len(creds.secret_key), 32)
        self.assertIn("generated the secret key", self.stdout.getvalue())

    def test_empty_password_is_asked_again(self) -> None:
        """An empty password is not accepted."""
        prompt = FakePrompt("ops", "", "pw", "sk")
        self.assertEqual(self.run_cli("credential", "init", prompt=prompt), 0)
        self.assertEqual(load_admin_credentials(self.config(), {}).password, "pw")

    def test_tty_stdin_counts_as_interactive(self) -> None:
        """With a terminal on stdin the default prompt is used."""
        prompt_calls: list[str] = []

        def fake_default(text: str, secret: bool) -> str:
            prompt_calls.append(text)
            return {"Auth Username [admin]: ": "u"}.get(text, "x")

        self.patch(cli_context, "_default_prompt", fake_default)
        self.assertEqual(self.run_cli("credential", "init", stdin=_TTYInput("")), 0)
        self.assertEqual(len(prompt_calls), 3)

    def test_existing_file_asks_before_replacing(self) -> None:
        """An existing .scheduler0 is replaced only after a yes."""
        self.save_admin()
        prompt = FakePrompt("y", "new", "newpw", "newkey")
        self.assertEqual(self.run_cli("credential", "init", prompt=prompt), 0)
        self.assertIn("replace? [y/N]", prompt.asked[0][0])
        self.assertEqual(load_admin_credentials(self.config(), {}).username, "new")

    def test_existing_file_kept_on_no(self) -> None:
        """Anything but yes keeps the existing credentials."""
        original = self.save_admin()
        prompt = FakePrompt("")
        self.assertEqual(self.run_cli("credential", "init", prompt=prompt), 1)
        self.assertEqual(load_admin_credentials(self.config(), {}), original)
        self.assertIn("kept", self.stdout.getvalue())

    def test_not_a_tty_without_flags_fails_fast(self) -> None:
        """Without a terminal and flags it fails with one line naming the flags."""
        self.assertEqual(self.run_cli("credential", "init", "--username", "u"), 2)
        line = self.one_error_line()
        self.assertIn("stdin is not a terminal", line)
        self.assertIn("--password", line)
        self.assertIn("--secret-key", line)
        self.assertNotIn("--username,", line)
        self.assertFalse(os.path.exists(self.creds_file()))

    def test_not_a_tty_existing_needs_force(self) -> None:
        """Without a terminal an existing file is replaced only with --force."""
        original = self.save_admin()
        argv = ("credential", "init", "--generate")
        self.assertEqual(self.run_cli(*argv), 2)
        self.assertIn("pass --force", self.one_error_line())
        self.assertEqual(load_admin_credentials(self.config(), {}), original)
        self.assertEqual(self.run_cli(*argv, "--force"), 0)
        self.assertNotEqual(load_admin_credentials(self.config(), {}), original)

    def test_generate(self) -> None:
        """--generate creates the password and secret key for user admin."""
        self.assertEqual(self.run_cli("credential", "init", "--generate"), 0)
        creds = load_admin_credentials(self.config(), {})
        assert creds is not None
        self.assertEqual(creds.username, "admin")
        self.assertNotIn(creds.password, self.stdout.getvalue())
        self.assertNotIn(creds.secret_key, self.stdout.getvalue())

    def test_written_beside_the_config_file(self) -> None:
        """With --config elsewhere, .scheduler0 goes beside that file."""
        os.makedirs(os.path.join(self.cwd, "etc"))
        with open(os.path.join(self.cwd, "etc", "node.yml"), "w") as f:
            f.write("NodeId: 1\n")
        code = self.run_cli("credential", "init", "--config", "etc/node.yml", "--generate")
        self.assertEqual(code, 0)
        self.assertTrue(os.path.exists(os.path.join(self.cwd, "etc", ".scheduler0")))

    def test_bad_config_is_exit_2(self) -> None:
        """A bad config stops the command with one line and exit 2."""
        with open(os.path.join(self.cwd, "config.yml"), "w") as f:
            f.write("MaxWorker: 1\n")
        self.assertEqual(self.run_cli("credential", "init", "--generate"), 2)
        self.assertIn("did you mean 'MaxWorkers'?", self.one_error_line())


class CredentialShowTests(CliTestCase):
    """scheduler0 credential show."""

    def test_hides_secrets_by_default(self) -> None:
        """The username and path are shown; the password and secret are not."""
        self.save_admin()
        self.assertEqual(self.run_cli("credential", "show"), 0)
        out = self.stdout.getvalue()
        self.assertIn("admin", out)
        self.assertIn(os.path.join(self.cwd, ".scheduler0"), out)
        self.assertNotIn("pw-123", out)
        self.assertNotIn("key-456", out)

    def test_reveal(self) -> None:
        """--reveal shows the password and secret key."""
        self.save_admin()
        self.assertEqual(self.run_cli("credential", "show", "--reveal"), 0)
        self.assertIn("pw-123", self.stdout.getvalue())
        self.assertIn("key-456", self.stdout.getvalue())

    def test_environment_overrides_are_reported(self) -> None:
        """Variables that override the file are named."""
        self.save_admin()
        self.environ["SCHEDULER0_AUTH_USERNAME"] = "envuser"
        self.assertEqual(self.run_cli("credential", "show"), 0)
        self.assertIn("envuser", self.stdout.getvalue())
        self.assertIn("SCHEDULER0_AUTH_USERNAME", self.stdout.getvalue())

    def test_no_credentials(self) -> None:
        """Without credentials it says how to create them."""
        self.assertEqual(self.run_cli("credential", "show"), 1)
        self.assertIn("scheduler0 credential init", self.one_error_line())


class SecretsSealTests(CliTestCase):
    """scheduler0 secrets seal."""

    body = {"success": True, "data": {"resealed": 3, "skipped": 0, "key_id": "ab12cd34"}}

    def test_seals_under_the_node_key(self) -> None:
        """Without key files it POSTs an empty body as admin and prints the count and key id."""
        self.save_admin()
        http = FakeHttp(200, self.body)
        self.assertEqual(self.run_cli("secrets", "seal", http=http), 0)
        (call,) = http.calls
        self.assertEqual(
            (call["method"], call["url"], call["auth"], call["json"]),
            ("POST", "http://127.0.0.1:9091/api/v1/signing-secrets/seal", ("admin", "pw-123"), {}),
        )
        self.assertIn("sealed 3 signing secrets under key id ab12cd34", self.stdout.getvalue())

    def test_prints_credential_hashes_by_key(self) -> None:
        """The node's counts of client secret hashes by key are printed (rotating SecretKey)."""
        self.save_admin()
        hashes = {"current_key": 4, "previous_keys": 1, "pbkdf2": 0, "unknown_key": 0}
        body = {"success": True, "data": {**self.body["data"], "credential_hashes": hashes}}
        self.assertEqual(self.run_cli("secrets", "seal", http=FakeHttp(200, body)), 0)
        self.assertIn(
            "client credential secrets hashed under: current_key 4, pbkdf2 0, previous_keys 1,"
            " unknown_key 0",
            self.stdout.getvalue(),
        )

    def test_keys_come_from_files(self) -> None:
        """--new-key-file and --old-key-file send the keys they hold (never from argv)."""
        self.save_admin()
        for name, key in (("new.key", "n" * 32), ("old.key", "o" * 32)):
            with open(os.path.join(self.cwd, name), "w") as f:
                f.write(key + "\n")
        http = FakeHttp(200, self.body)
        argv = ("secrets", "seal", "--new-key-file", "new.key", "--old-key-file", "old.key")
        self.assertEqual(self.run_cli(*argv, http=http), 0)
        self.assertEqual(
            http.calls[0]["json"], {"new_secret_key": "n" * 32, "old_secret_key": "o" * 32}
        )
        self.assertNotIn("n" * 32, self.stdout.getvalue() + self.stderr.getvalue())

    def test_short_or_missing_key_file(self) -> None:
        """A key file that is missing or holds a short key is one line naming the option."""
        self.save_admin()
        self.assertEqual(self.run_cli("secrets", "seal", "--new-key-file", "nope"), 1)
        self.assertIn("--new-key-file: cannot read", self.one_error_line())
        with open(os.path.join(self.cwd, "short.key"), "w") as f:
            f.write("short")
        self.assertEqual(self.run_cli("secrets", "seal", "--old-key-file", "short.key"), 1)
        self.assertIn("--old-key-file", self.one_error_line())


class CreateCredentialTests(CliTestCase):
    """scheduler0 create credential."""

    body = {
        "success": True,
        "data": {"uuid": "u-1", "api_key": "AK", "api_secret": "AS", "archived": False},
    }

    def test_prints_key_and_secret(self) -> None:
        """It POSTs to the node with basic auth and prints api_key and api_secret."""
        self.save_admin()
        http = FakeHttp(201, self.body)
        self.assertEqual(self.run_cli("create", "credential", http=http), 0)
        self.assertEqual(self.stdout.getvalue(), "api_key: AK\napi_secret: AS\n")
        (call,) = http.calls
        self.assertEqual(call["method"], "POST")
        self.assertEqual(call["url"], "http://127.0.0.1:9091/api/v1/credentials")
        self.assertEqual(call["auth"], ("admin", "pw-123"))
        self.assertEqual(call["json"], {})

    def test_unconfirmed_is_worded_for_the_command(self) -> None:
        """
        A 503 on the write says it may still have been applied, without the
        API's advice to send an HTTP header no command of the CLI sets.
        """
        self.save_admin()
        unconfirmed = {
            "success": False,
            "data": None,
            "error": {
                "code": "unavailable",
                "fields": {},
                "message": "the cluster did not confirm this write in time (no leader, no "
                "quorum, or slower than RaftApplyTimeout); it may still be applied: retry with "
                "the same Idempotency-Key header to have it applied at most once",
            },
        }
        self.assertEqual(self.run_cli("create", "credential", http=FakeHttp(503, unconfirmed)), 1)
        line = self.stderr.getvalue().strip()
        self.assertIn("answered 503: the node did not confirm this write in time", line)
        self.assertIn("it may still have been applied: check before running the command", line)
        self.assertNotIn("header", line)

    def test_json(self) -> None:
        """--json prints the data object."""
        self.save_admin()
        self.assertEqual(
            self.run_cli("create", "credential", "--json", http=FakeHttp(201, self.body)), 0
        )
        self.assertEqual(json.loads(self.stdout.getvalue()), self.body["data"])

    def test_uses_the_configured_address(self) -> None:
        """The node address comes from the config and its environment overrides."""
        self.save_admin()
        self.environ["SCHEDULER0_PORT"] = "9200"
        http = FakeHttp(201, self.body)
        self.run_cli("create", "credential", http=http)
        self.assertEqual(http.calls[0]["url"], "http://127.0.0.1:9200/api/v1/credentials")

    def test_connection_refused(self) -> None:
        """A node that is not running is one line saying so, exit 1."""
        self.save_admin()
        http = FakeHttp(error=ConnectionRefusedError(111, "Connection refused"))
        self.assertEqual(self.run_cli("create", "credential", http=http), 1)
        self.assertEqual(
            self.one_error_line(),
            "scheduler0: cannot reach node at http://127.0.0.1:9091: connection refused "
            "(is it running?)",
        )

    def test_timeout(self) -> None:
        """A node that does not answer is one line."""
        self.save_admin()
        self.assertEqual(
            self.run_cli("create", "credential", http=FakeHttp(error=TimeoutError())), 1
        )
        self.assertIn("no answer within", self.one_error_line())

    def test_rejected_credentials(self) -> None:
        """A 401 says the admin credentials do not match the node's."""
        self.save_admin()
        http = FakeHttp(401, {"success": False, "error": {"code": "unauthorized"}})
        self.assertEqual(self.run_cli("create", "credential", http=http), 1)
        self.assertIn("rejected the admin credentials", self.one_error_line())
        self.assertNotIn("pw-123", self.stderr.getvalue())

    def test_server_error_message(self) -> None:
        """Another error status is reported with the node's message."""
        self.save_admin()
        http = FakeHttp(
            503, {"success": False, "error": {"code": "unavailable", "message": "no leader"}}
        )
        self.assertEqual(self.run_cli("create", "credential", http=http), 1)
        self.assertIn("answered 503: no leader", self.one_error_line())

    def test_without_admin_credentials(self) -> None:
        """Without credentials nothing is sent."""
        http = FakeHttp(201, self.body)
        self.assertEqual(self.run_cli("create", "credential", http=http), 1)
        self.assertEqual(http.calls, [])
        self.assertIn("credential init", self.one_error_line())

    def test_environment_credentials(self) -> None:
        """Credentials from the environment alone are enough."""
        self.environ.update(
            {
                "SCHEDULER0_AUTH_USERNAME": "u",
                "SCHEDULER0_AUTH_PASSWORD": "p",
                "SCHEDULER0_SECRET_KEY": "k",
            }
        )
        http = FakeHttp(201, self.body)
        self.assertEqual(self.run_cli("create", "credential", http=http), 0)
        self.assertEqual(http.calls[0]["auth"], ("u", "p"))


class StatusTests(CliTestCase):
    """scheduler0 status."""

    health = {
        "node_id": 1,
        "role": "leader",
        "leader_id": 1,
        "leader_address": "http://127.0.0.1:9091",
        "term": 7,
        "commit_index": 42,
        "applied_index": 41,
        "scheduling_paused": True,
        "pause_reason": "max_memory",
        "members": [
            {
                "node_id": 1,
                "address": "http://127.0.0.1:9091",
                "raft_address": "127.0.0.1:7071",
                "role": "leader",
                "last_contact": None,
            },
            {
                "node_id": 2,
                "address": "http://127.0.0.1:9092",
                "raft_address": "127.0.0.1:7072",
                "role": "follower",
                "last_contact": "2026-01-01T00:00:00.000Z",
            },
        ],
    }

    def test_table(self) -> None:
        """The health check becomes a summary and a member table."""
        self.save_admin()
        http = FakeHttp(200, {"success": True, "data": self.health})
        self.assertEqual(self.run_cli("status", http=http), 0)
        out = self.stdout.getvalue()
        self.assertEqual(http.calls[0]["method"], "GET")
        self.assertEqual(http.calls[0]["url"], "http://127.0.0.1:9091/api/v1/healthcheck")
        self.assertEqual(http.calls[0]["auth"], ("admin", "pw-123"))
        for text in (
            "leader",
            "term:        7",
            "42 / 41",
            "paused (max_memory)",
            "127.0.0.1:7072",
            "follower",
            "2026-01-01T00:00:00.000Z",
        ):
            self.assertIn(text, out)
        header = [line for line in out.splitlines() if line.startswith("NODE")]
        self.assertEqual(len(header), 1)

    def test_table_from_the_cluster_view(self) -> None:
        """With peer credentials, the table shows each member as GET /cluster reports it."""
        self.save_admin()
        cluster = {
            "node_id": 1,
            "leader_id": 1,
            "term": 7,
            "members": [
                {
                    "node_id": 1,
                    "address": "http://127.0.0.1:9091",
                    "raft_address": "x:1",
                    "role": "leader",
                    "voter": True,
                    "reachable": True,
                    "term": 7,
                    "commit_index": 42,
                    "applied_index": 41,
                    "lease_valid": True,
                    "owned_jobs": 1234,
                },
                {
                    "node_id": 2,
                    "address": "http://127.0.0.1:9092",
                    "raft_address": "x:2",
                    "role": "unreachable",
                    "voter": True,
                    "reachable": False,
                    "term": None,
                    "commit_index": None,
                    "applied_index": None,
                    "lease_valid": None,
                    "owned_jobs": 0,
                },
            ],
        }
        answers = [self.health, cluster]

        class TwoAnswers(FakeHttp):
            def __call__(self, method: str, url: str, **kwargs: Any) -> Any:
                self.body = {"success": True, "data": answers[len(self.calls)]}
                return super().__call__(method, url, **kwargs)

        http = TwoAnswers(200, None)
        self.assertEqual(self.run_cli("status", http=http), 0)
        self.assertEqual(
            http.calls[1]["url"], "http://127.0.0.1:9091/api/v1/cluster?consistency=stale"
        )
        out = self.stdout.getvalue()
        rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
        self.assertEqual(rows[0][:3], ["1", "leader", "http://127.0.0.1:9091"])
        self.assertIn("1234", rows[0])
        self.assertEqual(rows[1][:4], ["2", "unreachable", "http://127.0.0.1:9092", "False"])

    def test_a_ready_node_says_so(self) -> None:
        """A ready node's status says ready: yes, lists no reason, and exits 0."""
        health = {
            **self.health,
            "scheduling_paused": False,
            "lease_valid": True,
            "ready": True,
            "reasons": [],
        }
        http = FakeHttp(200, {"success": True, "data": health})
        self.assertEqual(self.run_cli("status", http=http), 0)
        out = self.stdout.getvalue()
        self.assertIn("ready:       yes", out)
        self.assertIn("scheduling:  running", out)
        self.assertNotIn("not ready", out)

    def test_a_node_that_is_not_ready_exits_1_and_says_why(self) -> None:
        """
        The 503 health check is an answer, not an error: status prints it,
        ready: no, one line per reason, that nothing fires, and exits 1.
        """
        self.save_admin()
        health = {
            **self.health,
            "scheduling_paused": False,
            "lease_valid": False,
            "leader_id": None,
            "ready": False,
            "reasons": [
                {"code": "no_leader", "message": "no leader is known"},
                {"code": "lease_lapsed", "message": "this node's lease lapsed 2.0 s ago"},
            ],
        }
        answers = [
            (
                503,
                {
                    "success": False,
                    "data": health,
                    "error": {"code": "not_ready", "message": "not ready", "fields": {}},
                },
            ),
            (
                503,
                {
                    "success": False,
                    "data": None,
                    "error": {"code": "unavailable", "message": "no quorum", "fields": {}},
                },
            ),
        ]

        class Answers(FakeHttp):
            def __call__(self, method: str, url: str, **kwargs: Any) -> Any:
                self.status, self.body = answers[len(self.calls)]
                return super().__call__(method, url, **kwargs)

        http = Answers()
        self.assertEqual(self.run_cli("status", http=http), 1)
        out = self.stdout.getvalue()
        self.assertEqual(self.stderr.getvalue(), "")
        self.assertIn("ready:       no", out)
        self.assertIn("not ready:   no_leader: no leader is known\n", out)
        self.assertIn("not ready:   lease_lapsed: this node's lease lapsed 2.0 s ago\n", out)
        self.assertIn("scheduling:  stopped (no valid lease", out)
        # The members table still comes (from the health check, as /cluster failed).
        self.assertIn("127.0.0.1:7072", out)

    def test_json_of_a_node_that_is_not_ready_exits_1(self) -> None:
        """--json prints the 503's health data and exits 1."""
        health = {**self.health, "ready": False, "reasons": [{"code": "no_quorum", "message": "m"}]}
        http = FakeHttp(
            503,
            {
                "success": False,
                "data": health,
                "error": {"code": "not_ready", "message": "m", "fields": {}},
            },
        )
        self.assertEqual(self.run_cli("status", "--json", http=http), 1)
        self.assertEqual(json.loads(self.stdout.getvalue()), health)

    def test_another_503_is_an_error(self) -> None:
        """A 503 that carries no health data (a proxy, say) is one error line, exit 1."""
        http = FakeHttp(
            503,
            {
                "success": False,
                "data": None,
                "error": {"code": "unavailable", "message": "busy", "fields": {}},
            },
        )
        self.assertEqual(self.run_cli("status", http=http), 1)
        self.assertIn("answered 503: busy", self.one_error_line())
        self.assertEqual(self.stdout.getvalue(), "")

    def test_json(self) -> None:
        """--json prints the health check data."""
        http = FakeHttp(200, {"success": True, "data": self.health})
        self.assertEqual(self.run_cli("status", "--json", http=http), 0)
        self.assertEqual(json.loads(self.stdout.getvalue()), self.health)

    def test_without_credentials_is_anonymous(self) -> None:
        """The health check is tried without auth when there are no credentials."""
        http = FakeHttp(200, {"success": True, "data": {"node_id": 1, "members": []}})
        self.assertEqual(self.run_cli("status", http=http), 0)
        self.assertIsNone(http.calls[0]["auth"])
        self.assertIn("scheduling:  running", self.stdout.getvalue())

    def test_connection_refused(self) -> None:
        """A stopped node is one line, exit 1."""
        http = FakeHttp(error=ConnectionRefusedError(111, "Connection refused"))
        self.assertEqual(self.run_cli("status", http=http), 1)
        self.assertIn("connection refused (is it running?)", self.one_error_line())

    def test_config_option_selects_the_node(self) -> None:
        """--config points status at the node that file describes."""
        with open(os.path.join(self.cwd, "n2.yml"), "w") as f:
            f.write("Port: 9092\nHost: 10.1.1.1\n")
        http = FakeHttp(200, {"success": True, "data": self.health})
        self.assertEqual(self.run_cli("status", "--config", "n2.yml", http=http), 0)
        self.assertEqual(http.calls[0]["url"], "http://10.1.1.1:9092/api/v1/healthcheck")

    def test_global_config_option(self) -> None:
        """--config before the command works too."""
        with open(os.path.join(self.cwd, "n2.yml"), "w") as f:
            f.write("Port: 9092\n")
        http = FakeHttp(200, {"success": True, "data": self.health})
        self.assertEqual(self.run_cli("--config", "n2.yml", "status", http=http), 0)
        self.assertEqual(http.calls[0]["url"], "http://127.0.0.1:9092/api/v1/healthcheck")


class StartTests(CliTestCase):
    """scheduler0 start (validation and the twistd argv only)."""

    def setUp(self) -> None:
        super().setUp()
        self.runs: list[list[str]] = []

        def fake_run(argv: list[str]) -> int:
            self.runs.append(argv)
            return 0

        self.patch(cli, "run_twistd", fake_run)

    def test_argv_with_config(self) -> None:
        """start runs twistd in the foreground with the resolved config path."""
        path = os.path.join(self.cwd, "config.yml")
        with open(path, "w") as f:
            f.write("NodeId: 1\n")
        self.assertEqual(self.run_cli("start"), 0)
        self.assertEqual(
            self.runs, [["twistd", "--nodaemon", "--pidfile=", "scheduler0", "--config", path]]
        )

    def test_argv_without_config(self) -> None:
        """With no config file anywhere twistd gets no --config."""
        self.assertEqual(self.run_cli("start"), 0)
        self.assertEqual(self.runs, [["twistd", "--nodaemon", "--pidfile=", "scheduler0"]])

    def test_log_format_json_is_passed_to_the_node(self) -> None:
        """start --log-format json asks the twistd plugin for JSON lines."""
        self.assertEqual(self.run_cli("start", "--log-format", "json"), 0)
        self.assertEqual(self.runs[0][-2:], ["--log-format", "json"])

    def test_unknown_log_format_is_refused(self) -> None:
        """start --log-format xml is a usage error; twistd never runs."""
        self.assertEqual(self.run_cli("start", "--log-format", "xml"), 2)
        self.assertEqual(self.runs, [])

    def test_environment_config_path(self) -> None:
        """$SCHEDULER0_CONFIG is resolved to an absolute path for twistd."""
        with open(os.path.join(self.cwd, "n.yml"), "w") as f:
            f.write("NodeId: 1\n")
        self.environ["SCHEDULER0_CONFIG"] = "n.yml"
        self.run_cli("start")
        self.assertEqual(self.runs[0][-2:], ["--config", os.path.join(self.cwd, "n.yml")])

    def test_invalid_config_stops_before_twistd(self) -> None:
        """A bad config is one line and exit 2; twistd never runs."""
        with open(os.path.join(self.cwd, "config.yml"), "w") as f:
            f.write("Port: 99999\n")
        self.assertEqual(self.run_cli("start"), 2)
        self.assertIn("Port: invalid value 99999", self.one_error_line())
        self.assertEqual(self.runs, [])

    def test_invalid_environment_stops_before_twistd(self) -> None:
        """A bad override variable is caught before twistd starts."""
        self.environ["SCHEDULER0_NODE_ID"] = "zero"
        self.assertEqual(self.run_cli("start"), 2)
        self.assertIn("SCHEDULER0_NODE_ID", self.one_error_line())
        self.assertEqual(self.runs, [])

    def test_missing_config_file(self) -> None:
        """A --config that does not exist is exit 2."""
        self.assertEqual(self.run_cli("start", "--config", "nope.yml"), 2)
        self.assertIn("config: file not found:", self.one_error_line())
        self.assertEqual(self.runs, [])

    def test_warnings_are_printed(self) -> None:
        """Config warnings go to stderr and do not stop the start."""
        with open(os.path.join(self.cwd, "config.yml"), "w") as f:
            f.write("PeerAuthRequestTimeoutMs: 2\n")
        self.assertEqual(self.run_cli("start"), 0)
        self.assertIn("warning: PeerAuthRequestTimeoutMs", self.stderr.getvalue())
        self.assertEqual(len(self.runs), 1)


class UrllibHttpTests(SynchronousTestCase):
    """The default HTTP function."""

    def test_connection_refused_is_raised(self) -> None:
        """A closed port raises ConnectionRefusedError, which the CLI reports."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()
        self.assertRaises(
            ConnectionRefusedError,
            cli.urllib_http,
            "GET",
            f"http://127.0.0.1:{port}/api/v1/healthcheck",
            timeout=2,
        )
