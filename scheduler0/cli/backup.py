"""
C{scheduler0 backup} and C{scheduler0 restore}.

C{backup} downloads C{GET /api/v1/backup} from a running node with the admin
credentials and writes it atomically (or to standard output), after checking
its header and checksum. C{restore} is offline: it writes a backup into an
empty data directory, with the SecretKey of the C{.scheduler0} beside the
config; it imports the store only when it runs, so the other commands load
neither the store nor the reactor.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO, Any

from scheduler0.cli.context import EXIT_OK, EXIT_USAGE, CommandError, Context, require_credentials
from scheduler0.credentials import credentials_path
from scheduler0.files import publish

#: Seconds to wait for the node's answer (a large state takes a while to copy).
BACKUP_TIMEOUT = 600.0
CHUNK_BYTES = 1024 * 1024


def add_backup_commands(commands: Any, leaf: Callable[..., Any]) -> None:
    """Add C{backup} and C{restore} with the parser helpers of L{build_parser}."""
    backup = leaf(
        commands,
        "backup",
        "download a consistent backup of the cluster's state from a node (admin credentials)",
        _backup,
    )
    backup.add_argument(
        "--output", required=True, metavar="FILE", help="file to write (- for standard output)"
    )
    backup.add_argument(
        "--endpoint",
        metavar="URL",
        help="node to ask (default: $SCHEDULER0_ENDPOINT, then the config's address)",
    )
    restore = leaf(
        commands,
        "restore",
        "write a backup into an empty data directory, before a new node's first start",
        _restore,
    )
    restore.add_argument("--input", required=True, metavar="FILE", help="the backup file")
    restore.add_argument(
        "--data-dir",
        dest="data_dir",
        metavar="DIR",
        help="data directory to restore into (default: the config's DataDir)",
    )


def _download(url: str, auth: tuple[str, str], sink: IO[bytes], timeout: float) -> int:
    """
    Stream C{url}'s answer into C{sink}; returns its status. An answer that
    is not 200 is returned with nothing written and its JSON error read.
    """
    request = urllib.request.Request(url, method="GET")
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            shutil.copyfileobj(response, sink, CHUNK_BYTES)
            return int(response.status)
    except urllib.error.HTTPError as e:
        raise _Refused(e.code, e.read()) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, OSError):
            raise reason from None
        raise OSError(str(reason)) from None


class _Refused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body

    def message(self) -> str:
        try:
            error = json.loads(self.body.decode("utf-8")).get("error") or {}
            return str(error.get("message") or error.get("code") or "")
        except (UnicodeDecodeError, ValueError, AttributeError):
            return ""


def _backup(context: Context) -> int:
    from scheduler0.store.backup import BackupError, read_header, unpack_payload

    config = context.load()
    creds = require_credentials(context, config)
    endpoint = (
        context.args.endpoint or context.environ.get("SCHEDULER0_ENDPOINT") or config.http_address
    ).rstrip("/")
    url = f"{endpoint}/api/v1/backup"
    output = context.args.output
    to_stdout = output == "-"
    target = os.path.abspath(os.path.join(context.cwd, output)) if not to_stdout else ""
    folder = os.path.dirname(target) if not to_stdout else context.cwd
    if not to_stdout and not os.path.isdir(folder):
        raise CommandError(f"backup: directory does not exist: {folder}", EXIT_USAGE)
    descriptor, temporary = tempfile.mkstemp(prefix=".backup.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "w+b") as sink:
            os.fchmod(sink.fileno(), 0o600)
            try:
                _download(url, (creds.username, creds.password), sink, BACKUP_TIMEOUT)
            except _Refused as e:
                if e.status == 401:
                    raise CommandError(
                        f"node at {endpoint} rejected the admin credentials (401); they must"
                        " match the node's .scheduler0 (see: scheduler0 credential show)"
                    ) from None
                detail = f": {e.message()}" if e.message() else ""
                raise CommandError(f"GET {url} answered {e.status}{detail}") from None
            except TimeoutError:
                raise CommandError(
                    f"cannot reach node at {endpoint}: no answer within {BACKUP_TIMEOUT:g} s"
                ) from None
            except OSError as e:
                reason = e.strerror or str(e) or type(e).__name__
                raise CommandError(f"cannot reach node at {endpoint}: {reason}") from None
            # What arrived is checked as a restore would check it.
            sink.seek(0)
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                try:
                    header = read_header(sink, url)
                    unpack_payload(sink, header, os.path.join(scratch, "check.db"), url)
                except BackupError as e:
                    raise CommandError(f"backup: {e}") from None
            size = sink.seek(0, os.SEEK_END)
            if to_stdout:
                sink.seek(0)
                out = getattr(context.stdout, "buffer", None)
                if out is None:
                    raise CommandError("backup: standard output takes no bytes", EXIT_USAGE)
                context.stdout.flush()
                shutil.copyfileobj(sink, out, CHUNK_BYTES)
                out.flush()
        if not to_stdout:
            publish(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    line = (
        f"backup at index {header['index']}: {header.get('projects', '?')} projects,"
        f" {header.get('jobs', '?')} jobs, {size} bytes"
        f"{'' if to_stdout else ' -> ' + target}"
    )
    # On standard output the file is the output: the summary goes to stderr.
    (context.stderr.write(line + "\n") if to_stdout else context.out(line))
    return EXIT_OK


def _restore(context: Context) -> int:
    from scheduler0.store.backup import BackupError, restore_backup
    from scheduler0.versions import UnsupportedVersion

    config = context.load()
    creds = require_credentials(context, config)
    source = os.path.join(context.cwd, context.args.input)
    if context.args.data_dir:
        data_dir = os.path.abspath(os.path.join(context.cwd, context.args.data_dir))
    else:
        data_dir = config.data_path()
    try:
        if config.replicas:
            # A cluster node: its Raft log starts with the restored state.
            from scheduler0.cluster.restore import restore_cluster_node

            voters = [replica.node_id for replica in config.members()]
            header = restore_cluster_node(
                source, data_dir, creds.secret_key, creds.previous_secret_keys, voters
            )
        else:
            header = restore_backup(source, data_dir, creds.secret_key, creds.previous_secret_keys)
    except (BackupError, UnsupportedVersion) as e:
        raise CommandError(f"restore: {e}") from None
    except OSError as e:
        raise CommandError(f"restore: {e.strerror or e}") from None
    context.out(
        f"restored the backup made at index {header['index']} ({header['created_at']}):"
        f" {header.get('projects', '?')} projects, {header.get('jobs', '?')} jobs into"
        f" {data_dir}; it needs the SecretKey in {credentials_path(config)}"
        + (
            ", and every node of the new cluster restored from this same file"
            if config.replicas
            else ""
        )
    )
    return EXIT_OK
