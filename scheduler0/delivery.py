"""
What the scheduler hands the sender and hears back: a L{Delivery} (one due
execution, with its job's L{DeliveryPolicy}), its L{Outcome}, and the skip
reasons either side records. The scheduler knows the sender
(L{scheduler0.executor.http.HTTPExecutor}) only by these and by the
L{scheduler0.ports.Sender} seam.
"""

from __future__ import annotations

import json

import attrs

from scheduler0.model import ALLOW

#: Skip reasons recorded on shed deliveries.
SKIP_QUEUE_FULL = "queue_full"
SKIP_RESOURCE_GUARD = "resource_guard"
SKIP_NODE_STOPPING = "node_stopping"
#: Recorded by the scheduler past a node's capacity (scheduler0.scheduler.admission).
SKIP_OVERLOADED = "overloaded"
#: A first attempt whose callback URL or host stayed at its bound.
SKIP_ENDPOINT_BUSY = "endpoint_busy"
#: A slot of a C{forbid} job due while its previous execution still runs.
SKIP_STILL_RUNNING = "still_running"
#: The running execution of a C{replace} job, abandoned for a newer slot.
SKIP_REPLACED = "replaced"
#: Recorded by the scheduler for the older slots a C{coalesce} job missed.
SKIP_COALESCED = "coalesced"


@attrs.frozen
class DeliveryPolicy:
    """
    How the deliveries of one job are sent, beyond its URL and limits: one
    object per job (shared by all its deliveries).

    C{concurrency} is L{ALLOW}, L{FORBID} or L{REPLACE}; C{retry_delay_s}
    and C{retry_max_delay_s}, when not None, replace the executor's first
    retry delay and its cap for this job.
    """

    concurrency: str = ALLOW
    retry_delay_s: float | None = None
    retry_max_delay_s: float | None = None


#: The policy of a job that sets nothing.
DEFAULT_POLICY = DeliveryPolicy()


# Delivery and Outcome are made once per execution, and a frozen attrs
# class costs twice a plain one to build (1.3 vs 0.5 us with these fields):
# they are treated as immutable but not enforced so (nothing changes them).
@attrs.define(eq=True, unsafe_hash=True)
class Delivery:
    """One due execution to deliver to its job's callback URL (never changed once made)."""

    execution_id: str
    job_uuid: str
    project_uuid: str
    name: str
    spec: str
    data: object
    scheduled_at: str
    callback_url: str
    timeout_s: float
    retry_max: int
    # The JSON members for job_uuid, project_uuid, name, spec and data, when
    # the caller has them ready (the scheduler keeps them per job, so a slot
    # does not re-encode its job's data).
    job_json: str | None = attrs.field(default=None, eq=False, repr=False)
    # The slot's instant in POSIX seconds, when the caller knows it (the
    # scheduler does), so lateness needs no parsing of scheduled_at.
    scheduled_s: float | None = attrs.field(default=None, eq=False, repr=False)
    # Since when the scheduler could send it (POSIX seconds: its slot, or a
    # later instant from which the node could fire), so the node can tell
    # how far behind its own work is (see L{HTTPExecutor.congested}).
    ready_s: float | None = attrs.field(default=None, eq=False, repr=False)
    policy: DeliveryPolicy = attrs.field(default=DEFAULT_POLICY, eq=False, repr=False)


def job_members_json(job_uuid: str, project_uuid: str, name: str, spec: str, data: object) -> str:
    """The C{job_json} of L{Delivery}: the job's members of a callback item."""
    return json.dumps(
        {
            "job_uuid": job_uuid,
            "project_uuid": project_uuid,
            "name": name,
            "spec": spec,
            "data": data,
        },
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )[1:-1]


@attrs.define(eq=True, unsafe_hash=True)
class Outcome:
    """The final result of one delivery, handed to C{on_outcome} exactly once (never changed)."""

    delivery: Delivery
    state: str
    attempts: int
    status_code: int | None
    error: str | None
    skip_reason: str | None
    started_at: float | None
    finished_at: float
    # The first bytes of the last attempt's answer, when it failed with one.
    response_body: str | None = None
