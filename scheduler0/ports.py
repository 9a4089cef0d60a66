"""
The seams between a node's parts, as Protocols: the proposer (and the
commands it tells of), the execution history, the job reader, the state
reader and the sender; and what the metrics read of the parts above them
at scrape time.
Each is declared here once; the scheduler (L{scheduler0.scheduler.ports}) and
the API (L{scheduler0.api.ports}) name the ones they use. Real parts and the
tests' fakes alike are checked against them (by mypy, and by the contract
tests in C{tests/test_contract_*}). The clock is Twisted's C{IReactorTime}.

Every Protocol is runtime-checkable, so a test may also ask C{isinstance}.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol, runtime_checkable

from twisted.internet.defer import Deferred

from scheduler0.delivery import Delivery
from scheduler0.labels import Selector
from scheduler0.store.commands import Command, Subscriber


@runtime_checkable
class Proposer(Protocol):
    """
    Where changes go: C{propose} fires with the command's result once it is
    applied (L{scheduler0.store.local.LocalProposer} on one node,
    L{scheduler0.cluster.node.ClusterNode} in a cluster).
    """

    def propose(self, command: Command) -> Deferred[Any]: ...


@runtime_checkable
class AppliedCommands(Protocol):
    """
    Tells of each command applied: a subscriber hears C{(command, result)}
    for the ops it names (None: every op), in the order applied.
    """

    def subscribe(self, fn: Subscriber, ops: Collection[str] | None = None) -> None: ...


@runtime_checkable
class ProposingNode(Proposer, AppliedCommands, Protocol):
    """
    A node's proposer as the parts that both change state and follow the
    applied commands see it (L{scheduler0.store.local.LocalProposer},
    L{scheduler0.cluster.node.ClusterNode}).
    """


@runtime_checkable
class ExecutionRecords(Protocol):
    """
    This node's execution records as the scheduler writes them
    (L{scheduler0.store.executions.ExecutionStore}): C{last_slots_of} fires
    with job_uuid -> the latest slot recorded past C{scheduled}.
    """

    def record(self, execution: dict[str, Any], *, trusted: bool = False) -> None: ...

    def last_slots_of(self, job_uuids: list[str]) -> Deferred[Any]: ...


@runtime_checkable
class ExecutionHistory(Protocol):
    """
    How the API reads execution records: one node's own store
    (L{scheduler0.store.executions.ExecutionStore}), or in a cluster every
    member's records merged (L{scheduler0.cluster.history.ClusterHistory}).

    C{query} fires with (items, total) -- newest scheduled_at first --
    or, in a cluster, (items, total, node ids whose records are missing);
    C{latest_per_job} with job_uuid -> its newest record.
    """

    def query(
        self,
        job_uuid: str | None = None,
        project_uuid: str | None = None,
        state: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Deferred[Any]: ...

    def latest_per_job(self, job_uuids: list[str]) -> Deferred[Any]: ...


@runtime_checkable
class JobReader(Protocol):
    """
    Reads the jobs page by page in creation order, after the (created_at,
    uuid) of the previous page's last job (L{scheduler0.store.state.StateStore}).
    """

    def jobs_page(self, after: tuple[str, str] | None, limit: int) -> Deferred[Any]: ...

    def paused_projects(self) -> Deferred[Any]:
        """The uuids of the paused projects (a set)."""
        ...

    def project_jobs_page(
        self,
        project_uuid: str,
        node_id: int | None,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
    ) -> Deferred[Any]:
        """A page of the project's active jobs (those C{node_id} owns, or all)."""
        ...


@runtime_checkable
class StateReader(Protocol):
    """
    The reads the API makes of the replicated state
    (L{scheduler0.store.state.StateStore}): one project, job or credential
    by its key fires with it, or None when there is none; a listing fires
    with (a page of items, the total).
    """

    def get_project(self, uuid: str) -> Deferred[Any]: ...

    def get_project_by_name(self, name: str) -> Deferred[Any]: ...

    def list_projects(
        self, limit: int = 50, offset: int = 0, uuids: Collection[str] | None = None
    ) -> Deferred[Any]: ...

    def get_job(self, uuid: str) -> Deferred[Any]: ...

    def list_jobs(
        self,
        project_uuid: str | None = None,
        paused: bool | None = None,
        limit: int = 50,
        offset: int = 0,
        after: tuple[str, str] | None = None,
        selector: Selector | None = None,
        name_prefix: str | None = None,
        project_uuids: Collection[str] | None = None,
    ) -> Deferred[Any]: ...

    def count_jobs(self, project_uuid: str) -> Deferred[Any]: ...

    def owner_counts(self) -> Deferred[Any]: ...

    def get_credential(self, uuid: str) -> Deferred[Any]: ...

    def get_credential_by_key(self, api_key: str) -> Deferred[Any]: ...

    def list_credentials(self, limit: int = 50, offset: int = 0) -> Deferred[Any]: ...

    def signing_secrets(self) -> Deferred[Any]: ...

    def credential_hash_key_ids(self) -> Deferred[Any]: ...

    #: The entry version the cluster writes (L{scheduler0.versions}): what a
    #: request needing a newer one checks (C{require_entry_version}).
    def entry_version(self) -> Deferred[Any]: ...

    def audit_page(
        self,
        filters: Mapping[str, Any],
        limit: int = 50,
        before_seq: int | None = None,
        offset: int = 0,
    ) -> Deferred[Any]: ...


@runtime_checkable
class Sender(Protocol):
    """
    Sends due deliveries (L{scheduler0.executor.http.HTTPExecutor}); each
    submitted delivery is reported started, then has exactly one outcome,
    through the callbacks the sender was built with.
    """

    def submit(self, delivery: Delivery) -> None: ...

    def cancel_job(self, job_uuid: str, reason: str) -> int: ...

    def congested(self, before: float) -> set[str]: ...

    def stop(self, grace_s: float = ...) -> Deferred[None]: ...


# -- what the metrics read at scrape time (scheduler0.metrics) -----------------


@runtime_checkable
class SchedulerGauges(Protocol):
    """The scheduler's counts (L{scheduler0.scheduler.service.SchedulerService})."""

    def active_jobs(self) -> int: ...

    def owned_jobs(self) -> int: ...

    def progress_mark(self) -> tuple[str, int, int] | None: ...


@runtime_checkable
class SenderGauges(Protocol):
    """The sender's load (L{scheduler0.executor.http.HTTPExecutor})."""

    max_workers: int

    def queue_depth(self) -> int: ...

    def in_flight(self) -> int: ...

    def retrying(self) -> int: ...


@runtime_checkable
class ClusterGauges(Protocol):
    """This node's view of the cluster (L{scheduler0.cluster.node.ClusterNode})."""

    def local_status(self) -> dict[str, Any]: ...

    def member_ids(self) -> set[int]: ...

    def reachable_peers(self) -> int: ...


@runtime_checkable
class NotifierCounts(Protocol):
    """How many failure notifications went each way (L{scheduler0.notify.FailureNotifier})."""

    sent: int
    undelivered: int
    dropped: int
