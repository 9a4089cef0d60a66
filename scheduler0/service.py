"""
The twistd entry point: C{makeService} builds one node's service tree.

L{NodeBuilder} makes the node's parts and its children
(L{scheduler0.parts}); L{NodeService} adds them in order (stores, log
replay, scheduler, then the HTTP listener), each once the one before it is
ready, because a Twisted C{MultiService} starts its children without
waiting for them; shutdown runs in the reverse order and waits for
in-flight work.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevelFilterPredicate,
    globalLogPublisher,
)
from twisted.python import usage

from scheduler0 import __version__
from scheduler0.config import Config, ConfigError, load_config
from scheduler0.diskspace import DiskWatcher
from scheduler0.logs import (
    LOG_FORMATS,
    ExecutionEvents,
    JSONLinesObserver,
    level_named,
    twistd_log_destination,
)
from scheduler0.parts import (
    API,
    ClockWatching,
    Clustering,
    Connections,
    Fanout,
    Followers,
    Later,
    Listener,
    LocalProposing,
    Metrics,
    Notifications,
    Part,
    Scheduling,
    Stores,
    Upkeep,
    Vitals,
)
from scheduler0.ports import ProposingNode
from scheduler0.tls import api_server_endpoint, check_tls_config, endpoint_warnings
from scheduler0.versions import ENTRY_VERSION, FIRST_ENTRY_VERSION, UnsupportedVersion

if TYPE_CHECKING:
    from treq.client import HTTPClient
    from twisted.web.client import HTTPConnectionPool
    from twisted.web.server import Site

    from scheduler0.api.app import SchedulerAPI
    from scheduler0.clockwatch import ClockWatch
    from scheduler0.cluster.copies import HistoryCopies
    from scheduler0.cluster.leader import LeaderDuties
    from scheduler0.cluster.node import ClusterNode
    from scheduler0.cluster.peer import PeerClient
    from scheduler0.credentials import AdminCredentials
    from scheduler0.delivery import Delivery
    from scheduler0.executor.http import HTTPExecutor
    from scheduler0.guard import ResourceGuard
    from scheduler0.metrics import NodeMetrics
    from scheduler0.netpolicy import NetworkPolicy, Resolver
    from scheduler0.notify import FailureNotifier
    from scheduler0.scheduler.admission import Admission
    from scheduler0.scheduler.service import SchedulerService
    from scheduler0.signing import CallbackSigner
    from scheduler0.store.backup import Backups
    from scheduler0.store.commands import Subscriber
    from scheduler0.store.executions import ExecutionStore
    from scheduler0.store.local import LocalProposer
    from scheduler0.store.log import CommandLog
    from scheduler0.store.state import StateStore
    from scheduler0.summary import ExecutionSummary

log = Logger()


# A crash inside this window loses "sent" marks, so those slots are sent
# again (same execution_id) after the restart: at-least-once, as promised.
# Long enough that most executions' outcome replaces their "sent" record
# before either is written (one row written per execution, not two).
EXECUTION_FLUSH_DELAY_S = 0.25
# executions.db: a page cache of up to 64 MiB (SQLite's default is 2 MiB)
# holds more of its random-keyed indexes (the execution_id key,
# executions_by_job), and a checkpoint every 10,000 WAL pages (about 40 MB;
# default 1,000) copies a page rewritten in many commits once. On a replay of
# 8,000 executions/s over a file at its steady state (100 records per job,
# pruned every minute), SQLite's thread per execution: 109 us with 16 MiB
# (121 with the one-statement prune before it), 95 us with 64 MiB, 90 us
# with 256 MiB. Its WAL is truncated only past 64 MiB (beyond those 10,000
# pages), so the checkpoints stay as measured.
EXECUTIONS_WAL_LIMIT_BYTES = 64 * 1024 * 1024
EXECUTIONS_PRAGMAS = (
    "cache_size=-65536",
    "wal_autocheckpoint=10000",
    f"journal_size_limit={EXECUTIONS_WAL_LIMIT_BYTES}",
)


class Options(usage.Options):
    """Options of C{twistd scheduler0}."""

    synopsis = "[--config PATH]"
    optParameters = [
        [
            "config",
            "c",
            None,
            "Path to config.yml (default: $SCHEDULER0_CONFIG, then ./config.yml).",
        ],
        [
            "log-format",
            None,
            "text",
            "text (default): lines for people; json: one JSON object per event and line.",
        ],
    ]

    def postOptions(self) -> None:
        if self["log-format"] not in LOG_FORMATS:
            raise usage.UsageError(
                f"--log-format: {self['log-format']!r} is not one of {', '.join(LOG_FORMATS)}"
            )
        try:
            self["loaded"] = load_config(self["config"], os.environ, os.getcwd())
            check_tls_config(self["loaded"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def apply_log_level(name: str) -> None:
    """
    Drop events below LogLevel from every observer twistd has set up.

    twistd installs its observers before services start and offers no hook
    for a level, so each one is wrapped in a filter here.
    """
    level = level_named(name)
    observers = list(getattr(globalLogPublisher, "_observers", ()))
    for observer in observers:
        if isinstance(observer, FilteringLogObserver):
            continue
        globalLogPublisher.removeObserver(observer)
        predicate = LogLevelFilterPredicate(defaultLogLevel=level)
        globalLogPublisher.addObserver(FilteringLogObserver(observer, [predicate]))


def min_free_bytes(config: Config) -> int:
    """DataDirMinFreeMB in bytes: the free space below which writes are refused."""
    return int(config.data_dir_min_free_mb * 1024 * 1024)


def disk_view(disk: Any) -> dict:
    """
    The health check's C{disk}: the data directory, its free space, and
    whether writes are refused.
    """
    if disk is None:
        return {
            "data_dir": None,
            "free_bytes": None,
            "min_free_bytes": 0,
            "writes_refused": False,
            "reason": None,
        }
    refusal = disk.refusal
    return {
        "data_dir": disk.path,
        "free_bytes": disk.free_bytes,
        "min_free_bytes": disk.floor_bytes,
        "writes_refused": refusal is not None,
        "reason": refusal.message if refusal is not None else None,
    }


def tune_garbage_collector() -> None:
    """
    Keep the cyclic garbage collector off the slots' critical path.

    What start-up loaded (every job's schedule entry) lives as long as the
    node, so it is frozen out of the collector's generations; and a young
    generation of 50,000 objects, not 700, makes collections rare. Measured
    with 1,000 jobs @every 1s on one node (python -m bench precision): p99
    lateness 29.6 -> 9.7 ms, the rest of the distribution unchanged.
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


@attrs.define(eq=False)
class NodeService(MultiService):
    """
    One Scheduler0 node: stores, proposer, scheduler, executor, HTTP API,
    each a child service (L{scheduler0.parts}) built by L{NodeBuilder} when
    the node starts.
    """

    config: Config
    reactor: Any
    environ: dict[str, str] = attrs.field(factory=lambda: dict(os.environ))
    announce: Any = None
    ready: Deferred = attrs.field(factory=Deferred)
    # The log observer twistd is to use instead of its own (--log-format json).
    log_observer: Any = None
    #: What the health check reads, once the node's parts are built.
    vitals: Vitals | None = None
    #: Why the node stops applying (L{halt}; None: it does not).
    halted: str | None = None

    def __attrs_post_init__(self) -> None:
        MultiService.__init__(self)

    def setServiceParent(self, parent: Any) -> None:
        # twistd starts its logging after it made the application, with the
        # application's ILogObserver component when there is one.
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        MultiService.setServiceParent(self, parent)

    def startService(self) -> None:
        MultiService.startService(self)
        apply_log_level(self.config.log_level)
        started = Deferred.fromCoroutine(self._start())

        def failed(failure: Any) -> None:
            from scheduler0.diskspace import DataDirectoryUnusable

            if failure.check(DataDirectoryUnusable, UnsupportedVersion):
                # Known and said in one line: no traceback to read through.
                log.error(
                    "scheduler0 node {node_id} does not start: {reason}",
                    node_id=self.config.node_id,
                    reason=str(failure.value),
                )
            else:
                log.failure("scheduler0 node failed to start", failure)
            self.ready.errback(failure)
            self._exit_with_error()

        started.addCallbacks(self.ready.callback, failed)

    def _exit_with_error(self) -> None:
        """Stop the reactor, then leave with 1 (twistd's exit code says nothing)."""
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self.reactor.callLater(0, self._stop_reactor)

    def halt(self, error: Exception) -> None:
        """
        Stop the node, exit code 1, for C{error}: it met an entry, a snapshot
        or a file of a newer release (L{scheduler0.versions.UnsupportedVersion})
        and applies nothing more. One critical line says what and why.
        """
        if self.halted is not None:
            return
        self.halted = str(error)
        log.critical(
            "scheduler0 node {node_id} stops: {reason}",
            node_id=self.config.node_id,
            reason=self.halted,
        )
        self._exit_with_error()

    def _stop_reactor(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    async def _start(self) -> None:
        """
        Build the parts, then add each child in turn: a running
        C{MultiService} starts a child as it is added, and the next one is
        added once this one is ready. First of all the data directory must
        take writes: a node that cannot record what it does sends nothing.
        """
        from scheduler0.diskspace import check_data_directory

        check_data_directory(self.config.data_path(), min_free_bytes(self.config))
        children, self.vitals = NodeBuilder(self).build()
        for child in children:
            child.setServiceParent(self)
            if child.ready is not None:
                await child.ready
        log.info(
            "scheduler0 {version} node {node_id} listening on {address}",
            version=__version__,
            node_id=self.config.node_id,
            address=self.config.http_address,
        )

    async def first_credential(
        self, api: SchedulerAPI, state: StateStore, cluster: ClusterNode | None
    ) -> None:
        """
        A new node makes its first client credential: at once on one node;
        in a cluster once it has a leader, on the leader only (so there is
        one, shown once), without holding up the start.
        """
        if cluster is None:
            await self._first_client_credential(api, state)
            return
        first = Deferred.fromCoroutine(self._first_cluster_credential(api, state, cluster))
        first.addErrback(lambda f: log.failure("making the first credential failed", f))

    async def _first_client_credential(self, api: SchedulerAPI, state: StateStore) -> None:
        """On a brand-new node, make one client credential and show it once."""
        if await state.count_credentials():
            return
        credential = await api.create_credential()
        text = (
            "\n"
            "  A first client credential was created for this new node.\n"
            f"  api_key:    {credential['api_key']}\n"
            f"  api_secret: {credential['api_secret']}\n"
            "  It is shown only now; make more with `scheduler0 create credential`.\n\n"
        )
        # Written to the terminal directly, not through the log system, so
        # the secret never lands in a log file; with JSON logs on standard
        # output it goes to standard error, so that output stays JSON lines.
        announce = self.announce or (
            sys.__stdout__ if self.log_observer is None else sys.__stderr__
        )
        if announce is not None:
            announce.write(text)
            announce.flush()

    async def _first_cluster_credential(
        self, api: SchedulerAPI, state: StateStore, cluster: ClusterNode
    ) -> None:
        from twisted.internet.task import deferLater

        from scheduler0.errors import StoreUnavailable

        while self.running and not cluster.stopped:
            if await state.count_credentials():
                return
            if cluster.is_leader:
                try:
                    await cluster.read_barrier()
                    await self._first_client_credential(api, state)
                    return
                except StoreUnavailable:
                    pass
            await deferLater(self.reactor, 0.2)

    def readiness(self) -> list[dict]:
        """
        Why this node cannot serve writes or fire its jobs now, as
        C{{"code", "message"}} entries (empty: it is ready). See
        L{scheduler0.readiness}.
        """
        from scheduler0 import readiness

        vitals = self.vitals
        # The HTTP listener opens last, so this shows only if it is asked
        # before start-up has finished (the parts exist from then on).
        if not self.ready.called or vitals is None:
            return [
                readiness.reason(
                    readiness.STARTING,
                    "this node is starting: its stores, Raft log and scheduler are not all up yet",
                )
            ]
        reasons = []
        if vitals.cluster is not None:
            reasons.extend(vitals.cluster.readiness())
        refusal = vitals.disk.refusal if vitals.disk is not None else None
        if refusal is not None:
            reasons.append(readiness.writes_refused_reason(refusal.message))
        guard = vitals.guard
        if guard is not None and guard.paused:
            reasons.append(
                readiness.reason(
                    readiness.SCHEDULING_PAUSED,
                    f"the resource guard pauses scheduling on this node ({guard.reason})",
                )
            )
        executions = vitals.executions
        if executions is not None:
            held = readiness.records_held(executions.hold_state())
            if held is not None:
                reasons.append(held)
        return reasons

    def health(self) -> dict:
        """
        What C{GET /healthcheck} reports about this node: its view of the
        cluster, and whether it is C{ready} (else the C{reasons}).
        """
        vitals = self.vitals or Vitals()
        guard = vitals.guard
        guard_state = guard.snapshot() if guard is not None else {"paused": False, "reason": None}
        cluster = vitals.cluster
        proposer = vitals.proposer
        executor = vitals.executor
        config = self.config
        reasons = self.readiness()
        if cluster is not None:
            status = cluster.local_status()
            view = {
                "node_id": config.node_id,
                "version": __version__,
                "role": status["role"],
                "leader_id": status["leader_id"],
                "leader_address": cluster.leader_address,
                "term": status["term"],
                "commit_index": status["commit_index"],
                "applied_index": status["applied_index"],
                "members": cluster.members(),
                "lease_valid": status["lease_valid"],
                "clock_offset_s": status["clock_offset_s"],
                "max_clock_offset_s": config.max_clock_offset_ms / 1000,
                "entry_version": status["entry_version"],
            }
        else:
            index = getattr(proposer, "applied_index", 0) if proposer is not None else 0
            view = {
                "node_id": config.node_id,
                "version": __version__,
                "role": "leader",
                "leader_id": config.node_id,
                "leader_address": config.http_address,
                "term": 1,
                "commit_index": index,
                "applied_index": index,
                "members": [
                    {
                        "node_id": config.node_id,
                        "address": config.http_address,
                        "raft_address": config.raft_address,
                        "role": "leader",
                        "reachable": True,
                        "last_contact": 0.0,
                        "reads_entry_version": ENTRY_VERSION,
                    }
                ],
                "entry_version": getattr(proposer, "entry_version", None),
            }
        return {
            **view,
            # The entry version this release reads; "entry_version" is the one
            # the cluster writes (README, "Upgrading").
            "reads_entry_version": ENTRY_VERSION,
            "scheduling_paused": bool(guard_state["paused"]),
            "pause_reason": guard_state["reason"],
            "resources": guard_state,
            "executor": {
                "queue_depth": executor.queue_depth() if executor is not None else 0,
                "in_flight": executor.in_flight() if executor is not None else 0,
            },
            "active_jobs": vitals.scheduler.active_jobs() if vitals.scheduler is not None else 0,
            "disk": disk_view(vitals.disk),
            "execution_records": (
                vitals.executions.hold_state() if vitals.executions is not None else None
            ),
            "clock": vitals.clock.snapshot() if vitals.clock is not None else None,
            "ready": not reasons,
            "reasons": reasons,
        }

    def stopService(self) -> Deferred:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        """Stop the children in the reverse order, each once the one after it has stopped."""
        for child in reversed(list(self)):
            await child.stopService()


@attrs.define(eq=False)
class NodeBuilder:
    """
    Builds a node's parts from its config, each given its collaborators
    when it is made, and returns them as the node's children in
    dependency order.
    """

    node: NodeService

    @property
    def config(self) -> Config:
        return self.node.config

    @property
    def reactor(self) -> Any:
        return self.node.reactor

    def in_thread(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run C{fn(*args)} on the reactor's thread pool."""
        from twisted.internet.threads import deferToThreadPool

        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

    def build(self) -> tuple[list[Part], Vitals]:
        """The node's children, in the order they start, and what its health check reads."""
        from scheduler0.clockwatch import ClockWatch
        from scheduler0.guard import ResourceGuard
        from scheduler0.scheduler.admission import Admission
        from scheduler0.summary import ExecutionSummary

        config, reactor = self.config, self.reactor
        os.makedirs(config.data_path(), exist_ok=True)
        admin = self.admin()
        copied_rows = Fanout()
        state, command_log, executions = self.stores(copied_rows if config.replicas else None)
        guard = ResourceGuard(reactor, config.max_memory, config.max_cpu)
        disk = DiskWatcher(reactor, config.data_path(), min_free_bytes(config))
        # Per-minute counts for GET /executions/summary (memory only: a
        # restarted node starts from zero).
        summary = ExecutionSummary(reactor)
        admission = Admission()
        clock_watch = ClockWatch(reactor)
        progress: Later[tuple[str, int, int] | None] = Later()
        cluster, local = None, None
        proposer: ProposingNode
        if config.replicas:
            cluster = proposer = self.cluster(
                state, admin, executions, guard, summary, progress, admission, disk
            )
            if cluster.history_copies is not None:
                copied_rows.add(cluster.history_copies.tap)
        else:
            local = proposer = self.local_proposer(command_log, state, disk)
        signer, net_policy, resolve, pool, http_client = self.callbacks(state, admin)
        notifier = self.notifier(state, http_client, signer)
        outcomes, started, posts = Fanout(), Fanout(), Fanout()
        executor = self.executor(http_client, guard, signer, outcomes, started, posts)
        finished, slots_started = Fanout(), Fanout()
        scheduler = self.scheduler(
            state,
            proposer,
            executions,
            executor,
            cluster,
            admission,
            # One log event per finished execution, with its ids.
            [ExecutionEvents(level=level_named(config.log_level)), finished, summary.on_execution],
            [slots_started, summary.on_started],
        )
        clock_watch.listeners.append(scheduler.clock_stepped)
        outcomes.add(scheduler.on_outcome)
        outcomes.add(notifier.on_outcome)
        started.add(scheduler.on_started)
        progress.provide(scheduler.progress_mark)
        metrics = self.metrics(
            scheduler,
            executor,
            cluster,
            guard,
            proposer,
            executions,
            state,
            notifier,
            disk,
            clock_watch,
        )
        finished.add(metrics.on_execution)
        slots_started.add(metrics.on_started)
        posts.add(metrics.on_post)
        duties = self.duties(cluster, state)
        api = self.api(
            state,
            proposer,
            executions,
            scheduler,
            admin,
            cluster,
            metrics,
            summary,
            net_policy=net_policy,
            resolve=resolve,
        )
        children = [
            ClockWatching(clock_watch),
            *self.consensus(state, executions, command_log, local, cluster, pool),
            self.followers(proposer, signer, notifier, metrics, cluster, duties),
            Upkeep(guard, executions, disk),
            *self.clustering(cluster, duties),
            Metrics(metrics),
            Notifications(notifier),
            Scheduling(scheduler, tune_garbage_collector),
            API(api, proposer, lambda: self.node.first_credential(api, state, cluster)),
            Listener(api_server_endpoint(reactor, config), self.site(api, admin, cluster)),
        ]
        return children, Vitals(
            scheduler, guard, executor, proposer, cluster, disk, executions, clock_watch
        )

    def admin(self) -> AdminCredentials:
        """The peer (admin) credentials, made on a node's first start."""
        from scheduler0.credentials import ensure_admin_credentials

        admin, created = ensure_admin_credentials(self.config, self.node.environ)
        if created:
            log.info("generated peer credentials for user {username}", username=admin.username)
        return admin

    def stores(self, copied_rows: Fanout | None) -> tuple[StateStore, CommandLog, ExecutionStore]:
        """
        The state machine, the command log and this node's execution records
        (C{copied_rows} hears each write's rows, for the copies of history).
        """
        from scheduler0.store.executions import ExecutionStore
        from scheduler0.store.log import CommandLog
        from scheduler0.store.sqlite import connection_pool
        from scheduler0.store.state import StateStore

        data, reactor = self.config.data_path(), self.reactor
        # The state machine is rebuilt from the command log (synced on every
        # append) after a power loss, so its own commits need no fsync.
        state = StateStore(
            connection_pool(os.path.join(data, "state.db"), reactor, replayable=True),
            # Raft snapshots are copied on a reactor pool thread beside it.
            run_blocking=self.in_thread,
            # A node joining a cluster learns the entry version it writes
            # from the log or a snapshot (README, "Upgrading").
            new_entry_version=(
                FIRST_ENTRY_VERSION
                if self.config.replicas and not self.config.bootstrap
                else ENTRY_VERSION
            ),
        )
        command_log = CommandLog(connection_pool(os.path.join(data, "log.db"), reactor))
        executions = ExecutionStore(
            connection_pool(
                os.path.join(data, "executions.db"),
                reactor,
                pragmas=EXECUTIONS_PRAGMAS,
                wal_limit=EXECUTIONS_WAL_LIMIT_BYTES,
            ),
            reactor,
            history_per_job=self.config.execution_history_per_job,
            # Group records for a moment, so the write (and its hold on the
            # GIL) does not land in the turns that send a batch of callbacks.
            flush_delay=EXECUTION_FLUSH_DELAY_S,
            tap=copied_rows,
            max_pending=self.config.execution_records_max_pending,
        )
        return state, command_log, executions

    def cluster(
        self,
        state: StateStore,
        admin: AdminCredentials,
        executions: ExecutionStore,
        guard: ResourceGuard,
        summary: ExecutionSummary,
        progress: Later[tuple[str, int, int] | None],
        admission: Admission,
        disk: DiskWatcher | None = None,
    ) -> ClusterNode:
        """This node's part of the cluster, with the copies of history it keeps."""
        import treq.client
        from twisted.web.client import Agent, HTTPConnectionPool

        from scheduler0.cluster.copies import SEND_TIMEOUT_S, HistoryCopies
        from scheduler0.cluster.node import ClusterNode

        reactor, config = self.reactor, self.config
        # Peers are our own nodes: their calls do not go through the
        # callback network policy, and no connection is kept open.
        peer_http = treq.client.HTTPClient(
            Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True))
        )

        def copies(members: Callable[[], set[int]], peers: PeerClient) -> HistoryCopies:
            # A copy of this node's records on another member, and the copies
            # others keep here: history outlives a node lost for good.
            return HistoryCopies(
                reactor,
                executions,
                config.node_id,
                members,
                lambda node_id, meta, data: peers.history_copy(node_id, meta, data, SEND_TIMEOUT_S),
                self.in_thread,
                # Copies of history are background work: they wait while the
                # node is past its capacity.
                busy=lambda: admission.busy,
            )

        return ClusterNode.open(
            reactor,
            config,
            state,
            admin,
            peer_http,
            self.in_thread,
            # A node that can record nothing more gives its jobs up too.
            is_paused=lambda: guard.paused or executions.firing_stopped(),
            executions=executions,
            progress=progress,
            summary=summary,
            history_copies=copies,
            disk=disk,
            halt=self.node.halt,
        )

    def local_proposer(
        self, command_log: CommandLog, state: StateStore, disk: DiskWatcher | None = None
    ) -> LocalProposer:
        """One node's proposer, over its command log."""
        from scheduler0.store.local import LocalProposer

        return LocalProposer(
            command_log,
            state,
            self.reactor,
            leader_address=self.config.http_address,
            disk=disk,
            halt=self.node.halt,
        )

    def callbacks(
        self, state: StateStore, admin: AdminCredentials
    ) -> tuple[CallbackSigner, NetworkPolicy, Resolver, HTTPConnectionPool, HTTPClient]:
        """
        The signer, the network policy, the resolver, the connection pool and
        the HTTP client of callbacks.
        """
        import treq.client
        from twisted.web.client import HTTPConnectionPool

        from scheduler0.executor.http import whole_body
        from scheduler0.netpolicy import NetworkPolicy, policy_agent, thread_resolver
        from scheduler0.sealing import SecretSealer
        from scheduler0.signing import CallbackSigner

        config, reactor = self.config, self.reactor
        signer = CallbackSigner(
            reactor,
            state,
            SecretSealer.from_secret_key(admin.secret_key, admin.previous_secret_keys),
        )
        net_policy = NetworkPolicy.from_config(
            config.callback_allow_networks, config.callback_deny_networks
        )
        resolve = thread_resolver(reactor)
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = config.max_workers
        # Every new callback connection goes to an address checked against
        # the policy at that moment (no DNS-rebinding way around it).
        http_client = treq.client.HTTPClient(
            data_to_body_producer=whole_body,
            agent=policy_agent(
                reactor,
                net_policy,
                pool,
                resolve,
                connect_timeout=min(config.job_execution_timeout, 30),
            ),
        )
        return signer, net_policy, resolve, pool, http_client

    def notifier(
        self, state: StateStore, http_client: HTTPClient, signer: CallbackSigner
    ) -> FailureNotifier:
        """The failure notifier, with the small executor its notifications go through."""
        from scheduler0.notify import FailureNotifier, notification_executor

        notified = Fanout()
        notifier = FailureNotifier(
            state.get_project,
            notification_executor(
                self.reactor, http_client, signer.sign, self.config.node_id, notified
            ),
            node_id=self.config.node_id,
        )
        notified.add(notifier.notified)
        return notifier

    def executor(
        self,
        http_client: HTTPClient,
        guard: ResourceGuard,
        signer: CallbackSigner,
        outcomes: Fanout,
        started: Fanout,
        posts: Fanout,
    ) -> HTTPExecutor:
        """The callback executor; it reports to the three fan-outs."""
        from scheduler0.executor.http import HTTPExecutor

        config = self.config
        return HTTPExecutor(
            self.reactor,
            http_client,
            outcomes,
            on_started=started,
            max_workers=config.max_workers,
            max_queue=config.max_queue,
            payload_max_bytes=int(config.http_executor_payload_max_size_mb * 1024 * 1024),
            retry_delay_s=config.job_execution_retry_delay,
            retry_delay_cap_s=config.job_execution_retry_max_delay,
            paused=lambda: guard.paused,
            sign=signer.sign,
            max_response_bytes=config.max_callback_response_bytes,
            node_id=config.node_id,
            max_per_url=config.max_workers_per_url,
            max_per_host=config.max_workers_per_host,
            response_excerpt_bytes=config.callback_response_excerpt_bytes,
            post_observer=posts,
        )

    def scheduler(
        self,
        state: StateStore,
        proposer: ProposingNode,
        executions: ExecutionStore,
        executor: HTTPExecutor,
        cluster: ClusterNode | None,
        admission: Admission,
        execution_observers: list[Callable[[dict], None]],
        started_observers: list[Callable[[Delivery, float], None]],
    ) -> SchedulerService:
        """The scheduler; in a cluster it fires only the jobs it owns, under a lease."""
        from scheduler0.scheduler.ports import Handover
        from scheduler0.scheduler.service import SchedulerService

        config = self.config
        may_fire: Callable[[], bool] | None = None
        lease_valid: Callable[[], bool] | None = None
        handover: Handover | None = None
        applied_index: Callable[[], int] | None = None
        if cluster is not None:
            from scheduler0.cluster.handover import Handover as ClusterHandover
            from scheduler0.cluster.ownership import Ownership

            lease_valid = cluster.leases.lease_valid
            # Twice the time the fan-in takes to visit every node, after the
            # old owner's lease: its records are in by then unless it failed.
            rounds = -(-len(config.members()) // max(1, config.execution_log_fetch_fan_in))
            handover = ClusterHandover(
                self.reactor,
                Ownership(state, executions, config.node_id),
                config.node_id,
                gap_check_s=(
                    cluster.lease_s + 2 * rounds * config.execution_log_fetch_interval_seconds + 1
                ),
            )

            # Each node keeps the records of what it fired (pruned as on one
            # node); the cluster commits only how far each node got.
            # (While an entry is applied the driver's index is still the one
            # before it; at start-up only the driver's is known.)
            def cluster_index() -> int:
                return max(cluster.raft.applying_index, cluster.driver.applied_index)

            applied_index = cluster_index

        # No new slot fires while the records of what was fired cannot be
        # written and ExecutionRecordsMaxPending of them wait in memory: the
        # slots stay owed and are caught up once records are written again.
        if lease_valid is None:

            def may_fire() -> bool:
                return not executions.firing_stopped()

        else:
            valid = lease_valid

            def may_fire() -> bool:
                return valid() and not executions.firing_stopped()

        scheduler = SchedulerService(
            self.reactor,
            state,
            proposer,
            executions,
            executor,
            node_id=config.node_id,
            history_per_job=config.execution_history_per_job,
            execution_observers=execution_observers,
            started_observers=started_observers,
            admission=admission,
            may_fire=may_fire,
            run_refusal=executions.run_refusal,
            handover=handover,
            applied_index=applied_index,
        )
        return scheduler

    def metrics(
        self,
        scheduler: SchedulerService,
        executor: HTTPExecutor,
        cluster: ClusterNode | None,
        guard: ResourceGuard,
        proposer: ProposingNode,
        executions: ExecutionStore,
        state: StateStore,
        notifier: FailureNotifier,
        disk: DiskWatcher | None = None,
        clock_watch: ClockWatch | None = None,
    ) -> NodeMetrics:
        """
        Prometheus metrics (GET /metrics): observers on the hot path, the
        rest read from these parts at scrape time.
        """
        from scheduler0.metrics import NodeMetrics

        return NodeMetrics(
            self.reactor,
            self.config.node_id,
            max_job_series=self.config.metrics_max_job_series,
            scheduler=scheduler,
            executor=executor,
            cluster=cluster,
            guard=guard,
            proposer=proposer,
            executions=executions,
            state=state,
            readiness=self.node.readiness,
            notifier=notifier,
            disk=disk,
            clock_watch=clock_watch,
        )

    def duties(self, cluster: ClusterNode | None, state: StateStore) -> LeaderDuties | None:
        """The leader's duties in a cluster (None on one node)."""
        from scheduler0.cluster.leader import LeaderDuties

        if cluster is None:
            return None
        return LeaderDuties(cluster, state, self.config, self.reactor)

    def api(
        self,
        state: StateStore,
        proposer: ProposingNode,
        executions: ExecutionStore,
        scheduler: SchedulerService,
        admin: AdminCredentials,
        cluster: ClusterNode | None,
        metrics: NodeMetrics,
        summary: ExecutionSummary,
        net_policy: NetworkPolicy,
        resolve: Resolver,
    ) -> SchedulerAPI:
        """The HTTP API; in a cluster it reads history from every member."""
        from twisted.internet.task import deferLater

        from scheduler0.api.app import SchedulerAPI
        from scheduler0.api.limits import FailureThrottle, RateLimiter
        from scheduler0.cluster.history import ClusterHistory
        from scheduler0.sealing import SecretSealer
        from scheduler0.secret_hash import verify_legacy

        config, reactor, in_thread = self.config, self.reactor, self.in_thread
        history = ClusterHistory(cluster, executions, state) if cluster is not None else executions
        return SchedulerAPI(
            state=state,
            proposer=proposer,
            executions=history,
            scheduler=scheduler,
            clock=reactor,
            defaults=config,
            admin=admin,
            health=self.node.health,
            # New secrets get the keyed hash (microseconds); a pbkdf2 hash
            # from before it is checked in a thread until it is upgraded.
            verify_secret=lambda secret, hashed: in_thread(verify_legacy, secret, hashed),
            signing_grace_s=config.callback_signing_grace_seconds,
            sealer=SecretSealer.from_secret_key(admin.secret_key, admin.previous_secret_keys),
            max_body_bytes=config.max_request_body_bytes,
            max_json_depth=config.max_json_depth,
            net_policy=net_policy,
            resolve=resolve,
            rate_limiter=RateLimiter(
                reactor, config.rate_limit_per_second, config.rate_limit_burst
            ),
            throttle=FailureThrottle(
                reactor, config.auth_failure_limit, config.auth_failure_window_seconds
            ),
            max_jobs_per_request=config.max_jobs_per_request,
            read_barrier=cluster.read_barrier if cluster is not None else None,
            cluster=cluster,
            breathe=lambda: deferLater(reactor, 0, lambda: None),
            metrics=metrics,
            summary=summary,
            cluster_time=cluster.leader_time if cluster is not None else None,
            backups=self.backups(state),
        )

    def backups(self, state: StateStore) -> Backups:
        """What makes the backups of GET /backup: copies of the state, made in the data dir."""
        from scheduler0.store.backup import Backups
        from scheduler0.timeutil import format_instant, utc_from_timestamp

        reactor = self.reactor
        return Backups(
            state,
            self.in_thread,
            self.config.data_path(),
            lambda: format_instant(utc_from_timestamp(reactor.seconds())),
        )

    def consensus(
        self,
        state: StateStore,
        executions: ExecutionStore,
        command_log: CommandLog,
        local: LocalProposer | None,
        cluster: ClusterNode | None,
        pool: HTTPConnectionPool,
    ) -> list[Part]:
        """
        The first children: the stores, the callbacks' connections, and one
        node's proposer C{local} (a cluster's starts once its followers
        subscribed).
        """
        if cluster is not None or local is None:
            copies = cluster.history_copies if cluster is not None else None
            return [Stores(state, executions, copies=copies), Connections(pool)]
        return [
            Stores(state, executions, log=command_log),
            Connections(pool),
            LocalProposing(local),
        ]

    def clustering(self, cluster: ClusterNode | None, duties: LeaderDuties | None) -> list[Part]:
        """The cluster's child, in a cluster (none on one node)."""
        if cluster is None or duties is None or cluster.history_copies is None:
            return []
        return [Clustering(cluster, duties, cluster.history_copies)]

    def followers(
        self,
        proposer: ProposingNode,
        signer: CallbackSigner,
        notifier: FailureNotifier,
        metrics: NodeMetrics,
        cluster: ClusterNode | None,
        duties: LeaderDuties | None,
    ) -> Part:
        """The parts that follow the applied commands, in the order they hear them."""
        from scheduler0 import notify, signing
        from scheduler0.cluster import leader

        subscriptions: list[tuple[Subscriber, Collection[str] | None]] = [
            (notifier.on_applied, notify.RELOAD_ON)
        ]
        if cluster is not None and duties is not None:
            subscriptions += [
                (cluster.on_applied, None),
                (duties.on_applied, leader.PLACEMENT_CHANGES),
            ]
        subscriptions.append((metrics.on_applied, metrics.APPLIED_OPS))
        return Followers(proposer, signer, signing.RELOAD_ON, subscriptions)

    def site(self, api: SchedulerAPI, admin: AdminCredentials, cluster: ClusterNode | None) -> Site:
        """The HTTP site: the API, and in a cluster the C{/peer/} routes beside it."""
        from scheduler0.api.site import api_site

        resource = api.resource()
        if cluster is not None:
            from scheduler0.cluster.peer import PeerAPI, PeerDispatch

            peer = PeerAPI(
                cluster, admin, history_copies=cluster.history_copies, summary=cluster.summary
            )
            resource = PeerDispatch(resource, peer.resource())
        config = self.config
        return api_site(
            resource,
            clock=self.reactor,
            max_body_bytes=config.max_request_body_bytes,
            request_timeout_s=config.http_request_timeout_seconds,
            idle_timeout_s=config.http_idle_timeout_seconds,
        )


def makeService(options: Options) -> NodeService:
    """Build the node described by the options' config (twistd calls this)."""
    from twisted.internet import reactor

    config = options["loaded"] if "loaded" in options else load_config(options["config"])
    for warning in (*config.warnings, *endpoint_warnings(config)):
        log.warn("config: {warning}", warning=warning)
    observer = None
    if options.get("log-format") == "json":
        server_options = getattr(options, "parent", None) or {"nodaemon": True}
        observer = JSONLinesObserver(twistd_log_destination(server_options))
    return NodeService(config, reactor, log_observer=observer)
