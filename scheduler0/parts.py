"""
The children of a node's service tree, and the links between parts that
are built one after the other.

L{scheduler0.service.NodeService} adds the children in dependency order
(the stores first, the HTTP port last), each once the one before it is
up; it stops them in the reverse order, each once the one after it has
stopped. A child's collaborators are all given to it when it is built.

Where a part built first reports to a part built after it (the executor's
outcomes to the scheduler, the scheduler's progress to the cluster node), a
L{Fanout} or a L{Later} built before both is given to both sides, so no
part is patched after it is built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint

from scheduler0.ports import AppliedCommands

if TYPE_CHECKING:
    from twisted.web.client import HTTPConnectionPool
    from twisted.web.server import Site

    from scheduler0.api.app import SchedulerAPI
    from scheduler0.clockwatch import ClockWatch
    from scheduler0.cluster.copies import HistoryCopies
    from scheduler0.cluster.leader import LeaderDuties
    from scheduler0.cluster.node import ClusterNode
    from scheduler0.diskspace import DiskWatcher
    from scheduler0.executor.http import HTTPExecutor
    from scheduler0.guard import ResourceGuard
    from scheduler0.metrics import NodeMetrics
    from scheduler0.notify import FailureNotifier
    from scheduler0.scheduler.service import SchedulerService
    from scheduler0.signing import CallbackSigner
    from scheduler0.store.executions import ExecutionStore
    from scheduler0.store.local import LocalProposer
    from scheduler0.store.log import CommandLog
    from scheduler0.store.state import StateStore

T = TypeVar("T")


@attrs.define(eq=False)
class Fanout:
    """
    Calls each listener, in the order they were added, with what it is
    called with.
    """

    _listeners: list[Callable[..., Any]] = attrs.field(factory=list)

    def add(self, listener: Callable[..., Any]) -> None:
        """Call C{listener} too from now on."""
        self._listeners.append(listener)

    def __call__(self, *args: Any) -> None:
        for listener in self._listeners:
            listener(*args)


@attrs.define(eq=False)
class Later(Generic[T]):
    """
    An answer that a part built later gives to parts built before it:
    calling it answers None until L{provide} names the part that answers.
    """

    _answer: Callable[[], T] | None = None

    def provide(self, answer: Callable[[], T]) -> None:
        """Answer with C{answer()} from now on."""
        self._answer = answer

    def __call__(self) -> T | None:
        return self._answer() if self._answer is not None else None


@attrs.frozen
class Vitals:
    """The parts C{GET /healthcheck} reads (None: the node has no such part)."""

    scheduler: SchedulerService | None = None
    guard: ResourceGuard | None = None
    executor: HTTPExecutor | None = None
    proposer: LocalProposer | ClusterNode | None = None
    cluster: ClusterNode | None = None
    disk: DiskWatcher | None = None
    executions: ExecutionStore | None = None
    #: The clock watch: the C{clock} field.
    clock: ClockWatch | None = None


@attrs.define(eq=False)
class Part(Service):
    """
    A child of the node whose start and stop are coroutines: C{ready} fires
    once it is up, and C{stopService} waits for it to be down.
    """

    ready: Deferred[None] | None = attrs.field(default=None, init=False)

    def startService(self) -> None:
        Service.startService(self)
        self.ready = Deferred.fromCoroutine(self.start())

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self.stop())

    async def start(self) -> None:
        """Bring this part up."""

    async def stop(self) -> None:
        """Bring this part down, waiting for its work in flight."""


@attrs.define(eq=False)
class Stores(Part):
    """
    The node's SQLite files: the state machine, its execution records, and
    the command log (one node) or the tables of the history copies (a
    cluster). Opened first, closed last.
    """

    state: StateStore
    executions: ExecutionStore
    log: CommandLog | None = None
    copies: HistoryCopies | None = None

    async def start(self) -> None:
        await self.state.open()
        await self.executions.open()
        if self.copies is not None:
            await self.copies.open()
        if self.log is not None:
            await self.log.open()

    async def stop(self) -> None:
        await self.executions.close()
        if self.log is not None:
            await self.log.close()
        await self.state.close()


@attrs.define(eq=False)
class Connections(Part):
    """The callbacks' connection pool: its kept connections close on stop."""

    pool: HTTPConnectionPool

    async def stop(self) -> None:
        await self.pool.closeCachedConnections()


@attrs.define(eq=False)
class LocalProposing(Part):
    """One node's proposer: it replays the command log the state has not seen."""

    proposer: LocalProposer

    async def start(self) -> None:
        await self.proposer.start()

    async def stop(self) -> None:
        await self.proposer.stop()


@attrs.define(eq=False)
class Followers(Part):
    """
    The parts that follow the applied commands: the signer (once its keys
    are loaded) and then each of C{subscriptions}, as C{(fn, ops)} (ops
    None: every command), subscribed to the proposer in that order.
    """

    proposer: AppliedCommands
    signer: CallbackSigner
    signer_ops: Collection[str]
    subscriptions: list[tuple[Callable[..., None], Collection[str] | None]]

    async def start(self) -> None:
        await self.signer.load()
        self.proposer.subscribe(self.signer.on_applied, self.signer_ops)
        for fn, ops in self.subscriptions:
            self.proposer.subscribe(fn, ops)


@attrs.define(eq=False)
class ClockWatching(Part):
    """
    The watch on the wall clock: from before the stores open until the
    node has stopped, the reactor's timers keep their elapsed time across
    steps of the wall clock (see scheduler0.clockwatch).
    """

    watch: ClockWatch

    async def start(self) -> None:
        self.watch.install()

    async def stop(self) -> None:
        self.watch.uninstall()


@attrs.define(eq=False)
class Upkeep(Part):
    """
    The resource guard's sampling, the pruning of execution records and the
    data directory's free space (C{disk}).
    """

    guard: ResourceGuard
    executions: ExecutionStore
    disk: DiskWatcher | None = None

    async def start(self) -> None:
        self.guard.start()
        self.executions.start_pruning()
        if self.disk is not None:
            self.disk.start()

    async def stop(self) -> None:
        self.guard.stop()
        if self.disk is not None:
            self.disk.stop()


@attrs.define(eq=False)
class Clustering(Part):
    """
    The cluster node (Raft, leases, membership), the leader's duties and
    the copies of history.
    """

    cluster: ClusterNode
    duties: LeaderDuties
    copies: HistoryCopies

    async def start(self) -> None:
        await self.cluster.start()
        self.duties.start()
        self.copies.start()

    async def stop(self) -> None:
        self.duties.stop()
        self.copies.stop()
        await self.cluster.stop()


@attrs.define(eq=False)
class Metrics(Part):
    """The Prometheus metrics' own loop."""

    metrics: NodeMetrics

    async def start(self) -> None:
        self.metrics.start()

    async def stop(self) -> None:
        self.metrics.stop()


@attrs.define(eq=False)
class Notifications(Part):
    """Failure notifications: stopping waits for those in flight."""

    notifier: FailureNotifier

    async def stop(self) -> None:
        await self.notifier.stop()


@attrs.define(eq=False)
class Scheduling(Part):
    """
    The scheduler; once it has loaded every job, C{loaded} is called (the
    node tunes its garbage collector then).
    """

    scheduler: SchedulerService
    loaded: Callable[[], None]

    async def start(self) -> None:
        self.scheduler.startService()
        assert self.scheduler.ready is not None  # set by startService
        await self.scheduler.ready
        self.loaded()

    async def stop(self) -> None:
        await self.scheduler.stopService()


@attrs.define(eq=False)
class API(Part):
    """
    The HTTP API follows the applied commands; then C{first_credential}
    makes a new node's first client credential.
    """

    api: SchedulerAPI
    proposer: AppliedCommands
    first_credential: Callable[[], Awaitable[None]]

    async def start(self) -> None:
        self.proposer.subscribe(self.api.on_applied)
        await self.first_credential()


@attrs.define(eq=False)
class Listener(Part):
    """The API's HTTP port: listening last, closed first."""

    endpoint: IStreamServerEndpoint
    site: Site
    _port: IListeningPort | None = attrs.field(default=None, init=False)

    async def start(self) -> None:
        self._port = await self.endpoint.listen(self.site)

    async def stop(self) -> None:
        # IListeningPort allows None (stopped at once); a TCP port's is a Deferred.
        stopped = self._port.stopListening() if self._port is not None else None
        if stopped is not None:
            await stopped
