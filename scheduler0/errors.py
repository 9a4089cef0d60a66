"""
Failures of the proposal seam. The API maps every L{StoreUnavailable} to 503:
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
