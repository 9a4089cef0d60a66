"""
The twistd entry point: C{makeService} builds one node's service tree.

Start-up runs in order (stores, log replay, scheduler, then the HTTP
listener), because a Twisted C{MultiService} starts its children without
waiting for them to be ready; shutdown runs in the reverse order and waits
for in-flight work.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import attrs
from twisted.application.service import MultiService
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
from scheduler0.logs import (
    LOG_FORMATS,
    ExecutionEvents,
    JSONLinesObserver,
    level_named,
    twistd_log_destination,
)
from scheduler0.tls import api_server_endpoint, check_tls_config, endpoint_warnings

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
# with 256 MiB.
EXECUTIONS_PRAGMAS = ("cache_size=-65536", "wal_autocheckpoint=10000")


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
    """One Scheduler0 node: stores, proposer, scheduler, executor, HTTP API."""

    config: Config
    reactor: Any
    environ: dict[str, str] = attrs.field(factory=lambda: dict(os.environ))
    announce: Any = None
    ready: Deferred = attrs.field(factory=Deferred)
    # The log observer twistd is to use instead of its own (--log-format json).
    log_observer: Any = None
    _port: Any = None
    _parts: dict[str, Any] = attrs.field(factory=dict)

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
            log.failure("scheduler0 node failed to start", failure)
            self.ready.errback(failure)
            # twistd has no way to report a failed start in its exit code;
            # leave with 1 once the reactor has shut down.
            self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            self.reactor.callLater(0, self._stop_reactor)

        started.addCallbacks(self.ready.callback, failed)

    def _stop_reactor(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    async def _start(self) -> None:
        import treq.client
        from passlib.hash import pbkdf2_sha256
        from twisted.internet.task import deferLater
        from twisted.internet.threads import deferToThreadPool
        from twisted.web.client import Agent, HTTPConnectionPool

        from scheduler0 import notify, signing
        from scheduler0.api.app import SchedulerAPI
        from scheduler0.api.limits import RateLimiter
        from scheduler0.api.site import api_site
        from scheduler0.credentials import ensure_admin_credentials
        from scheduler0.executor.http import HTTPExecutor, whole_body
        from scheduler0.guard import ResourceGuard
        from scheduler0.netpolicy import NetworkPolicy, policy_agent, thread_resolver
        from scheduler0.notify import FailureNotifier, notification_executor
        from scheduler0.ports import ExecutionHistory
        from scheduler0.scheduler.service import SchedulerService
        from scheduler0.signing import CallbackSigner
        from scheduler0.store.executions import ExecutionStore
        from scheduler0.store.local import LocalProposer
        from scheduler0.store.log import CommandLog
        from scheduler0.store.sqlite import connection_pool
        from scheduler0.store.state import StateStore

        config = self.config
        data = config.data_path()

        def in_thread(fn: Any, *args: Any) -> Deferred:
            return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

        os.makedirs(data, exist_ok=True)
        admin, created = ensure_admin_credentials(config, self.environ)
        if created:
            log.info("generated peer credentials for user {username}", username=admin.username)

        # The state machine is rebuilt from the command log (synced on every
        # append) after a power loss, so its own commits need no fsync.
        state = StateStore(
            connection_pool(os.path.join(data, "state.db"), self.reactor, replayable=True),
            # Raft snapshots are copied on a reactor pool thread beside it.
            run_blocking=in_thread,
        )
        command_log = CommandLog(connection_pool(os.path.join(data, "log.db"), self.reactor))
        executions = ExecutionStore(
            connection_pool(
                os.path.join(data, "executions.db"), self.reactor, pragmas=EXECUTIONS_PRAGMAS
            ),
            self.reactor,
            history_per_job=config.execution_history_per_job,
            # Group records for a moment, so the write (and its hold on the
            # GIL) does not land in the turns that send a batch of callbacks.
            flush_delay=EXECUTION_FLUSH_DELAY_S,
        )
        await state.open()
        await executions.open()
        guard = ResourceGuard(self.reactor, config.max_memory, config.max_cpu)
        cluster = None
        if config.replicas:
            from scheduler0.cluster.node import ClusterNode

            # Peers are our own nodes: their calls do not go through the
            # callback network policy, and no connection is kept open.
            peer_http = treq.client.HTTPClient(
                Agent(self.reactor, pool=HTTPConnectionPool(self.reactor, persistent=True))
            )
            cluster = ClusterNode.open(self.reactor, config, state, admin, peer_http, in_thread)
            cluster.is_paused = lambda: guard.paused
            cluster.executions = executions
            proposer: Any = cluster
            self._parts["cluster"] = cluster
            from scheduler0.cluster.copies import SEND_TIMEOUT_S, HistoryCopies

            # A copy of this node's records on another member, and the copies
            # others keep here: history outlives a node lost for good.
            peers = cluster.peers
            copies = HistoryCopies(
                self.reactor,
                executions,
                config.node_id,
                cluster.member_ids,
                lambda node_id, meta, data: peers.history_copy(node_id, meta, data, SEND_TIMEOUT_S),
                in_thread,
            )
            await copies.open()
            executions.tap = copies.tap
            cluster.history_copies = copies
            self._parts["copies"] = copies
        else:
            await command_log.open()
            proposer = LocalProposer(command_log, state, self.reactor)
            proposer.leader_address = config.http_address
            await proposer.start()

        signer = CallbackSigner(self.reactor, state)
        await signer.load()
        proposer.subscribe(signer.on_applied, signing.RELOAD_ON)
        net_policy = NetworkPolicy.from_config(
            config.callback_allow_networks, config.callback_deny_networks
        )
        resolve = thread_resolver(self.reactor)
        pool = HTTPConnectionPool(self.reactor, persistent=True)
        pool.maxPersistentPerHost = config.max_workers
        # Every new callback connection goes to an address checked against
        # the policy at that moment (no DNS-rebinding way around it).
        http_client = treq.client.HTTPClient(
            data_to_body_producer=whole_body,
            agent=policy_agent(
                self.reactor,
                net_policy,
                pool,
                resolve,
                connect_timeout=min(config.job_execution_timeout, 30),
            ),
        )

        scheduler: SchedulerService | None = None
        notifier = FailureNotifier(
            state.get_project,
            notification_executor(
                self.reactor,
                http_client,
                signer.sign,
                config.node_id,
                lambda outcome: notifier.notified(outcome),
            ),
            node_id=config.node_id,
        )
        proposer.subscribe(notifier.on_applied, notify.RELOAD_ON)
        self._parts["notifier"] = notifier

        def on_outcome(outcome: Any) -> None:
            assert scheduler is not None
            scheduler.on_outcome(outcome)
            notifier.on_outcome(outcome)

        def on_started(delivery: Any, at: float) -> None:
            assert scheduler is not None
            scheduler.on_started(delivery, at)

        executor = HTTPExecutor(
            self.reactor,
            http_client,
            on_outcome,
            on_started=on_started,
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
        )
        from collections.abc import Callable

        from scheduler0.scheduler import ports

        may_fire: Callable[[], bool] | None = None
        handover: ports.Handover | None = None
        applied_index: Callable[[], int] | None = None
        if cluster is not None:
            from scheduler0.cluster.handover import Handover
            from scheduler0.cluster.ownership import Ownership

            may_fire = cluster.leases.lease_valid
            # Twice the time the fan-in takes to visit every node, after the
            # old owner's lease: its records are in by then unless it failed.
            rounds = -(-len(config.members()) // max(1, config.execution_log_fetch_fan_in))
            handover = Handover(
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
            node = cluster

            def cluster_index() -> int:
                return max(node.raft.applying_index, node.driver.applied_index)

            applied_index = cluster_index
        scheduler = SchedulerService(
            self.reactor,
            state,
            proposer,
            executions,
            executor,
            node_id=config.node_id,
            history_per_job=config.execution_history_per_job,
            may_fire=may_fire,
            handover=handover,
            applied_index=applied_index,
        )
        # One log event per finished execution, with its ids.
        scheduler.execution_observers.append(ExecutionEvents(level=level_named(config.log_level)))
        if "copies" in self._parts:
            # Copies of history are background work: they wait while the
            # node is past its capacity.
            admission = scheduler.admission
            self._parts["copies"].busy = lambda: admission.busy
        history: ExecutionHistory = executions
        if cluster is not None:
            from scheduler0.cluster import leader
            from scheduler0.cluster.history import ClusterHistory
            from scheduler0.cluster.leader import LeaderDuties

            cluster.progress = scheduler.progress_mark
            cluster.subscribe(cluster.on_applied)
            history = ClusterHistory(cluster, executions, state)
            duties = LeaderDuties(cluster, state, config, self.reactor)
            cluster.subscribe(duties.on_applied, leader.PLACEMENT_CHANGES)
            self._parts["duties"] = duties
        from scheduler0.metrics import NodeMetrics

        # Prometheus metrics (GET /metrics): observers on the hot path, the
        # rest read from these parts at scrape time.
        metrics = NodeMetrics(
            self.reactor,
            config.node_id,
            max_job_series=config.metrics_max_job_series,
            scheduler=scheduler,
            executor=executor,
            cluster=cluster,
            guard=guard,
            proposer=proposer,
            executions=executions,
            state=state,
            readiness=self.readiness,
            notifier=notifier,
        )
        scheduler.execution_observers.append(metrics.on_execution)
        scheduler.started_observers.append(metrics.on_started)
        executor.post_observer = metrics.on_post
        proposer.subscribe(metrics.on_applied, metrics.APPLIED_OPS)
        self._parts["metrics"] = metrics
        from scheduler0.summary import ExecutionSummary

        # Per-minute counts for GET /executions/summary (memory only: a
        # restarted node starts from zero).
        summary = ExecutionSummary(self.reactor)
        scheduler.execution_observers.append(summary.on_execution)
        scheduler.started_observers.append(summary.on_started)
        if cluster is not None:
            cluster.summary = summary
        self._parts["summary"] = summary
        self._parts.update(
            state=state,
            log=command_log,
            executions=executions,
            proposer=proposer,
            guard=guard,
            executor=executor,
            scheduler=scheduler,
            pool=pool,
            admin=admin,
        )
        guard.start()
        executions.start_pruning()
        if cluster is not None:
            await cluster.start()
            self._parts["duties"].start()
            self._parts["copies"].start()
        metrics.start()
        scheduler.startService()
        assert scheduler.ready is not None  # set by startService
        await scheduler.ready
        tune_garbage_collector()

        api = SchedulerAPI(
            state=state,
            proposer=proposer,
            executions=history,
            scheduler=scheduler,
            clock=self.reactor,
            defaults=config,
            admin=admin,
            health=self.health,
            hash_secret=lambda secret: in_thread(pbkdf2_sha256.hash, secret),
            verify_secret=lambda secret, hashed: in_thread(pbkdf2_sha256.verify, secret, hashed),
            signing_grace_s=config.callback_signing_grace_seconds,
            max_body_bytes=config.max_request_body_bytes,
            max_json_depth=config.max_json_depth,
            net_policy=net_policy,
            resolve=resolve,
            rate_limiter=RateLimiter(
                self.reactor, config.rate_limit_per_second, config.rate_limit_burst
            ),
            max_jobs_per_request=config.max_jobs_per_request,
            read_barrier=cluster.read_barrier if cluster is not None else None,
            cluster=cluster,
            breathe=lambda: deferLater(self.reactor, 0, lambda: None),
            metrics=metrics,
            summary=summary,
        )
        self._parts["api"] = api
        proposer.subscribe(api.on_applied)
        if cluster is None:
            await self._first_client_credential(api, state)
        else:
            # A new cluster makes its first client credential once it has a
            # leader, on the leader only (so there is one, shown once).
            first = Deferred.fromCoroutine(self._first_cluster_credential(api, state, cluster))
            first.addErrback(lambda f: log.failure("making the first credential failed", f))
        resource = api.resource()
        if cluster is not None:
            from scheduler0.cluster.peer import PeerAPI, PeerDispatch

            resource = PeerDispatch(resource, PeerAPI(cluster, admin).resource())
        site = api_site(
            resource,
            clock=self.reactor,
            max_body_bytes=config.max_request_body_bytes,
            request_timeout_s=config.http_request_timeout_seconds,
            idle_timeout_s=config.http_idle_timeout_seconds,
        )
        endpoint = api_server_endpoint(self.reactor, config)
        self._port = await endpoint.listen(site)
        log.info(
            "scheduler0 {version} node {node_id} listening on {address}",
            version=__version__,
            node_id=config.node_id,
            address=config.http_address,
        )

    async def _first_client_credential(self, api: Any, state: Any) -> None:
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

    async def _first_cluster_credential(self, api: Any, state: Any, cluster: Any) -> None:
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

        parts = self._parts
        # The HTTP listener opens last, so this shows only if it is asked
        # before start-up has finished (the parts exist from then on).
        if not self.ready.called or "scheduler" not in parts:
            return [
                readiness.reason(
                    readiness.STARTING,
                    "this node is starting: its stores, Raft log and scheduler are not all up yet",
                )
            ]
        reasons = []
        cluster = parts.get("cluster")
        if cluster is not None:
            reasons.extend(cluster.readiness())
        guard = parts.get("guard")
        if guard is not None and guard.paused:
            reasons.append(
                readiness.reason(
                    readiness.SCHEDULING_PAUSED,
                    f"the resource guard pauses scheduling on this node ({guard.reason})",
                )
            )
        return reasons

    def health(self) -> dict:
        """
        What C{GET /healthcheck} reports about this node: its view of the
        cluster, and whether it is C{ready} (else the C{reasons}).
        """
        parts = self._parts
        guard = parts.get("guard")
        guard_state = guard.snapshot() if guard is not None else {"paused": False, "reason": None}
        cluster = parts.get("cluster")
        proposer = parts.get("proposer")
        executor = parts.get("executor")
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
                    }
                ],
            }
        return {
            **view,
            "scheduling_paused": bool(guard_state["paused"]),
            "pause_reason": guard_state["reason"],
            "resources": guard_state,
            "executor": {
                "queue_depth": executor.queue_depth() if executor is not None else 0,
                "in_flight": executor.in_flight() if executor is not None else 0,
            },
            "active_jobs": parts["scheduler"].active_jobs() if "scheduler" in parts else 0,
            "ready": not reasons,
            "reasons": reasons,
        }

    def stopService(self) -> Deferred:
        MultiService.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        parts = self._parts
        if self._port is not None:
            await self._port.stopListening()
        if "scheduler" in parts:
            await parts["scheduler"].stopService()
        if "notifier" in parts:
            await parts["notifier"].stop()
        if "guard" in parts:
            parts["guard"].stop()
        if "metrics" in parts:
            parts["metrics"].stop()
        if "duties" in parts:
            parts["duties"].stop()
        if "copies" in parts:
            parts["copies"].stop()
        if "cluster" in parts:
            await parts["cluster"].stop()
        elif "proposer" in parts:
            await parts["proposer"].stop()
        if "pool" in parts:
            await parts["pool"].closeCachedConnections()
        for name in ("executions", "log", "state"):
            if name == "log" and "cluster" in parts:
                continue
            if name in parts:
                await parts[name].close()


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
