"""
C{GET /backup}: a backup of the replicated state, as one file (see
L{scheduler0.store.backup} for what it holds and README "Backup and
restore").

The request layer has already waited for the read barrier (unless
C{consistency=stale}), so on any node, leader or follower, the copy holds
every write acknowledged before the request. The file is made in the data
directory and streamed from there, then removed.
"""

from __future__ import annotations

import json
from typing import IO, Any, ClassVar, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from scheduler0.api.errors import APIError
from scheduler0.api.request import Call

#: The media type of a backup file.
BACKUP_MEDIA_TYPE = "application/octet-stream"
#: Bytes read from the file per write.
CHUNK_BYTES = 256 * 1024


class MadeBackup(Protocol):
    """A backup file a node made (L{scheduler0.store.backup.BackupFile})."""

    @property
    def path(self) -> str: ...

    @property
    def header(self) -> dict[str, Any]: ...

    @property
    def size(self) -> int: ...

    def discard(self) -> None: ...


class BackupMaker(Protocol):
    """Makes backups (L{scheduler0.store.backup.Backups}), one at a time."""

    @property
    def busy(self) -> bool: ...

    def make(self) -> Deferred[Any]: ...


@implementer(IPushProducer)
class _FileStreamer:
    """
    Writes a file to a request a chunk at a time while the connection takes
    it (paused when its buffer is full), then finishes the request.
    """

    def __init__(self, request: Any, source: IO[bytes]) -> None:
        self.request = request
        self.source: IO[bytes] | None = source
        self.paused = False
        self._producing = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        if self._producing:
            return  # resumed from inside a write: the loop below goes on
        self._producing = True
        try:
            while not self.paused and self.source is not None:
                chunk = self.source.read(CHUNK_BYTES)
                if not chunk:
                    self.source = None
                    self.request.unregisterProducer()
                    self.request.finish()
                    return
                self.request.write(chunk)
        finally:
            self._producing = False

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        # The client went away; the file is closed when the request ends.
        self.source = None


class _Download(Resource):
    """Serves one backup file, then discards it (sent or not)."""

    isLeaf = True

    def __init__(self, made: MadeBackup) -> None:
        super().__init__()
        self.made = made

    def render_GET(self, request: Any) -> Any:
        header = self.made.header
        request.setResponseCode(200)
        request.setHeader(b"content-type", BACKUP_MEDIA_TYPE.encode("ascii"))
        request.setHeader(b"content-length", str(self.made.size).encode("ascii"))
        name = f"scheduler0-backup-{header.get('index', 0)}.s0"
        request.setHeader(b"content-disposition", f'attachment; filename="{name}"'.encode())
        # The header again, for a client that wants it before the body.
        request.setHeader(b"x-scheduler0-backup", json.dumps(header, sort_keys=True).encode())
        source: IO[bytes] = open(self.made.path, "rb")  # noqa: SIM115 (closed when finished)

        def finished(_: Any) -> None:
            source.close()
            self.made.discard()

        request.notifyFinish().addBoth(finished)
        _FileStreamer(request, source).start()
        return NOT_DONE_YET


@attrs.define(eq=False, kw_only=True)
class BackupResource:
    """The backup route (admin only); C{backups} is None on a node that serves none."""

    HANDLERS: ClassVar[tuple[str, ...]] = ("backup",)

    backups: BackupMaker | None

    async def backup(self, call: Call) -> Resource:
        """A consistent copy of the state machine, as a backup file to download."""
        if self.backups is None:
            raise APIError(404, "backups are not served by this node")
        if self.backups.busy:
            raise APIError(
                503,
                "a backup is being made now; retry once it is done",
                code="backup_in_progress",
                headers={"Retry-After": "5"},
            )
        made = await self.backups.make()
        return _Download(made)
