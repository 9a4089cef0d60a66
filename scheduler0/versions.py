"""
The versions of what a node writes and reads.

A release writes Raft entries (commands) of one format version,
L{ENTRY_VERSION}, and reads every version up to it. Releases before
versioning wrote version 1 and put no C{"v"} in a command; a command of
version 1 is still written without it, so those releases read it as they
always did.

A cluster agrees on the entry version it writes (the C{entry_version} row of
the state machine's C{meta} table): a new data directory starts at this
release's version; one written by an older release starts at 1 and moves up
once every member runs a release that reads the newer version. Until then a
request that needs the newer version is refused (L{EntryVersionTooLow}), so a
node of the older release never meets an entry it would misread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from scheduler0 import __version__

#: This release, as the package states it.
RELEASE = __version__

#: The format version of the commands this release writes and reads.
ENTRY_VERSION = 2

#: The entry version of the releases before versioning.
FIRST_ENTRY_VERSION = 1

#: What each entry version added (for the messages that name it).
ENTRY_VERSION_ADDS = {
    1: "projects, jobs, credentials, signing secrets and membership",
    2: "job labels, project pause, scoped credentials and the audit log",
}


class UnsupportedVersion(Exception):
    """
    Something written by a newer release: an entry, a snapshot or a data
    file of a version this release does not read. The message is the one
    line a node logs before it stops.
    """


def unknown_op(op: str) -> UnsupportedVersion:
    """The refusal of a command whose op this release has no handler for."""
    return UnsupportedVersion(
        f"a command with op {op!r}, which this release ({RELEASE}, entry version"
        f" {ENTRY_VERSION}) does not know: it needs a newer release that knows the op"
    )


def at_entry(
    index: int, error: UnsupportedVersion, where: str = "Raft entry"
) -> UnsupportedVersion:
    """C{error} said of the log entry at C{index} (the line a node stops with)."""
    return UnsupportedVersion(f"{where} {index}: {error}")


#: One step of a SQLite file's schema: from version k to k + 1, given a
#: cursor or connection inside the transaction that opens the file.
MigrationStep = Callable[[Any], None]


def schema_version(txn: Any) -> int:
    """The schema version of a SQLite file (C{PRAGMA user_version}; 0: never set)."""
    row = txn.execute("PRAGMA user_version").fetchone()
    return int(row[0]) if row else 0


def file_name(txn: Any) -> str:
    """The path of the SQLite file a cursor or connection is on (for messages)."""
    for row in txn.execute("PRAGMA database_list").fetchall():
        if row[1] == "main":
            return str(row[2] or ":memory:")
    return ":memory:"


def check_schema_version(found: int, latest: int, name: str) -> None:
    """Raise L{UnsupportedVersion} if C{name}'s schema version C{found} is past C{latest}."""
    if found > latest:
        raise UnsupportedVersion(
            f"{name} has schema version {found}; this release ({RELEASE}) reads schema"
            f" versions up to {latest} of it: it was written by a newer release"
        )


def migrate_schema(
    txn: Any,
    steps: Sequence[MigrationStep],
    additive: MigrationStep | None = None,
    name: str | None = None,
) -> int:
    """
    Bring a SQLite file from the schema version it has to C{len(steps)},
    running each step it lacks in order (step k takes version k to k + 1),
    and record the new version; returns the version it had. The files of the
    releases before schema versions have version 0: step 0 creates what is
    missing in any of them. A file already at the latest version gets
    C{additive} (tables and columns added within a version, if any). A file
    of a newer version than this release knows raises L{UnsupportedVersion}
    naming it (C{name}, else its path) and is left as it is.
    """
    found = schema_version(txn)
    latest = len(steps)
    check_schema_version(found, latest, name or file_name(txn))
    for step in steps[found:]:
        step(txn)
    if found != latest:
        txn.execute(f"PRAGMA user_version = {int(latest)}")
    elif additive is not None:
        additive(txn)
    return found


def check_entry_version(version: int, name: str) -> None:
    """
    Raise L{UnsupportedVersion} if the state C{name} says its cluster writes
    an entry version past this release's.
    """
    if version > ENTRY_VERSION:
        raise UnsupportedVersion(
            f"{name} says its cluster writes entry version {version}; this release ({RELEASE})"
            f" reads entry versions up to {ENTRY_VERSION}: it needs a release that reads"
            f" entry version {version}"
        )


class EntryVersionTooLow(Exception):
    """
    A request needs entry version C{needed} while the cluster still writes
    C{current} (a member runs an older release).
    """

    def __init__(self, feature: str, needed: int, current: int) -> None:
        self.feature = feature
        self.needed = needed
        self.current = current
        super().__init__(
            f"{feature} needs every node of the cluster on a release that writes entry"
            f" version {needed}; the cluster still writes version {current}"
            " (a member runs an older release): upgrade every node first"
        )


def require_entry_version(current: int, needed: int, feature: str) -> None:
    """Raise L{EntryVersionTooLow} unless C{current} is at least C{needed}."""
    if current < needed:
        raise EntryVersionTooLow(feature, needed, current)
