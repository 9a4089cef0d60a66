"""
The resource commands of C{scheduler0}: C{projects}, C{jobs} and
C{executions}, on top of L{scheduler0.client.Client}.

Where to connect: C{--endpoint}, then C{$SCHEDULER0_ENDPOINT}, then the
config's HTTP address. Credentials: C{--api-key}/C{--api-secret} (or
C{$SCHEDULER0_API_KEY}/C{$SCHEDULER0_API_SECRET}), else the admin credentials
in C{.scheduler0} beside the config. Requests go through the command's
injected HTTP function, so tests drive every command in memory.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from scheduler0.cli import jobfile
from scheduler0.cli.context import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    Context,
    require_credentials,
)
from scheduler0.client import APIError, Client, NodeUnreachable
from scheduler0.client.operations import new_idempotency_key
from scheduler0.labels import LabelError, parse_label_assignment
from scheduler0.model import CONCURRENCY_POLICIES, EXECUTION_STATES
from scheduler0.model import CREDENTIAL_ROLES as SCOPE_ROLES

# Replaced in tests: the import's back-off and progress timing.
sleep: Callable[[float], Any] = time.sleep
monotonic: Callable[[], float] = time.monotonic

DEFAULT_LIST_LIMIT = 50
PAGE_SIZE = 1000
IMPORT_BATCH = 1000
IMPORT_RETRIES = 8
# Reads and keyed creates are sent again this often after a 429/503 or no answer.
READ_RETRIES = 2
# An import counts the jobs of at most this many projects before and after (one
# request each), to say how many it created and how many an earlier run had.
IMPORT_COUNTED_PROJECTS = 20

PROJECT_COLUMNS = (
    ("UUID", "uuid"),
    ("NAME", "name"),
    ("DESCRIPTION", "description"),
    ("CREATED", "created_at"),
)
JOB_COLUMNS = (
    ("UUID", "uuid"),
    ("NAME", "name"),
    ("SPEC", "spec"),
    ("TZ", "timezone"),
    ("PAUSED", "paused"),
    ("NEXT RUN", "next_run_at"),
    ("LAST STATUS", "last_status"),
)
EXECUTION_COLUMNS = (
    ("SCHEDULED", "scheduled_at"),
    ("JOB", "job_uuid"),
    ("STATE", "state"),
    ("ATTEMPTS", "attempts"),
    ("NODE", "node_id"),
    ("STATUS", "status_code"),
    ("ERROR", "error"),
)


# -- wiring ------------------------------------------------------------------


def add_resource_commands(
    group: Callable[..., Any], leaf: Callable[..., Any], top: Any = None
) -> None:
    """
    Add C{projects}, C{jobs}, C{executions}, C{credentials} and (given the
    top-level C{top}) C{audit} with the parser helpers of L{build_parser}.
    """

    def command(
        where: Any,
        name: str,
        help_text: str,
        handler: Callable[..., int],
        talking: bool = True,
        writes: bool = False,
    ) -> Any:
        sub = leaf(where, name, help_text, _talking(handler) if talking else handler)
        if writes:
            sub.add_argument(
                "--idempotency-key",
                dest="idempotency_key",
                metavar="KEY",
                help="1-128 letters, digits and . _ : - ; the same KEY again applies the write"
                " at most once (default: a new key per run, shown if the write is not confirmed)",
            )
        connection = sub.add_argument_group("connection")
        connection.add_argument(
            "--endpoint",
            metavar="URL",
            help="node to talk to (default: $SCHEDULER0_ENDPOINT, then the config's address)",
        )
        connection.add_argument(
            "--api-key",
            dest="api_key",
            help="client API key (default: $SCHEDULER0_API_KEY, else the admin credentials)",
        )
        connection.add_argument(
            "--api-secret",
            dest="api_secret",
            help="client API secret (default: $SCHEDULER0_API_SECRET)",
        )
        sub.add_argument("--json", action="store_true", help="print the data as JSON")
        return sub

    projects = group("projects", "list, create, change and delete projects")
    sub = command(projects, "list", "list projects", _projects_list)
    _limit_option(sub)
    sub = command(projects, "get", "show one project", _projects_get)
    sub.add_argument("uuid")
    sub = command(
        projects,
        "create",
        "create a project (prints its signing secret once)",
        _projects_create,
        writes=True,
    )
    sub.add_argument("--name", required=True)
    sub.add_argument("--description")
    sub.add_argument(
        "--notify-url",
        dest="notify_url",
        metavar="URL",
        help="http(s) URL told of the project's failed executions (default: none)",
    )
    sub.add_argument(
        "--paused", action="store_true", default=None, help="create it paused (no job fires)"
    )
    sub = command(
        projects,
        "update",
        "change a project's name, description or notify URL",
        _projects_update,
        writes=True,
    )
    sub.add_argument("uuid")
    sub.add_argument("--name")
    sub.add_argument("--description")
    notify = sub.add_mutually_exclusive_group()
    notify.add_argument(
        "--notify-url",
        dest="notify_url",
        metavar="URL",
        help="http(s) URL told of the project's failed executions",
    )
    notify.add_argument(
        "--no-notify-url",
        dest="clear_notify_url",
        action="store_true",
        help="send the project's notices nowhere",
    )
    sub = command(projects, "delete", "delete a project", _projects_delete, writes=True)
    sub.add_argument("uuid")
    sub.add_argument("--cascade", action="store_true", help="delete its jobs too")
    for name, help_text, handler in (
        ("pause", "fire none of a project's jobs (each keeps its own paused flag)", _pause),
        ("resume", "fire a paused project's active jobs again, from now", _resume),
    ):
        sub = command(projects, name, help_text, handler)
        sub.add_argument("uuid")

    jobs = group("jobs", "list, create, change, run and import jobs")
    sub = command(jobs, "list", "list jobs", _jobs_list)
    sub.add_argument("--project", metavar="UUID", help="only this project's jobs")
    state = sub.add_mutually_exclusive_group()
    state.add_argument("--paused", action="store_true", default=None, help="only paused jobs")
    state.add_argument("--active", action="store_true", help="only active jobs")
    _selector_option(sub, "only the jobs it selects")
    sub.add_argument(
        "--name-prefix",
        metavar="TEXT",
        help="only jobs whose name starts with TEXT (case-sensitive)",
    )
    _limit_option(sub)
    sub = command(jobs, "get", "show one job", _jobs_get)
    sub.add_argument("uuid")
    sub = command(jobs, "create", "create a job", _jobs_create, writes=True)
    _job_options(sub, creating=True)
    sub = command(jobs, "update", "change some fields of a job", _jobs_update, writes=True)
    sub.add_argument("uuid")
    _job_options(sub, creating=False)
    sub = command(jobs, "run", "fire one extra execution of a job now", _jobs_run)
    sub.add_argument("uuid")
    for name, help_text, handler in (
        ("delete", "delete a job, or the jobs --selector selects", _jobs_delete),
        ("pause", "stop firing a job, or the jobs --selector selects", _jobs_pause),
        ("resume", "fire a paused job again, or the jobs --selector selects", _jobs_resume),
    ):
        sub = command(jobs, name, help_text, handler, writes=True)
        sub.add_argument("uuid", nargs="?", help="the job (or give --selector)")
        _selector_option(sub, "instead of one job, every job it selects")
        sub.add_argument("--project", metavar="UUID", help="with --selector: of this project")
    sub = command(jobs, "next", "preview a job's next fire instants", _jobs_next)
    sub.add_argument("uuid")
    sub.add_argument("-n", type=int, default=10, help="how many instants (default 10, max 100)")
    sub = command(
        jobs,
        "import",
        "create the jobs of a .json, .yaml/.yml or .csv file, in batches, at most once",
        _jobs_import,
        talking=False,
    )
    sub.add_argument("file", metavar="FILE")
    sub.add_argument("--project", metavar="UUID", help="project of rows without project_uuid")
    sub.add_argument(
        "--batch-size",
        dest="batch_size",
        type=int,
        default=IMPORT_BATCH,
        help=f"jobs per request (default {IMPORT_BATCH}; lowered to the node's "
        "MaxJobsPerRequest when it says so)",
    )

    executions = group("executions", "execution history")
    sub = command(executions, "list", "list executions, newest first", _executions_list)
    sub.add_argument("--job", metavar="UUID", help="only this job's executions")
    sub.add_argument("--project", metavar="UUID", help="only this project's executions")
    sub.add_argument("--state", choices=EXECUTION_STATES)
    sub.add_argument("--since", metavar="INSTANT", help="RFC 3339, e.g. 2026-01-02T03:04:05Z")
    sub.add_argument("--until", metavar="INSTANT", help="RFC 3339, e.g. 2026-01-02T03:04:05Z")
    _limit_option(sub)

    credentials = group("credentials", "client credentials (admin)")
    sub = command(
        credentials,
        "create",
        "create a client credential (prints its api_secret once)",
        _credentials_create,
    )
    sub.add_argument(
        "--project",
        dest="projects",
        metavar="UUID",
        action="append",
        help="a project it may touch (repeat for more; default: every project)",
    )
    sub.add_argument("--role", choices=SCOPE_ROLES, help="read, or write (default)")
    sub = command(credentials, "list", "list client credentials", _credentials_list)
    _limit_option(sub)

    if top is not None:
        sub = command(top, "audit", "the audit log: every write, newest first (admin)", _audit)
        sub.add_argument("--actor", help="only writes by admin or this credential uuid")
        sub.add_argument("--object", metavar="UUID", help="only writes to this object")
        sub.add_argument("--op", help="only writes of this op (e.g. update_job)")
        sub.add_argument("--via", type=int, metavar="NODE_ID", help="only through this node")
        sub.add_argument("--since", metavar="INSTANT", help="RFC 3339, e.g. 2026-01-02T03:04:05Z")
        sub.add_argument("--until", metavar="INSTANT", help="RFC 3339, e.g. 2026-01-02T03:04:05Z")
        _limit_option(sub)


def _selector_option(sub: Any, help_text: str) -> None:
    sub.add_argument(
        "--selector",
        metavar="SELECTOR",
        help=f"a label selector, e.g. team=billing,env!=prod,tier,!legacy: {help_text}",
    )


def _label(text: str) -> tuple[str, str]:
    """One C{--label key=value}."""
    try:
        return parse_label_assignment(text)
    except LabelError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _limit_option(sub: Any) -> None:
    sub.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIST_LIMIT,
        help=f"show at most this many (default {DEFAULT_LIST_LIMIT}; 0 = all)",
    )


def _job_options(sub: Any, *, creating: bool) -> None:
    sub.add_argument("--project", metavar="UUID", required=creating, help="project_uuid")
    sub.add_argument("--name", required=creating)
    sub.add_argument(
        "--spec",
        required=creating,
        help="cron (5 or 6 fields), @daily..., @every 90s, @at <instant>",
    )
    sub.add_argument("--callback-url", dest="callback_url", required=creating, metavar="URL")
    sub.add_argument("--data", metavar="JSON", help="any JSON value sent with each execution")
    sub.add_argument("--timezone", metavar="ZONE", help="IANA zone (default UTC)")
    sub.add_argument("--catch-up-window-s", dest="catch_up_window_s", type=float, metavar="S")
    sub.add_argument("--timeout-s", dest="timeout_s", type=float, metavar="S")
    sub.add_argument("--retry-max", dest="retry_max", type=int, metavar="N")
    sub.add_argument(
        "--retry-delay-s",
        dest="retry_delay_s",
        type=float,
        metavar="S",
        help="wait before the first retry, doubling per attempt (default: the node's config)",
    )
    sub.add_argument(
        "--retry-max-delay-s",
        dest="retry_max_delay_s",
        type=float,
        metavar="S",
        help="longest wait between attempts (default: the node's config)",
    )
    sub.add_argument(
        "--concurrency-policy",
        dest="concurrency_policy",
        choices=CONCURRENCY_POLICIES,
        help="a slot due while the previous execution runs: allow (default) runs both, "
        "forbid skips the new one, replace abandons the running one",
    )
    sub.add_argument(
        "--coalesce",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="deliver slots missed during an outage or pause as one execution (default: no)",
    )
    sub.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=_label,
        metavar="KEY=VALUE",
        help="a label (repeat for more)"
        + ("" if creating else "; replaces all of the job's labels with those given"),
    )
    if creating:
        sub.add_argument("--paused", action="store_true", default=None, help="create it paused")
    else:
        sub.add_argument("--paused", action=argparse.BooleanOptionalAction, default=None)


def _talking(handler: Callable[[Context, Client], int]) -> Callable[[Context], int]:
    """
    A handler given a L{Client}; API and connection errors become one-line
    L{CommandError}s. A write command sends its requests under one
    Idempotency-Key (C{--idempotency-key}, else a new one), and is sent once
    more under it after a 503, saying so: it is applied at most once.
    """

    def run(context: Context) -> int:
        key = _write_key(context)
        client = connect(context, retries=READ_RETRIES)
        try:
            try:
                return handler(context, client)
            except APIError as error:
                if key is None or error.status != 503:
                    raise
                context.stderr.write(
                    "the node did not confirm the write (HTTP 503); sending it again once, "
                    f"with the same Idempotency-Key {key}\n"
                )
                return handler(context, client)
        except (APIError, NodeUnreachable) as error:
            raise command_error(error, key) from None

    return run


def _write_key(context: Context) -> str | None:
    """The Idempotency-Key of a write command's requests (None for a read)."""
    if not hasattr(context.args, "idempotency_key"):
        return None
    if context.args.idempotency_key is None:
        context.args.idempotency_key = new_idempotency_key()
    return str(context.args.idempotency_key)


def command_error(error: APIError | NodeUnreachable, key: str | None = None) -> CommandError:
    """
    The API's own message (it names the field). A rejected input (400, 404,
    409, 413, 415, 422) exits 2; auth, rate limits, node trouble and no
    answer at all exit 1. A write the node did not confirm (503) may still
    be applied: the line says how to repeat it safely from the CLI (the
    C{--idempotency-key} it used), not with the HTTP header the API names.
    """
    if isinstance(error, NodeUnreachable):
        return CommandError(str(error))
    if error.status == 400 and "Idempotency-Key" in error.fields:
        # The node checks the key (the CLI does not check it again).
        return CommandError(f"--idempotency-key: {error.fields['Idempotency-Key']}", EXIT_USAGE)
    usage = 400 <= error.status < 500 and error.status not in (401, 403, 408, 429)
    message = error.message
    if error.status == 503 and "Idempotency-Key" in message:
        message = (
            "the node did not confirm this write in time (no leader, no quorum, or slower "
            "than RaftApplyTimeout); it may still be applied"
        )
        if key is not None:
            message += (
                f": run the same command again with --idempotency-key {key} to have it "
                "applied at most once"
            )
    return CommandError(f"{message} (HTTP {error.status})", EXIT_USAGE if usage else EXIT_FAILURE)


def connect(context: Context, retries: int = 0) -> Client:
    """A client for the node and credentials the options, environment and config name."""
    args, environ = context.args, context.environ
    endpoint = getattr(args, "endpoint", None) or environ.get("SCHEDULER0_ENDPOINT") or None
    api_key = getattr(args, "api_key", None) or environ.get("SCHEDULER0_API_KEY") or None
    api_secret = getattr(args, "api_secret", None) or environ.get("SCHEDULER0_API_SECRET") or None
    if (api_key is None) != (api_secret is None):
        raise CommandError(
            "--api-key and --api-secret go together (or SCHEDULER0_API_KEY and "
            "SCHEDULER0_API_SECRET); give both, or neither to use the admin credentials",
            EXIT_USAGE,
        )
    config = context.load() if endpoint is None or api_key is None else None
    if endpoint is None:
        assert config is not None
        endpoint = config.http_address
    if not endpoint.startswith(("http://", "https://")):
        raise CommandError(
            f"--endpoint: must be an http:// or https:// URL, not {endpoint!r}", EXIT_USAGE
        )
    common: dict[str, Any] = {
        "transport": _transport(context),
        "retries": retries,
        "sleep": lambda seconds: sleep(seconds),
    }
    if api_key is not None:
        return Client(endpoint, api_key, api_secret, **common)
    assert config is not None
    creds = require_credentials(context, config)
    return Client(endpoint, username=creds.username, password=creds.password, **common)


def _transport(context: Context) -> Callable[..., tuple[int, Mapping[str, str], bytes]]:
    """The client's transport on the command's injected C{http(method, url, json=, ...)}."""

    def send(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        key = getattr(context.args, "idempotency_key", None)
        if key and method not in ("GET", "HEAD") and "Idempotency-Key" not in headers:
            headers = {**headers, "Idempotency-Key": key}
        document = None if body is None else json.loads(body)
        status, payload = context.http(
            method, url, json=document, auth=None, timeout=timeout, headers=dict(headers)
        )
        raw = b"" if payload is None else json.dumps(payload).encode("utf-8")
        return status, {}, raw

    return send


# -- output ------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value).replace("\n", " ")


def table(items: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> list[str]:
    """Aligned plain-text rows under a header line."""
    rows = [[title for title, _ in columns]]
    rows += [[_cell(item.get(key)) for _, key in columns] for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def details(item: Mapping[str, Any]) -> list[str]:
    """One C{key: value} line per field, values aligned."""
    width = max((len(key) for key in item), default=0) + 1
    return [f"{(key + ':').ljust(width)} {_cell(value)}" for key, value in item.items()]


def _print_json(context: Context, data: Any) -> None:
    context.out(json.dumps(data, indent=2, ensure_ascii=False))


def _show(context: Context, item: Mapping[str, Any]) -> int:
    if context.args.json:
        _print_json(context, item)
    else:
        for line in details(item):
            context.out(line)
    return EXIT_OK


def _show_list(
    context: Context,
    pages: Iterable[Any],
    total: Callable[[], int | None],
    columns: Sequence[tuple[str, str]],
    what: str,
) -> int:
    limit = context.args.limit
    if limit < 0:
        raise CommandError("--limit: must be 0 (all) or more", EXIT_USAGE)
    items = []
    for item in pages:
        items.append(item)
        if limit and len(items) >= limit:
            break
    if context.args.json:
        _print_json(context, items)
        return EXIT_OK
    for line in table(items, columns):
        context.out(line)
    known = total()
    if known is not None and known > len(items):
        context.stderr.write(f"showing {len(items)} of {known} {what}; --limit 0 shows all\n")
    return EXIT_OK


def _paged(list_page: Callable[..., Any], limit: int, **filters: Any) -> tuple[Any, Any]:
    """Items of every page (as many as C{limit} needs) and a function answering the total."""
    seen: dict[str, int] = {}
    size = min(limit, PAGE_SIZE) if limit > 0 else PAGE_SIZE

    def items() -> Iterable[Any]:
        cursor = None
        while True:
            page = list_page(limit=size, cursor=cursor, **filters)
            seen["total"] = page.get("total")
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    return items(), lambda: seen.get("total")


# -- projects ----------------------------------------------------------------


def _projects_list(context: Context, client: Client) -> int:
    pages, total = _paged(client.list_projects, context.args.limit)
    return _show_list(context, pages, total, PROJECT_COLUMNS, "projects")


def _projects_get(context: Context, client: Client) -> int:
    return _show(context, client.get_project(context.args.uuid))


def _projects_create(context: Context, client: Client) -> int:
    args = context.args
    project = client.create_project(
        args.name,
        args.description,
        notify_url=args.notify_url,
        idempotency_key=args.idempotency_key,
        paused=args.paused,
    )
    _show(context, project)
    if project.get("signing_secret") and not args.json:
        context.stderr.write("the signing_secret is shown only now; store it safely\n")
    return EXIT_OK


def _projects_update(context: Context, client: Client) -> int:
    args = context.args
    changes: dict[str, Any] = {}
    if args.notify_url is not None or args.clear_notify_url:
        changes["notify_url"] = args.notify_url
    if args.name is None and args.description is None and not changes:
        raise CommandError(
            "projects update: give --name, --description, --notify-url or --no-notify-url",
            EXIT_USAGE,
        )
    return _show(
        context,
        client.update_project(args.uuid, name=args.name, description=args.description, **changes),
    )


def _pause(context: Context, client: Client) -> int:
    return _show(context, client.pause_project(context.args.uuid))


def _resume(context: Context, client: Client) -> int:
    return _show(context, client.resume_project(context.args.uuid))


# -- credentials and the audit log (admin) -------------------------------------

CREDENTIAL_COLUMNS = (
    ("UUID", "uuid"),
    ("API KEY", "api_key"),
    ("ROLE", "role"),
    ("PROJECTS", "projects"),
    ("CREATED", "created_at"),
    ("ARCHIVED", "archived_at"),
)
AUDIT_COLUMNS = (
    ("SEQ", "seq"),
    ("AT", "at"),
    ("ACTOR", "actor"),
    ("VIA", "via"),
    ("OP", "op"),
    ("OBJECT", "object_uuid"),
    ("COUNT", "object_count"),
    ("OUTCOME", "outcome"),
    ("CODE", "code"),
)


def _credentials_create(context: Context, client: Client) -> int:
    args = context.args
    created = client.create_credential(projects=args.projects, role=args.role)
    _show(context, created)
    if not args.json:
        context.stderr.write("the api_secret is shown only now; store it safely\n")
    return EXIT_OK


def _credentials_list(context: Context, client: Client) -> int:
    pages, total = _paged(client.list_credentials, context.args.limit)
    return _show_list(context, pages, total, CREDENTIAL_COLUMNS, "credentials")


def _audit(context: Context, client: Client) -> int:
    args = context.args
    pages, total = _paged(
        client.list_audit,
        args.limit,
        actor=args.actor,
        object=args.object,
        op=args.op,
        via=args.via,
        since=args.since,
        until=args.until,
    )
    return _show_list(context, pages, total, AUDIT_COLUMNS, "audit records")


def _projects_delete(context: Context, client: Client) -> int:
    args = context.args
    try:
        result = client.delete_project(args.uuid, cascade=args.cascade)
    except APIError as error:
        if error.status != 409 or args.cascade:
            raise
        raise CommandError(
            f"{command_error(error)}; add --cascade to delete its jobs too", EXIT_USAGE
        ) from None
    if args.json:
        _print_json(context, result)
    else:
        removed = len(result.get("deleted_jobs") or [])
        context.out(f"deleted project {args.uuid}" + (f" and {removed} jobs" if removed else ""))
    return EXIT_OK


# -- jobs --------------------------------------------------------------------


def _job_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for option, key in (
        ("project", "project_uuid"),
        ("name", "name"),
        ("spec", "spec"),
        ("callback_url", "callback_url"),
        ("timezone", "timezone"),
        ("paused", "paused"),
        ("catch_up_window_s", "catch_up_window_s"),
        ("timeout_s", "timeout_s"),
        ("retry_max", "retry_max"),
        ("retry_delay_s", "retry_delay_s"),
        ("retry_max_delay_s", "retry_max_delay_s"),
        ("concurrency_policy", "concurrency_policy"),
        ("coalesce", "coalesce"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            fields[key] = value
    if args.labels is not None:
        fields["labels"] = dict(args.labels)
    if args.data is not None:
        try:
            fields["data"] = json.loads(args.data)
        except ValueError as error:
            raise CommandError(f"--data: not valid JSON ({error})", EXIT_USAGE) from None
    return fields


def _jobs_list(context: Context, client: Client) -> int:
    args = context.args
    paused = True if args.paused else (False if args.active else None)
    pages, total = _paged(
        client.list_jobs,
        args.limit,
        project_uuid=args.project,
        paused=paused,
        selector=args.selector,
        name_prefix=args.name_prefix,
    )
    return _show_list(context, pages, total, JOB_COLUMNS, "jobs")


def _jobs_get(context: Context, client: Client) -> int:
    return _show(context, client.get_job(context.args.uuid))


def _jobs_create(context: Context, client: Client) -> int:
    job = client.create_job(_job_fields(context.args), idempotency_key=context.args.idempotency_key)
    return _show(context, job)


def _jobs_update(context: Context, client: Client) -> int:
    changes = _job_fields(context.args)
    if not changes:
        raise CommandError(
            "jobs update: give at least one field to change (see --help)", EXIT_USAGE
        )
    return _show(context, client.update_job(context.args.uuid, changes))


def _jobs_changed(context: Context, result: Mapping[str, Any], done: str) -> int:
    if context.args.json:
        _print_json(context, result)
    else:
        context.out(f"{done} job {context.args.uuid}")
    return EXIT_OK


def _jobs_delete(context: Context, client: Client) -> int:
    if _by_selector(context, "delete"):
        return _jobs_bulk(context, client.delete_jobs, "deleted")
    return _jobs_changed(context, client.delete_job(context.args.uuid), "deleted")


def _jobs_pause(context: Context, client: Client) -> int:
    if _by_selector(context, "pause"):
        return _jobs_bulk(context, client.pause_jobs, "paused")
    return _jobs_changed(context, client.pause_job(context.args.uuid), "paused")


def _jobs_resume(context: Context, client: Client) -> int:
    if _by_selector(context, "resume"):
        return _jobs_bulk(context, client.resume_jobs, "resumed")
    return _jobs_changed(context, client.resume_job(context.args.uuid), "resumed")


def _by_selector(context: Context, name: str) -> bool:
    """Whether C{jobs <name>} acts on a selector (else one job); a usage error for both or none."""
    args = context.args
    if (args.uuid is None) == (args.selector is None):
        raise CommandError(f"jobs {name}: give a job uuid or --selector, not both", EXIT_USAGE)
    if args.selector is None and args.project is not None:
        raise CommandError(f"jobs {name}: --project goes with --selector", EXIT_USAGE)
    return args.selector is not None


def _jobs_bulk(context: Context, act: Callable[..., Any], done: str) -> int:
    """
    C{act} (a bulk call) on every job the selector selects: one request
    after another while the node says more remain.
    """
    args = context.args
    # With the command's own Idempotency-Key (--idempotency-key), round N is
    # sent under KEY.N: the same command run again is answered round by
    # round as before and changes nothing twice.
    key = getattr(args, "idempotency_key", None)
    uuids: list[str] = []
    for round_number in itertools.count(1):
        result = act(
            args.selector,
            project_uuid=args.project,
            idempotency_key=None if key is None else f"{key}.{round_number}",
        )
        changed = [uuid for uuid in result.get("uuids") or () if uuid not in uuids]
        uuids.extend(changed)
        # (No new job: an answer given before, whatever it says of more.)
        if not result.get("more") or not changed:
            break
    if args.json:
        _print_json(context, {"count": len(uuids), "uuids": uuids})
    else:
        context.out(f"{done} {_count(len(uuids), 'job')} selected by {args.selector}")
    return EXIT_OK


def _jobs_run(context: Context, client: Client) -> int:
    return _show(context, client.run_job(context.args.uuid))


def _jobs_next(context: Context, client: Client) -> int:
    result = client.next_runs(context.args.uuid, context.args.n)
    if context.args.json:
        _print_json(context, result)
        return EXIT_OK
    zone = result.get("timezone") or "UTC"
    for line in table(result.get("items") or [], (("UTC", "utc"), (f"LOCAL ({zone})", "local"))):
        context.out(line)
    if result.get("paused"):
        context.stderr.write("the job is paused: these instants fire only once it is resumed\n")
    return EXIT_OK


def _jobs_import(context: Context) -> int:
    args = context.args
    if args.batch_size < 1:
        raise CommandError("--batch-size: must be at least 1", EXIT_USAGE)
    try:
        jobs, wheres = jobfile.load_job_rows(args.file, context.cwd, default_project=args.project)
    except jobfile.JobFileError as error:
        *problems, last = error.lines or (str(error),)
        for line in problems:
            context.stderr.write(f"scheduler0: {line}\n")
        raise CommandError(last, EXIT_USAGE) from None
    # Only now: a bad file is reported even where no node or credentials are set up.
    client = connect(context, retries=IMPORT_RETRIES)
    projects = {job["project_uuid"] for job in jobs}
    before = _job_totals(client, projects)
    importer = jobfile.Importer(
        client,
        jobs,
        args.batch_size,
        jobfile.Progress(len(jobs), context.stderr, monotonic),
    )
    started = monotonic()
    try:
        uuids = importer.run()
    except (APIError, NodeUnreachable) as error:
        reason = command_error(error)
        done = f"{importer.done:,} of {len(jobs):,} jobs were imported"
        row = _refused_row(error, importer.done, wheres)
        if row is not None and isinstance(error, APIError):
            # The node refused a row (a check only it can make): name the
            # row in the file, as a bad file is named.
            where, problem = row
            name = os.path.basename(args.file)
            raise CommandError(
                f"{name}: {where}: {problem} (HTTP {error.status}); {done}, none from that "
                "row's batch on. Fix the file and run the same command again: batches already "
                "created are not created twice",
                reason.code,
            ) from None
        raise CommandError(
            f"{reason}; {done}. Run the same "
            "command again to import the rest: batches already created are not created twice",
            reason.code,
        ) from None
    elapsed = max(monotonic() - started, 1e-9)
    after = _job_totals(client, projects) if before is not None else None
    summary = (
        f"{_import_outcome(len(jobs), before, after)} from {args.file} in {elapsed:.1f} s "
        f"({len(jobs) / elapsed:,.0f} jobs/s, {_count(importer.batches, 'request')})"
    )
    if args.json:
        _print_json(context, uuids)
        context.stderr.write(summary + "\n")
    else:
        context.out(summary)
    return EXIT_OK


def _job_totals(client: Client, projects: set[str]) -> dict[str, int] | None:
    """How many jobs each project holds now, or None when there are too many projects to ask."""
    if len(projects) > IMPORT_COUNTED_PROJECTS:
        return None
    totals = {}
    for project in sorted(projects):
        total = client.list_jobs(project_uuid=project, limit=1).get("total")
        if not isinstance(total, int):
            return None
        totals[project] = total
    return totals


def _import_outcome(
    imported: int, before: Mapping[str, int] | None, after: Mapping[str, int] | None
) -> str:
    """
    What an import did. Its batches are keyed, so a batch an earlier run
    created is answered as it was then and creates nothing: the projects'
    job counts before and after tell the two apart.
    """
    if before is None or after is None:
        return (
            f"imported {_count(imported, 'job')} (created now or by an earlier run of "
            f"this import; more than {IMPORT_COUNTED_PROJECTS} projects, not counted)"
        )
    created = sum(after.values()) - sum(before.values())
    if created == imported:
        return f"created {_count(imported, 'job')}"
    if 0 <= created < imported:
        return (
            f"created {created:,} of {_count(imported, 'job')}; the other "
            f"{imported - created:,} were created by an earlier run of this import (the same "
            "rows in the same batches) and were not created again"
        )
    return (
        f"imported {_count(imported, 'job')} (the projects' job counts changed by {created:,} "
        "meanwhile: others are writing to them too)"
    )


_BATCH_FIELD = re.compile(r"jobs\[(\d+)\]\.(\w+(?:\..+)?)")


def _refused_row(
    error: APIError | NodeUnreachable, first: int, wheres: Sequence[str]
) -> tuple[str, str] | None:
    """
    (where in the file, what is wrong) for the first field of a batch the
    node refused (C{jobs[3].data} of the batch starting at job C{first}),
    or None when the error names no job of it.
    """
    if isinstance(error, NodeUnreachable) or not 400 <= error.status < 500:
        return None
    for path, message in error.fields.items():
        found = _BATCH_FIELD.fullmatch(path)
        if found is None or first + int(found.group(1)) >= len(wheres):
            continue
        problem = message[len(path) + 2 :] if message.startswith(path + ": ") else message
        more = len(error.fields) - 1
        if more:
            problem += f" (and {more} more problem{'s' if more > 1 else ''})"
        return wheres[first + int(found.group(1))], f"{found.group(2)}: {problem}"
    return None


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


# -- executions --------------------------------------------------------------


def _executions_list(context: Context, client: Client) -> int:
    args = context.args
    pages, total = _paged(
        client.list_executions,
        args.limit,
        job_uuid=args.job,
        project_uuid=args.project,
        state=args.state,
        since=args.since,
        until=args.until,
    )
    return _show_list(context, pages, total, EXECUTION_COLUMNS, "executions")
