"""
The C{scheduler0} command: write a config, manage the admin credentials,
ask a node for client credentials or its status, and start a node.

Everything that touches the outside (streams, environment, working
directory, prompts, HTTP) is a parameter of L{main}, so tests drive the
whole command in memory. User mistakes print one line on stderr and exit 2;
failures talking to a node exit 1; neither prints a traceback.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, NoReturn, cast

from scheduler0 import __version__
from scheduler0.cli.context import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    Context,
    Http,
    Prompt,
    require_credentials,
)
from scheduler0.config import (
    CONFIG_FILE_NAME,
    Config,
    ConfigError,
    find_config_path,
    render_default_config,
)
from scheduler0.credentials import (
    FIELDS,
    AdminCredentials,
    credentials_path,
    generate_password,
    generate_secret_key,
    load_admin_credentials,
    save_admin_credentials,
)
from scheduler0.files import write_atomically

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

HTTP_TIMEOUT = 10.0


class _ParserExit(Exception):
    """argparse wanted to exit (after --help, or on a usage error)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that writes to injected streams and never calls sys.exit."""

    def __init__(self, *args: Any, streams: tuple[IO[str], IO[str]], **kwargs: Any) -> None:
        self._streams = streams
        super().__init__(*args, **kwargs)

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if message:
            out, err = self._streams
            if file is None or file is sys.stdout:
                file = out
            elif file is sys.stderr:
                file = err
            file.write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._streams[1].write(message)
        raise _ParserExit(status)

    def error(self, message: str) -> NoReturn:
        self._streams[1].write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise _ParserExit(EXIT_USAGE)


def build_parser(stdout: IO[str], stderr: IO[str]) -> argparse.ArgumentParser:
    """The full command tree; every command takes C{--config PATH}."""
    factory = functools.partial(_Parser, streams=(stdout, stderr))
    parser = factory(
        prog="scheduler0",
        description="Scheduler0: a distributed cron-job server.",
        epilog="Config lookup: --config, then $SCHEDULER0_CONFIG, then ./config.yml, "
        "then defaults.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--config",
        dest="global_config",
        metavar="PATH",
        help="config file (default: $SCHEDULER0_CONFIG, then ./config.yml)",
    )
    # Also accepted before the command (`scheduler0 --json jobs list`), for
    # every command that has --json (see _global_json).
    parser.add_argument(
        "--json",
        dest="global_json",
        action="store_true",
        help="print the data as JSON (commands that have --json)",
    )
    # argparse only calls parser_class, and the partial makes _Parser
    # instances; typeshed asks for the class itself.
    subparser_class = cast("type[_Parser]", factory)
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=subparser_class
    )

    common = factory(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $SCHEDULER0_CONFIG, then ./config.yml)",
    )

    def group(name: str, help_text: str) -> Any:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=_group_help(sub))
        return sub.add_subparsers(dest="action", metavar="ACTION", parser_class=subparser_class)

    def leaf(where: Any, name: str, help_text: str, handler: Callable[..., int]) -> Any:
        sub = where.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub.set_defaults(handler=handler)
        return sub

    config = group("config", "manage the config file")
    init = leaf(
        config,
        "init",
        "write a config file with every key, its default and a comment",
        _config_init,
    )
    init.add_argument("--path", help=f"file to write (default: ./{CONFIG_FILE_NAME})")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")

    credential = group("credential", "manage the admin credentials in .scheduler0")
    init = leaf(
        credential,
        "init",
        "set the admin username, password and secret key (prompts unless given flags)",
        _credential_init,
    )
    init.add_argument("--username", help="admin username")
    init.add_argument(
        "--password",
        help="admin password (visible in the process list; prefer the prompt or --generate)",
    )
    init.add_argument("--secret-key", dest="secret_key", help="secret key for client credentials")
    init.add_argument(
        "--generate",
        action="store_true",
        help="generate the password and secret key that are not given (username defaults to admin)",
    )
    init.add_argument("--force", action="store_true", help="replace existing credentials")
    show = leaf(
        credential, "show", "print the admin username and where the secrets are", _credential_show
    )
    show.add_argument(
        "--reveal", action="store_true", help="also print the password and secret key"
    )

    create = group("create", "create resources on a node")
    created = leaf(
        create, "credential", "ask the node for a new client api_key/api_secret", _create_credential
    )
    created.add_argument("--json", action="store_true", help="print the credential as JSON")

    secrets = group("secrets", "signing secrets at rest")
    seal = leaf(
        secrets,
        "seal",
        "seal every stored signing secret under the node's SecretKey, or under a new one"
        " (rotating SecretKey: see README)",
        _seal_secrets,
    )
    seal.add_argument(
        "--new-key-file",
        metavar="PATH",
        help="file holding the new SecretKey to seal under (the first step of rotating it)",
    )
    seal.add_argument(
        "--old-key-file",
        metavar="PATH",
        help="file holding a previous SecretKey that opens secrets still sealed under it",
    )

    start = leaf(commands, "start", "run the node in the foreground", _start)
    start.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default), or json: one JSON object per event and line",
    )
    status = leaf(
        commands,
        "status",
        "print the cluster as the configured node sees it; exit 1 when that node is not ready",
        _status,
    )
    status.add_argument("--json", action="store_true", help="print the health check as JSON")
    leaf(commands, "version", "print the version", _version)
    from scheduler0.cli.resources import add_resource_commands

    add_resource_commands(group, leaf, commands)
    from scheduler0.cli.backup import add_backup_commands

    add_backup_commands(commands, leaf)
    return parser


def _group_help(parser: argparse.ArgumentParser) -> Callable[..., int]:
    def show(context: Context) -> int:
        parser.print_help(context.stderr)
        return EXIT_USAGE

    return show


# urllib_http's keyword C{json} (the body) shadows the module inside it.
_json_dumps = json.dumps
_json_loads = json.loads


def urllib_http(
    method: str,
    url: str,
    *,
    json: Any = None,
    auth: tuple[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """
    One blocking JSON request (the CLI has no reactor). Returns the status and
    the parsed body (C{None} if it is not JSON); transport failures raise
    C{OSError} (C{ConnectionRefusedError}, C{TimeoutError}, ...).
    """
    body = None if json is None else _json_dumps(json).encode("utf-8")
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Accept", "application/json")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, OSError):
            raise reason from None
        raise OSError(str(reason)) from None
    try:
        return status, _json_loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return status, None


def run_twistd(argv: list[str]) -> int:
    """Run twistd in this process with C{argv} (replaced in tests)."""
    from twisted.scripts import twistd

    sys.argv = argv
    try:
        twistd.run()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_FAILURE)
    return EXIT_OK


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
    prompt: Prompt | None = None,
    http: Http | None = None,
) -> int:
    """Run the C{scheduler0} command and return its exit code."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    environ = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    parser = build_parser(stdout, stderr)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except _ParserExit as e:
        return e.code
    if args.version:
        stdout.write(f"scheduler0 {__version__}\n")
        return EXIT_OK
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(stderr)
        return EXIT_USAGE
    context = Context(args, stdin, stdout, stderr, environ, cwd, prompt, http or urllib_http)
    try:
        _global_json(args)
        return handler(context)
    except CommandError as e:
        stderr.write(f"scheduler0: {e}\n")
        return e.code
    except ConfigError as e:
        stderr.write(f"scheduler0: {e}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        stderr.write("scheduler0: interrupted\n")
        return 130


def _global_json(args: argparse.Namespace) -> None:
    """C{--json} before the command means the command's own C{--json}, which it must have."""
    if not getattr(args, "global_json", False):
        return
    if not hasattr(args, "json"):
        named = " ".join(n for n in (args.command, getattr(args, "action", None)) if n)
        raise CommandError(f"--json: `scheduler0 {named}` prints no JSON", EXIT_USAGE)
    args.json = True


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


# ---------------------------------------------------------------------------
# Commands


def _version(context: Context) -> int:
    context.out(f"scheduler0 {__version__}")
    return EXIT_OK


def _config_init(context: Context) -> int:
    args = context.args
    target = args.path or context.config_option or CONFIG_FILE_NAME
    path = os.path.abspath(os.path.join(context.cwd, os.path.expanduser(target)))
    if os.path.isdir(path):
        raise CommandError(f"config init: {path} is a directory", EXIT_USAGE)
    if os.path.exists(path) and not args.force:
        raise CommandError(
            f"config init: {path} already exists; pass --force to overwrite it", EXIT_USAGE
        )
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise CommandError(f"config init: directory does not exist: {directory}", EXIT_USAGE)
    try:
        write_atomically(path, render_default_config())
    except OSError as e:
        raise CommandError(f"config init: cannot write {path}: {e.strerror or e}") from None
    context.out(f"wrote {path}")
    return EXIT_OK


def _credential_init(context: Context) -> int:
    args = context.args
    config = context.load()
    path = credentials_path(config)
    interactive = context.interactive()
    username, password, secret_key = args.username, args.password, args.secret_key
    for flag, value in (
        ("--username", username),
        ("--password", password),
        ("--secret-key", secret_key),
    ):
        if value is not None and not value.strip():
            raise CommandError(f"credential init: {flag} must not be empty", EXIT_USAGE)

    if not interactive:
        missing = []
        if username is None and not args.generate:
            missing.append("--username")
        if password is None and not args.generate:
            missing.append("--password")
        if secret_key is None and not args.generate:
            missing.append("--secret-key")
        if missing:
            raise CommandError(
                "credential init: stdin is not a terminal; pass "
                + ", ".join(missing)
                + " (or --generate to create the secrets)",
                EXIT_USAGE,
            )
        if os.path.exists(path) and not args.force:
            raise CommandError(
                f"credential init: {path} already exists; pass --force to replace it", EXIT_USAGE
            )
    elif os.path.exists(path) and not args.force:
        answer = context.ask(f"Admin credentials already exist in {path}; replace? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            context.out(f"kept the existing credentials in {path}")
            return EXIT_FAILURE

    generated = []
    if username is None:
        username = "admin" if args.generate else _ask_username(context)
    if password is None:
        if args.generate:
            password = generate_password()
            generated.append("password")
        else:
            password = _ask_password(context)
    if secret_key is None:
        entered = (
            "" if args.generate else context.ask("Secret Key (leave blank to generate): ", True)
        )
        if entered.strip():
            secret_key = entered.strip()
        else:
            secret_key = generate_secret_key()
            generated.append("secret key")

    try:
        save_admin_credentials(path, AdminCredentials(username, password, secret_key))
    except OSError as e:
        raise CommandError(f"credential init: cannot write {path}: {e.strerror or e}") from None
    context.out(f"wrote admin credentials for {username!r} to {path} (mode 0600)")
    if generated:
        context.out(
            f"generated the {' and '.join(generated)}; "
            "see them with: scheduler0 credential show --reveal"
        )
    overriding = [variable for _, variable in FIELDS.values() if context.environ.get(variable)]
    if overriding:
        context.stderr.write(
            f"warning: {', '.join(overriding)} set in the environment override the file\n"
        )
    return EXIT_OK


def _ask_username(context: Context) -> str:
    entered = context.ask("Auth Username [admin]: ", False).strip()
    return entered or "admin"


def _ask_password(context: Context) -> str:
    for _ in range(3):
        entered = context.ask("Auth Password: ", True)
        if entered:
            return entered
        context.stderr.write("the password must not be empty\n")
    raise CommandError("credential init: no password given", EXIT_USAGE)


def _credential_show(context: Context) -> int:
    config = context.load()
    creds = require_credentials(context, config)
    context.out(f"username:   {creds.username}")
    context.out(f"file:       {credentials_path(config)}")
    if context.args.reveal:
        context.out(f"password:   {creds.password}")
        context.out(f"secret_key: {creds.secret_key}")
    else:
        context.out("password:   (hidden; use --reveal)")
        context.out("secret_key: (hidden; use --reveal)")
    overriding = [variable for _, variable in FIELDS.values() if context.environ.get(variable)]
    if overriding:
        context.out(f"overridden by the environment: {', '.join(overriding)}")
    return EXIT_OK


def _call_node(
    context: Context,
    config: Config,
    method: str,
    path: str,
    creds: AdminCredentials | None,
    body: Any = None,
) -> Any:
    """
    One request to the configured node; returns the response's C{data}, or
    raises L{CommandError} with a line saying what went wrong.
    """
    status, payload = _ask_node(context, config, method, path, creds, body)
    return _data_of(method, f"{config.http_address}{path}", status, payload)


def _ask_node(
    context: Context,
    config: Config,
    method: str,
    path: str,
    creds: AdminCredentials | None,
    body: Any = None,
) -> tuple[int, Any]:
    """
    One request to the configured node: its status and parsed body; a node
    that does not answer or refuses the credentials is a L{CommandError}.
    """
    url = f"{config.http_address}{path}"
    auth = (creds.username, creds.password) if creds is not None else None
    try:
        status, payload = context.http(method, url, json=body, auth=auth, timeout=HTTP_TIMEOUT)
    except ConnectionRefusedError:
        raise CommandError(
            f"cannot reach node at {config.http_address}: connection refused (is it running?)"
        ) from None
    except TimeoutError:
        raise CommandError(
            f"cannot reach node at {config.http_address}: no answer within {HTTP_TIMEOUT:g} s"
        ) from None
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise CommandError(f"cannot reach node at {config.http_address}: {reason}") from None
    if status == 401:
        raise CommandError(
            f"node at {config.http_address} rejected the admin credentials (401); they must "
            f"match the node's .scheduler0 (see: scheduler0 credential show)"
        )
    return status, payload


def _data_of(method: str, url: str, status: int, payload: Any) -> Any:
    """The C{data} of a successful answer; anything else is a L{CommandError}."""
    success = isinstance(payload, dict) and payload.get("success") is True
    if not 200 <= status < 300 or not success:
        message = ""
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            message = str(payload["error"].get("message") or payload["error"].get("code") or "")
        if status == 503 and method != "GET" and "Idempotency-Key" in message:
            # The API's advice (an HTTP header) is for API clients, not this command.
            message = (
                "the node did not confirm this write in time (no leader, no quorum, or slower "
                "than RaftApplyTimeout); it may still have been applied: check before running "
                "the command again"
            )
        detail = f": {message}" if message else ""
        raise CommandError(f"{method} {url} answered {status}{detail}")
    return payload.get("data")


def _create_credential(context: Context) -> int:
    config = context.load()
    creds = require_credentials(context, config)
    data = _call_node(context, config, "POST", "/api/v1/credentials", creds, body={})
    if not isinstance(data, dict) or "api_key" not in data or "api_secret" not in data:
        raise CommandError(f"node at {config.http_address} answered without api_key/api_secret")
    if context.args.json:
        context.out(json.dumps(data, indent=2, sort_keys=True))
    else:
        context.out(f"api_key: {data['api_key']}")
        context.out(f"api_secret: {data['api_secret']}")
        context.stderr.write("the api_secret is shown only now; store it safely\n")
    return EXIT_OK


def _key_from_file(cwd: str, path: str | None, option: str) -> str | None:
    """A SecretKey read from a file (keys stay out of the process list), or None."""
    if path is None:
        return None
    try:
        with open(os.path.join(cwd, path), encoding="utf-8") as f:
            key = f.read().strip()
    except OSError as e:
        raise CommandError(f"{option}: cannot read {path}: {e.strerror or e}") from None
    if len(key) < 16:
        raise CommandError(f"{option}: {path} must hold a key of at least 16 characters")
    return key


def _seal_secrets(context: Context) -> int:
    config = context.load()
    creds = require_credentials(context, config)
    body = {}
    for option, name, path in (
        ("--new-key-file", "new_secret_key", context.args.new_key_file),
        ("--old-key-file", "old_secret_key", context.args.old_key_file),
    ):
        key = _key_from_file(context.cwd, path, option)
        if key is not None:
            body[name] = key
    data = _call_node(context, config, "POST", "/api/v1/signing-secrets/seal", creds, body=body)
    if not isinstance(data, dict) or "key_id" not in data:
        raise CommandError(f"node at {config.http_address} answered without key_id")
    context.out(
        f"sealed {data.get('resealed', 0)} signing secrets under key id {data['key_id']}"
        f" ({data.get('skipped', 0)} changed meanwhile and were left as they are)"
    )
    hashes = data.get("credential_hashes")
    if isinstance(hashes, dict):
        # Rotating SecretKey: PreviousSecretKeys can go once previous_keys is 0.
        counts = ", ".join(f"{kind} {count}" for kind, count in sorted(hashes.items()))
        context.out(f"client credential secrets hashed under: {counts}")
    return EXIT_OK


def _status(context: Context) -> int:
    config = context.load()
    try:
        creds = load_admin_credentials(config, context.environ)
    except ConfigError:
        creds = None  # the health check is anonymous; the credentials are optional here
    path = "/api/v1/healthcheck"
    status, payload = _ask_node(context, config, "GET", path, creds)
    if status == 503 and isinstance(payload, dict) and isinstance(payload.get("data"), dict):
        # Not ready: the answer still is the health check, with the reasons.
        data = payload["data"]
    else:
        data = _data_of("GET", f"{config.http_address}{path}", status, payload)
    if not isinstance(data, dict):
        raise CommandError(f"node at {config.http_address} answered an unexpected health check")
    # A node of an earlier release says nothing of readiness: its 200 stands.
    ready = status == 200 and data.get("ready") is not False
    code = EXIT_OK if ready else EXIT_FAILURE
    if context.args.json:
        context.out(json.dumps(data, indent=2, sort_keys=True))
        return code
    cluster = None
    if creds is not None:
        # Every member as it answers for itself (needs the peer credentials);
        # from this node's copy, so it answers while there is no quorum too.
        try:
            cluster = _call_node(context, config, "GET", "/api/v1/cluster?consistency=stale", creds)
        except CommandError:
            cluster = None
    for line in format_status(data, config.http_address, cluster, ready=ready):
        context.out(line)
    return code


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def format_status(
    data: Mapping[str, Any],
    asked: str,
    cluster: Mapping[str, Any] | None = None,
    ready: bool = True,
) -> list[str]:
    """
    The health check as a few summary lines (whether the node is ready, and
    each reason when it is not) and a table of members: from C{GET /cluster}
    (each member's own answer) when given, else as the asked node sees them.
    """
    lines = [
        f"node:        {_text(data.get('node_id'))} ({_text(data.get('role'))}) at {asked}",
        f"leader:      {_text(data.get('leader_id'))} {_text(data.get('leader_address'))}",
        f"term:        {_text(data.get('term'))}",
        f"commit/applied index: {_text(data.get('commit_index'))}"
        f" / {_text(data.get('applied_index'))}",
    ]
    if data.get("entry_version") is not None:
        # A rolling upgrade's progress (README, Upgrading).
        lines.append(
            f"entry version: {_text(data.get('entry_version'))} written by the cluster,"
            f" up to {_text(data.get('reads_entry_version'))} read by this node"
        )
    if data.get("scheduling_paused"):
        lines.append(f"scheduling:  paused ({_text(data.get('pause_reason'))})")
    elif data.get("lease_valid") is False:
        lines.append("scheduling:  stopped (no valid lease: this node fires none of its jobs)")
    else:
        lines.append("scheduling:  running")
    lines.append(f"ready:       {'yes' if ready else 'no'}")
    reasons = data.get("reasons")
    for reason in reasons if isinstance(reasons, list) else ():
        if isinstance(reason, Mapping):
            code, message = _text(reason.get("code")), _text(reason.get("message"))
            lines.append(f"not ready:   {code}: {message}")
    if (
        isinstance(cluster, Mapping)
        and isinstance(cluster.get("members"), list)
        and all(isinstance(m, Mapping) and "reachable" in m for m in cluster["members"])
    ):
        members = cluster["members"]
        fields: tuple[str, ...] = (
            "node_id",
            "role",
            "address",
            "reachable",
            "term",
            "commit_index",
            "applied_index",
            "lease_valid",
            "owned_jobs",
            "reads_entry_version",
        )
        rows = [
            [
                "NODE",
                "ROLE",
                "ADDRESS",
                "REACHABLE",
                "TERM",
                "COMMIT",
                "APPLIED",
                "LEASE",
                "JOBS",
                "READS",
            ]
        ]
    else:
        members = data.get("members") or []
        fields = ("node_id", "role", "address", "raft_address", "last_contact")
        rows = [["NODE", "ROLE", "ADDRESS", "RAFT ADDRESS", "LAST CONTACT"]]
    for member in members:
        if isinstance(member, Mapping):
            rows.append([_text(member.get(field)) for field in fields])
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines.append("")
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
            lines.append("  ".join(cells).rstrip())
    return lines


def _start(context: Context) -> int:
    try:
        path = find_config_path(context.config_option, context.environ, context.cwd)
    except ConfigError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    context.load()
    argv = ["twistd", "--nodaemon", "--pidfile=", "scheduler0"]
    if path is not None:
        argv += ["--config", path]
    if context.args.log_format != "text":
        argv += ["--log-format", context.args.log_format]
    return run_twistd(argv)
