"""
Failure notifications: when an execution ends C{failed} (its retries spent,
or an answer not worth retrying), the project's C{notify_url} gets one
signed POST naming the job, the slot, the attempts and the last error.

Notifications go through an executor of their own, so they are batched per
URL like callbacks, signed with the project's callback signing secrets,
checked against the same network policy, bounded (a few requests in flight,
a bounded queue) and retried a few times only: a notification that cannot
be delivered is logged and dropped, never retried forever, and never holds
up a callback.

The body is a JSON array; each item is::

    {"execution_id", "event": "execution.failed", "job_uuid", "project_uuid",
     "name", "spec", "attempts", "status_code", "error", "response_body",
     "finished_at", "node_id", "scheduled_at", "attempt"}

where C{attempts} counts the callback attempts of the failed execution and
C{attempt} the attempts of this notification. The POST carries
C{X-Scheduler0-Event: execution.failed} beside the usual callback headers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from scheduler0.delivery import Delivery, Outcome
from scheduler0.executor.http import HTTPExecutor, Poster
from scheduler0.store.commands import Op, Result
from scheduler0.timeutil import format_instant, utc_from_timestamp

log = Logger()

#: The event named in each item and in the X-Scheduler0-Event header.
EVENT = "execution.failed"
#: Retries of a notification after its first attempt.
RETRY_MAX = 3
#: Seconds one notification POST may take.
TIMEOUT_S = 10.0
#: Failed executions waiting for their project's notify_url to be read.
MAX_WAITING = 10_000
#: The commands after which the notify_url of projects is read again.
RELOAD_ON = frozenset((Op.CREATE_PROJECT, Op.UPDATE_PROJECT, Op.DELETE_PROJECT, Op.STATE_RESTORED))


def notification_executor(
    clock: IReactorTime,
    http_client: Poster,
    sign: Callable[[bytes, list[Delivery]], dict[str, str]] | None,
    node_id: int | None,
    on_outcome: Callable[[Outcome], None],
) -> HTTPExecutor:
    """The small executor notifications go through."""
    return HTTPExecutor(
        clock,
        http_client,
        on_outcome,
        max_workers=8,
        max_queue=MAX_WAITING,
        retry_delay_s=1.0,
        retry_delay_cap_s=30.0,
        sign=sign,
        node_id=node_id,
        max_per_url=4,
        max_per_host=8,
        response_excerpt_bytes=0,
        extra_headers={"X-Scheduler0-Event": EVENT},
    )


def _members(outcome: Outcome, node_id: int | None) -> str:
    """The JSON members of one notification item (all but its envelope)."""
    delivery = outcome.delivery
    return json.dumps(
        {
            "event": EVENT,
            "job_uuid": delivery.job_uuid,
            "project_uuid": delivery.project_uuid,
            "name": delivery.name,
            "spec": delivery.spec,
            "attempts": outcome.attempts,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "response_body": outcome.response_body,
            "finished_at": format_instant(utc_from_timestamp(outcome.finished_at)),
            "node_id": node_id,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )[1:-1]


@attrs.define(eq=False)
class FailureNotifier:
    """
    Watch final outcomes; send one notification per failed execution of a
    project that has a C{notify_url}.

    C{project} reads a project by uuid (a dict with C{notify_url}, or None).
    """

    project: Callable[[str], Deferred]
    executor: HTTPExecutor
    node_id: int | None = None
    #: Notifications handed to the executor, and dropped before it.
    sent: int = 0
    dropped: int = 0
    #: Notifications given up after their retries.
    undelivered: int = 0
    _urls: dict[str, str | None] = attrs.field(factory=dict, init=False)
    _reading: dict[str, list[Outcome]] = attrs.field(factory=dict, init=False)
    _waiting: int = attrs.field(default=0, init=False)

    def on_outcome(self, outcome: Outcome) -> None:
        """The callback executor's outcome: notify when it is a failure."""
        if outcome.state != "failed":
            return
        project = outcome.delivery.project_uuid
        if project in self._urls:
            self._send(self._urls[project], outcome)
            return
        if self._waiting >= MAX_WAITING:
            self.dropped += 1
            return
        self._waiting += 1
        waiting = self._reading.get(project)
        if waiting is not None:
            waiting.append(outcome)
            return
        self._reading[project] = [outcome]
        self.project(project).addCallbacks(
            self._read, self._unread, callbackArgs=(project,), errbackArgs=(project,)
        )

    def _read(self, found: Mapping | None, project: str) -> None:
        url = found.get("notify_url") if found else None
        self._urls[project] = url or None
        for outcome in self._take(project):
            self._send(url, outcome)

    def _unread(self, failure: Any, project: str) -> None:
        lost = self._take(project)
        self.dropped += len(lost)
        log.warn(
            "{count} failure notifications of project {project} dropped: its notify_url"
            " could not be read ({error})",
            count=len(lost),
            project=project,
            error=failure.getErrorMessage(),
        )

    def _take(self, project: str) -> list[Outcome]:
        outcomes = self._reading.pop(project, [])
        self._waiting -= len(outcomes)
        return outcomes

    def _send(self, url: str | None, outcome: Outcome) -> None:
        if not url:
            return
        delivery = outcome.delivery
        self.sent += 1
        self.executor.submit(
            Delivery(
                execution_id=delivery.execution_id,
                job_uuid=delivery.job_uuid,
                project_uuid=delivery.project_uuid,
                name=delivery.name,
                spec=delivery.spec,
                data=None,
                scheduled_at=delivery.scheduled_at,
                callback_url=url,
                timeout_s=TIMEOUT_S,
                retry_max=RETRY_MAX,
                job_json=_members(outcome, self.node_id),
            )
        )

    def on_applied(self, command: Any, result: Result) -> None:
        """The proposer's subscriber: a project changed, read notify_url again."""
        if command.op in RELOAD_ON and result.ok:
            self._urls.clear()

    def notified(self, outcome: Outcome) -> None:
        """The notification executor's outcome: a notification not delivered is logged."""
        if outcome.state == "succeeded":
            return
        self.undelivered += 1
        log.warn(
            "the failure notification of execution {execution_id} (project {project})"
            " was not delivered after {attempts} attempts: {error}",
            execution_id=outcome.delivery.execution_id,
            project=outcome.delivery.project_uuid,
            attempts=outcome.attempts,
            error=outcome.error or outcome.skip_reason,
        )

    def stop(self) -> Deferred:
        return self.executor.stop()
