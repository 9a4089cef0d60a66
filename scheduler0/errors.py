"""
Failures of the proposal seam. The API maps every L{StoreUnavailable} to 503
(L{WritesRefused}: 507, nothing was stored):
the change was not committed and may be retried.
"""

from __future__ import annotations


class StoreUnavailable(Exception):
    """A proposal could not be committed (no leader, timeout, failing disk)."""


class NotLeader(StoreUnavailable):
    """This node is not the leader; C{leader_address} names the one to ask, if known."""

    def __init__(self, message: str = "not the leader", leader_address: str | None = None):
        super().__init__(message)
        self.leader_address = leader_address


class ProposalTimeout(StoreUnavailable):
    """A proposal was not committed in time; it may still be applied later."""


class WritesRefused(StoreUnavailable):
    """
    A write refused before it was stored, because the data directory cannot
    take it (below DataDirMinFreeMB, full or read-only): nothing changed. The
    API answers 507 with the message, which names the directory and its free
    space.
    """

    def __init__(
        self,
        message: str,
        *,
        data_dir: str = "",
        free_bytes: int = 0,
        floor_bytes: int = 0,
        cause: str = "",
    ):
        super().__init__(message)
        self.data_dir = data_dir
        self.free_bytes = free_bytes
        self.floor_bytes = floor_bytes
        self.cause = cause


class RecordsHeld(Exception):
    """
    A run this node will not send because it could not record it: its
    execution records cannot be written (a full disk) and
    ExecutionRecordsMaxPending of them wait in memory. The API answers 503
    with the code C{records_held}; nothing was sent.
    """
