"""
Backups of the state machine, and restoring one into an empty data directory.

A backup file is one line of JSON (the header: format, backup version,
release, entry version, the log index the copy is consistent at, when it was
made, counts, and the sha256 of the payload) followed by the payload: the
state machine's SQLite image, gzip-compressed. The image keeps what defines
the jobs (projects, jobs with every field, credentials as their stored
hashes, signing secrets as stored, each job's progress) and leaves out what
belongs to the cluster that made it (members, owners, owner loads, node
progress reports, the fan-in positions, remembered requests, the committed
execution history). Its applied index is 0: a node restored from it starts
with this state and an empty Raft log.

Making one (L{Backups}) runs in a node; restoring one (L{restore_backup})
runs offline, without a reactor.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import zlib
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred

from scheduler0.files import publish
from scheduler0.sealing import SealError, SecretSealer, sealed_key_id
from scheduler0.secret_hash import SecretHasher, key_id_of
from scheduler0.store.cluster_handlers import _raise_progress, covers_job, handled_through
from scheduler0.store.rows import _all, _one_known, _progress_reports
from scheduler0.store.schema import _create_schema
from scheduler0.versions import ENTRY_VERSION, RELEASE, UnsupportedVersion

if TYPE_CHECKING:
    from scheduler0.store.state import StateStore

FORMAT = "scheduler0-backup"
#: The version of the backup file's layout this release writes and reads.
BACKUP_VERSION = 1
#: The header line is never longer than this.
MAX_HEADER_BYTES = 64 * 1024
CHUNK_BYTES = 1024 * 1024
#: What a restored data directory holds.
STATE_FILE = "state.db"

#: The tables of the cluster that made a backup, emptied in it.
CLUSTER_TABLES = (
    "members",
    "owner_loads",
    "node_progress",
    "fanin",
    "requests",
    "executions",
)
#: The columns of jobs that name the members of that cluster, cleared in it.
CLUSTER_JOB_COLUMNS = ("owner", "handover_at", "owner_since", "prev_owner", "prev_owner_since")


class BackupError(Exception):
    """A backup cannot be made or restored; the message is one line saying why."""


# -- making a backup -------------------------------------------------------------


def _scalar(cursor: Any, sql: str) -> Any:
    return _one_known(cursor, sql)[0]


def prepare_image(path: str) -> dict[str, int]:
    """
    Turn the SQLite image at C{path} (a copy of a node's state machine) into
    a backup's: raise each owned job's progress to what its owner last
    reported (as a move of the job would), empty the old cluster's tables and
    columns, set the applied index to 0 and compact the file (so nothing left
    out stays in its free pages). Returns the index the copy was at, its entry
    version and its counts of projects, jobs and credentials.
    """
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        index = _scalar(cursor, "SELECT value FROM meta WHERE key = 'applied_index'")
        reports = _progress_reports(cursor)
        floors: dict[str, str] = {}
        for uuid, owner, owner_since in _all(
            cursor, "SELECT uuid, owner, owner_since FROM jobs WHERE owner IS NOT NULL"
        ):
            report = reports.get(owner)
            # The owner still holds the job: its report speaks for it once it
            # was made with the job loaded (as of its assignment or later).
            if report is not None and covers_job(report, owner_since, index + 1):
                floors[uuid] = handled_through(report[0])
        _raise_progress(cursor, floors)
        for table in CLUSTER_TABLES:
            cursor.execute(f"DELETE FROM {table}")
        cleared = ", ".join(f"{column} = NULL" for column in CLUSTER_JOB_COLUMNS)
        cursor.execute(f"UPDATE jobs SET {cleared}")
        cursor.execute("UPDATE meta SET value = 0 WHERE key = 'applied_index'")
        info = {
            "index": index,
            "entry_version": _scalar(cursor, "SELECT value FROM meta WHERE key = 'entry_version'"),
            "projects": _scalar(cursor, "SELECT COUNT(*) FROM projects"),
            "jobs": _scalar(cursor, "SELECT COUNT(*) FROM jobs"),
            "credentials": _scalar(cursor, "SELECT COUNT(*) FROM credentials"),
        }
        cursor.execute("COMMIT")
        cursor.execute("VACUUM")
    finally:
        connection.close()
    return info


def write_backup(image_path: str, target: IO[bytes], created_at: str) -> dict[str, Any]:
    """
    Write a backup of the copy of a state machine at C{image_path} to
    C{target}, once L{prepare_image} made the copy a backup's image. Returns
    the header.
    """
    info = prepare_image(image_path)
    return pack(image_path, target, {"created_at": created_at, **info})


def pack(image_path: str, target: IO[bytes], fields: dict[str, Any]) -> dict[str, Any]:
    """
    Write the image at C{image_path} to C{target} as a backup: the header
    line (C{fields} with the format, versions and the payload's size and
    sha256), then the gzip-compressed image. The payload is first compressed
    into a file beside the image (its checksum goes in the header), so no
    more than a chunk is in memory. Returns the header.
    """
    packed = image_path + ".gz"
    digest = hashlib.sha256()
    size = 0
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: the gzip format
    with open(image_path, "rb") as source, open(packed, "wb") as sink:
        chunks = iter(lambda: source.read(CHUNK_BYTES), b"")
        for piece in (*(compressor.compress(chunk) for chunk in chunks), compressor.flush()):
            digest.update(piece)
            size += len(piece)
            sink.write(piece)
    header = {
        "format": FORMAT,
        "backup_version": BACKUP_VERSION,
        "release": RELEASE,
        **fields,
        "compression": "gzip",
        "payload_bytes": size,
        "payload_sha256": digest.hexdigest(),
    }
    target.write(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n")
    with open(packed, "rb") as source:
        shutil.copyfileobj(source, target, CHUNK_BYTES)
    os.unlink(packed)
    return header


@attrs.frozen
class BackupFile:
    """A backup made by a node, in its own folder until L{discard}."""

    path: str
    header: dict[str, Any]
    folder: str

    @property
    def size(self) -> int:
        return os.path.getsize(self.path)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _package(folder: str, image: str, created_at: str) -> BackupFile:
    path = os.path.join(folder, "backup.s0")
    with open(path, "wb") as target:
        header = write_backup(image, target, created_at)
    os.unlink(image)
    return BackupFile(path, header, folder)


_FOLDER_PREFIX = ".backup-"


@attrs.define(eq=False)
class Backups:
    """
    Makes backups of a node's state machine: a copy as of the moment asked
    (the state store's snapshot, made beside its pool), prepared and
    compressed on another thread, in a folder under C{scratch} (the data
    directory: a backup can be as large as the state).
    """

    state: StateStore
    run_blocking: Callable[..., Deferred]
    scratch: str
    now: Callable[[], str]
    _making: bool = False

    @property
    def busy(self) -> bool:
        """Is a backup being made now? (One at a time.)"""
        return self._making

    def make(self) -> Deferred[BackupFile]:
        """
        A new backup file; the caller discards it once sent. Cancelling the
        answer (the client went away) lets the copy finish on its thread and
        then discards it, so no half-written folder is removed under it.
        """
        making = Deferred.fromCoroutine(self._make())
        # Without a canceller: cancelling fails the answer with CancelledError
        # at once and leaves the making alone.
        answer: Deferred[BackupFile] = Deferred()

        def forward(result: Any) -> None:
            if not answer.called:
                answer.callback(result)
            elif isinstance(result, BackupFile):
                result.discard()

        making.addBoth(forward)
        return answer

    async def _make(self) -> BackupFile:
        if self._making:
            raise BackupError("a backup is being made now; retry once it is done")
        self._making = True
        # Only one backup at a time, and the data directory is this node's
        # alone: a folder left there is from a backup a crash interrupted.
        for name in os.listdir(self.scratch):
            if name.startswith(_FOLDER_PREFIX):
                shutil.rmtree(os.path.join(self.scratch, name), ignore_errors=True)
        folder = tempfile.mkdtemp(prefix=_FOLDER_PREFIX, dir=self.scratch)
        try:
            image = os.path.join(folder, "state.db")
            created_at = self.now()
            await self.state.snapshot(image)
            made: BackupFile = await self.run_blocking(_package, folder, image, created_at)
            return made
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            self._making = False


# -- reading and restoring a backup ----------------------------------------------


def read_header(source: IO[bytes], name: str) -> dict[str, Any]:
    """
    The header of the backup C{source} (named C{name} in messages), checked
    for the format and a backup version this release reads; C{source} is
    left at the payload.
    """
    line = source.readline(MAX_HEADER_BYTES + 1)
    try:
        header = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BackupError(f"{name} is not a scheduler0 backup (no backup header)")
    version = header.get("backup_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BackupError(f"{name}: the backup header has no valid backup_version")
    if version > BACKUP_VERSION:
        raise UnsupportedVersion(
            f"{name} is a backup of version {version}, written by release"
            f" {header.get('release', 'unknown')}; release {RELEASE} reads backup versions up to"
            f" {BACKUP_VERSION}: restore it with release {header.get('release', 'a newer one')}"
            " or later"
        )
    for field in ("payload_sha256", "payload_bytes", "index", "entry_version"):
        if field not in header:
            raise BackupError(f"{name}: the backup header lacks {field}")
    if header.get("compression") != "gzip":
        raise BackupError(f"{name}: unknown compression {header.get('compression')!r}")
    return header


def unpack_payload(source: IO[bytes], header: dict[str, Any], target: str, name: str) -> None:
    """
    Check the size and sha256 of the payload of C{source} (positioned after
    the header) against C{header}, then decompress it into the file C{target}.
    """
    start = source.tell()
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
        digest.update(chunk)
        size += len(chunk)
    if size != header["payload_bytes"] or digest.hexdigest() != header["payload_sha256"]:
        raise BackupError(
            f"{name} is damaged or incomplete: its payload does not match the checksum in its"
            " header"
        )
    source.seek(start)
    decompressor = zlib.decompressobj(31)
    with open(target, "wb") as sink:
        try:
            for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
                sink.write(decompressor.decompress(chunk))
            sink.write(decompressor.flush())
        except zlib.error:
            raise BackupError(f"{name}: the payload cannot be decompressed") from None
        sink.flush()
        os.fsync(sink.fileno())


def _check_secrets(cursor: Any, secret_key: str, previous: Sequence[str], name: str) -> None:
    """
    Refuse a backup whose signing secrets do not open, or whose client
    credentials were not hashed, under this SecretKey (or a previous one).
    """
    sealer = SecretSealer.from_secret_key(secret_key, previous)
    for (stored,) in _all(cursor, "SELECT secret FROM signing_secrets ORDER BY project_uuid"):
        try:
            sealer.open(stored)
        except SealError:
            raise BackupError(
                f"{name}: its signing secrets were sealed under key id {sealed_key_id(stored)},"
                f" but the SecretKey given has key id {sealer.key_id}: restore with the"
                " .scheduler0 (SecretKey) kept with the backup"
            ) from None
    hasher = SecretHasher.from_secret_key(secret_key, previous)
    for (stored,) in _all(
        cursor, "SELECT api_secret_hash FROM credentials WHERE archived_at IS NULL"
    ):
        if hasher.other_key(stored):
            raise BackupError(
                f"{name}: its client credentials were hashed under key id {key_id_of(stored)},"
                f" but the SecretKey given has key id {hasher.key_id}: restore with the"
                " .scheduler0 (SecretKey) kept with the backup"
            )


def _check_empty(data_dir: str) -> None:
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise BackupError(f"{data_dir} is not a directory")
    if os.path.isdir(data_dir) and os.listdir(data_dir):
        raise BackupError(
            f"the data directory {data_dir} is not empty: restore writes only into an empty"
            " (or new) data directory, before the node's first start"
        )


def restore_backup(
    path: str,
    data_dir: str,
    secret_key: str,
    previous_keys: Sequence[str] = (),
    applied_index: int = 0,
) -> dict[str, Any]:
    """
    Restore the backup file at C{path} into the empty (or new) directory
    C{data_dir}: check its header, checksum and versions and that
    C{secret_key} opens its secrets, migrate the image to this release's
    schema and write it as the data directory's state machine at
    C{applied_index} (0: a single node's command log starts empty; a cluster
    node's Raft log starts with the state as its snapshot, see
    L{scheduler0.cluster.restore}). Returns the header. On any refusal
    nothing is left behind.
    """
    name = path
    _check_empty(data_dir)
    try:
        source = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise BackupError(f"cannot read {path}: {e.strerror or e}") from None
    created = not os.path.isdir(data_dir)
    target = os.path.join(data_dir, STATE_FILE)
    restoring = target + ".restoring"
    try:
        with source:
            header = read_header(source, name)
            os.makedirs(data_dir, exist_ok=True)
            unpack_payload(source, header, restoring, name)
        _migrate(restoring, secret_key, previous_keys, name, applied_index)
        publish(restoring, target)
    except BaseException:
        for leftover in (restoring, restoring + "-journal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        if created and os.path.isdir(data_dir) and not os.listdir(data_dir):
            os.rmdir(data_dir)
        raise
    return header


def _migrate(
    path: str, secret_key: str, previous_keys: Sequence[str], name: str, applied_index: int
) -> None:
    """Bring the image at C{path} to this release's schema, after checking it."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        cursor = connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            tables = {row[0] for row in _all(cursor, "SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError:
            raise BackupError(f"{name}: the payload is not a state machine image") from None
        if "meta" not in tables or "jobs" not in tables:
            raise BackupError(f"{name}: the payload is not a state machine image")
        version = _scalar(cursor, "SELECT MAX(value) FROM meta WHERE key = 'entry_version'")
        if version is not None and version > ENTRY_VERSION:
            raise UnsupportedVersion(
                f"{name} was made by a cluster that writes entry version {version}; release"
                f" {RELEASE} reads entry versions up to {ENTRY_VERSION}: restore it with a"
                " newer release"
            )
        _create_schema(cursor)
        _check_secrets(cursor, secret_key, previous_keys, name)
        cursor.execute("UPDATE meta SET value = ? WHERE key = 'applied_index'", (applied_index,))
        cursor.execute("COMMIT")
        cursor.execute("PRAGMA journal_mode=DELETE")
    finally:
        connection.close()
