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
