"""
What projects, jobs and executions are made of: their fields, the values
some of them may take, and a job's defaults. One place for every layer (the
store, the API, the CLI, the scheduler and the executor); nothing here
imports anything of Scheduler0's, so reading it loads nothing else.
"""

from __future__ import annotations

from typing import Any

#: A project's fields, in the order the store keeps them.
PROJECT_COLUMNS = ("uuid", "name", "description", "created_at", "updated_at", "notify_url")

#: A job's fields, in the order the store keeps them.
JOB_COLUMNS = (
    "uuid",
    "project_uuid",
    "name",
    "spec",
    "callback_url",
    "data",
    "timezone",
    "execution_type",
    "paused",
    "catch_up_window_s",
    "timeout_s",
    "retry_max",
    "retry_delay_s",
    "retry_max_delay_s",
    "concurrency_policy",
    "coalesce",
    "created_at",
    "updated_at",
    "anchor_at",
    # Issue 19: string keys to string values (scheduler0.labels' rules).
    "labels",
)

#: Job fields added after the first release, with the value a job has when
#: they are left out (and an older row reads as). A proposer leaves out of
#: a create_jobs those that hold this value, so nodes of the earlier release
#: apply the command alike while a cluster is being upgraded.
ADDED_JOB_DEFAULTS: dict[str, Any] = {
    "retry_delay_s": 1.0,
    "retry_max_delay_s": 60.0,
    "concurrency_policy": "allow",
    "coalesce": False,
    # (Never changed in place: every job without labels shares it.)
    "labels": {},
}

#: Optional job fields and their defaults when a proposer leaves them out
#: (the API fills in the config's defaults before it proposes).
JOB_DEFAULTS: dict[str, Any] = {
    "data": None,
    "timezone": "UTC",
    "execution_type": "http",
    "paused": False,
    "catch_up_window_s": 60.0,
    "timeout_s": 30.0,
    "retry_max": 10,
    **ADDED_JOB_DEFAULTS,
}

#: What a job may do when its next slot is due while its previous execution
#: still runs (Kubernetes CronJob's words): overlap, skip the new slot, or
#: abandon the running one.
ALLOW = "allow"
FORBID = "forbid"
REPLACE = "replace"
CONCURRENCY_POLICIES = (ALLOW, FORBID, REPLACE)

#: An execution record's fields, in the order the store keeps them.
EXECUTION_COLUMNS = (
    "execution_id",
    "job_uuid",
    "project_uuid",
    "scheduled_at",
    "state",
    "attempts",
    "node_id",
    "started_at",
    "finished_at",
    "status_code",
    "error",
    "skip_reason",
    # The first bytes of the answer of the last attempt, when it failed with one.
    "response_body",
)

#: The states of an execution record.
EXECUTION_STATES = ("scheduled", "running", "succeeded", "failed", "skipped")

#: The roles of a client credential (issue 19): C{read}, or C{write}
#: (read and write, the role of a credential without a scope).
CREDENTIAL_ROLES = ("read", "write")
