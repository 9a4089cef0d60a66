"""
Jobs: create (one or up to MaxJobsPerRequest in one command), list, get,
update, delete, run now, and the next slots of a job's schedule. A job is
answered with its read-only fields (next_run_at, last_run_at, last_status).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from scheduler0.api.errors import APIError, FieldErrors, error_for_fields, invalid
from scheduler0.api.openapi import MAX_JOBS_PER_REQUEST
from scheduler0.api.payload import data_problem, payload_cap_bytes
from scheduler0.api.ports import ExecutionHistory, Scheduler, StateReader
from scheduler0.api.request import Call, Writes, list_page, maybe, not_found, prefer, utc_now
from scheduler0.api.routes import DEFAULT_NEXT, MAX_NEXT
from scheduler0.api.scope import check_query_project
from scheduler0.api.validation import (
    Invalid,
    add_problems,
    check_fields,
    check_job,
    check_spec,
    check_timezone,
    past_at_problem,
    retry_delays_problem,
)
from scheduler0.errors import RecordsHeld
from scheduler0.labels import LABELS_ENTRY_VERSION, format_selector
from scheduler0.model import ADDED_JOB_DEFAULTS, JOB_DEFAULTS
from scheduler0.netpolicy import NetworkPolicy, check_url, check_urls
from scheduler0.readiness import RECORDS_HELD
from scheduler0.scheduler.spec import SpecError, make_schedule
from scheduler0.timeutil import format_instant, parse_instant, utc_from_timestamp
from scheduler0.versions import FIRST_ENTRY_VERSION, require_entry_version

log = Logger()

# What a job's callback item carries (with retry_max, its attempt number).
_SIZED_FIELDS = frozenset(("data", "name", "spec", "project_uuid", "retry_max"))
_ADDED_FIELDS = frozenset(ADDED_JOB_DEFAULTS)
#: The most jobs one bulk pause, resume or delete request changes.
BULK_LIMIT = 1000


async def job_or_404(
    state: StateReader, job_uuid: str, call: Call | None = None, *, write: bool = False
) -> dict:
    """
    The stored job, or a 404 naming it; with C{call}, a 403 when the job's
    project is outside the caller's scope (for reading, or C{write}).
    """
    job = await state.get_job(job_uuid)
    if not job:
        raise not_found("job", job_uuid)
    if call is not None:
        call.check_project(job["project_uuid"], write=write)
    return job


def no_resolver(host: str) -> Deferred:
    """Resolves nothing: with the default open policy no name is ever looked up."""
    return fail(DNSLookupError(host))


@attrs.define(eq=False, kw_only=True)
class JobsResource:
    """
    The job routes. C{defaults} is the node's config (a job's defaults and
    the callback payload cap); C{breathe}, when given, lets the reactor run
    other work between pieces of a large request.
    """

    HANDLERS: ClassVar[tuple[str, ...]] = (
        "create_jobs",
        "list_jobs",
        "get_job",
        "update_job",
        "delete_job",
        "run_job",
        "next_runs",
        "preview_schedule",
        "pause_jobs",
        "resume_jobs",
        "delete_jobs",
    )

    state: StateReader
    writes: Writes
    executions: ExecutionHistory
    scheduler: Scheduler
    clock: IReactorTime
    defaults: Any
    net_policy: NetworkPolicy = attrs.field(factory=NetworkPolicy)
    resolve: Callable[[str], Deferred] = no_resolver
    max_jobs_per_request: int = MAX_JOBS_PER_REQUEST
    breathe: Callable[[], Any] | None = None
    # The cluster's time for the stamps and anchors of new and changed jobs:
    # the leader's clock, as this node measured it (None: this node's clock,
    # as on a single node).
    cluster_time: Callable[[], float] | None = None

    def _stamp_now(self) -> datetime:
        """Now for a job's created_at, updated_at and anchor_at (the leader's clock)."""
        if self.cluster_time is None:
            return utc_now(self.clock)
        return utc_from_timestamp(self.cluster_time())

    async def _present_jobs(self, jobs: list[dict], *, with_history: bool = True) -> list[dict]:
        """Stored jobs plus their read-only fields: next_run_at, last_run_at, last_status."""
        latest: dict[str, dict] = {}
        if with_history and jobs:
            latest = (
                await maybe(self.executions.latest_per_job([job["uuid"] for job in jobs])) or {}
            )
        presented = []
        for position, job in enumerate(jobs):
            await self._breathe(position)
            out = dict(job)
            try:
                out["next_run_at"] = await maybe(self.scheduler.next_run_at(job))
            except Exception:
                log.failure("next_run_at failed for job {uuid}", Failure(), uuid=job.get("uuid"))
                out["next_run_at"] = None
            execution = latest.get(job["uuid"])
            if execution:
                out["last_run_at"] = execution.get("started_at") or execution.get("scheduled_at")
                out["last_status"] = execution.get("state")
            else:
                out["last_run_at"] = None
                out["last_status"] = None
            presented.append(out)
        return presented

    async def _breathe(self, position: int) -> None:
        """Every 500th item of a large request, let the reactor do what waits."""
        if self.breathe is not None and position % 500 == 499:
            await maybe(self.breathe())

    async def _present_job(self, job: dict, *, with_history: bool = True) -> dict:
        return (await self._present_jobs([job], with_history=with_history))[0]

    async def _check_projects_exist(self, wanted: dict[str, list[str]]) -> None:
        """C{wanted} maps a project uuid to the field paths naming it; 404 for missing ones."""
        missing: dict[str, str] = {}
        for project_uuid, paths in wanted.items():
            if not await self.state.get_project(project_uuid):
                for path in paths:
                    missing[path] = f"{path}: no project {project_uuid!r}"
        if missing:
            raise error_for_fields(missing, 404)

    async def create_jobs(self, call: Call) -> tuple[int, Any]:
        body = call.json_body()
        if isinstance(body, dict):
            items, prefixes = [body], [""]
        elif isinstance(body, list):
            if not body:
                raise invalid(
                    "jobs", f"jobs: the array is empty; send 1 to {self.max_jobs_per_request} jobs"
                )
            if len(body) > self.max_jobs_per_request:
                raise APIError(
                    413,
                    f"jobs: {len(body)} jobs in one request; "
                    f"at most {self.max_jobs_per_request} are allowed",
                    {"jobs": f"at most {self.max_jobs_per_request} jobs"},
                )
            items, prefixes = body, [f"jobs[{i}]." for i in range(len(body))]
        else:
            raise invalid("body", "body: must be a job object or an array of job objects")
        errors = FieldErrors()
        cleaned: list[dict] = []
        for position, (item, prefix) in enumerate(zip(items, prefixes, strict=True)):
            await self._breathe(position)
            if not isinstance(item, dict):
                path = prefix.rstrip(".")
                errors.add(path, f"{path}: must be a job object")
                continue
            cleaned.append(check_job(item, prefix=prefix, errors=errors, partial=False))
        errors.raise_if_any()
        # CallbackAllowNetworks/CallbackDenyNetworks, on the addresses the
        # URLs' hosts resolve to now (and again when each callback is sent).
        verdicts = await check_urls(
            self.net_policy, [fields["callback_url"] for fields in cleaned], self.resolve
        )
        for reason, prefix in zip(verdicts, prefixes, strict=True):
            if reason is not None:
                errors.add(prefix + "callback_url", f"{prefix}callback_url: {reason}")
        errors.raise_if_any()
        wanted: dict[str, list[str]] = {}
        for fields, prefix in zip(cleaned, prefixes, strict=True):
            wanted.setdefault(fields["project_uuid"], []).append(prefix + "project_uuid")
        for project_uuid in sorted(wanted):
            call.check_project(project_uuid, write=True)
        await self._check_projects_exist(wanted)
        now = self._stamp_now()
        stamp = format_instant(now)
        anchor = format_instant(now.replace(microsecond=0))
        defaults = self.defaults
        # The fields added after the first release, as a job without them
        # gets them: those at the state machine's own defaults are left out
        # of the command, so nodes of the earlier release apply it alike
        # during an upgrade (see ADDED_JOB_DEFAULTS).
        added: dict[str, Any] = {
            "retry_delay_s": float(defaults.job_execution_retry_delay),
            "retry_max_delay_s": float(defaults.job_execution_retry_max_delay),
            "concurrency_policy": ADDED_JOB_DEFAULTS["concurrency_policy"],
            "coalesce": ADDED_JOB_DEFAULTS["coalesce"],
            "labels": ADDED_JOB_DEFAULTS["labels"],
        }
        new_uuid = self.writes.new_uuid
        jobs = [
            {
                "uuid": new_uuid(),
                "project_uuid": fields["project_uuid"],
                "name": fields["name"],
                "spec": fields["spec"],
                "callback_url": fields["callback_url"],
                "data": fields.get("data", JOB_DEFAULTS["data"]),
                "timezone": fields.get("timezone", JOB_DEFAULTS["timezone"]),
                "execution_type": fields.get("execution_type", JOB_DEFAULTS["execution_type"]),
                "paused": fields.get("paused", JOB_DEFAULTS["paused"]),
                "catch_up_window_s": float(
                    fields.get("catch_up_window_s", defaults.catch_up_window_seconds)
                ),
                "timeout_s": float(fields.get("timeout_s", defaults.job_execution_timeout)),
                "retry_max": int(fields.get("retry_max", defaults.job_execution_retry_max)),
                "created_at": stamp,
                "updated_at": stamp,
                "anchor_at": anchor,
            }
            for fields in cleaned
        ]
        sent = {k: v for k, v in added.items() if ADDED_JOB_DEFAULTS[k] != v}
        cap = payload_cap_bytes(defaults.http_executor_payload_max_size_mb)
        default_delays: tuple[float, float] = (added["retry_delay_s"], added["retry_max_delay_s"])
        for position, (job, fields, prefix) in enumerate(zip(jobs, cleaned, prefixes, strict=True)):
            await self._breathe(position)
            if _ADDED_FIELDS.isdisjoint(fields):
                if sent:
                    job.update(sent)
                delays = default_delays
            else:
                mine = {k: fields.get(k, default) for k, default in added.items()}
                mine["retry_delay_s"] = float(mine["retry_delay_s"])
                mine["retry_max_delay_s"] = float(mine["retry_max_delay_s"])
                job.update({k: v for k, v in mine.items() if ADDED_JOB_DEFAULTS[k] != v})
                delays = (mine["retry_delay_s"], mine["retry_max_delay_s"])
            self._check_new_job(job, fields, prefix, now, cap, errors, delays)
        errors.raise_if_any()
        # Jobs without labels are written as the previous release wrote them.
        version = await self._labels_version(any(job.get("labels") for job in jobs))
        value = await self.writes.propose("create_jobs", {"jobs": jobs}, call=call, version=version)
        if isinstance(value, list) and (len(value) == len(jobs) or call.idempotency_key()):
            # (A retry under an Idempotency-Key answers with the first
            # request's jobs, however many of them still exist.)
            jobs = value
        else:
            jobs = [{**ADDED_JOB_DEFAULTS, **job} for job in jobs]
        presented = await self._present_jobs(jobs, with_history=False)
        return 201, (presented[0] if isinstance(body, dict) else presented)

    @staticmethod
    def _check_new_job(
        job: dict,
        given: dict,
        prefix: str,
        now: datetime,
        cap: int,
        errors: FieldErrors,
        delays: tuple[float, float],
    ) -> None:
        """
        What a new or changed C{job} must also be, given the fields the
        request C{given} and the job's C{delays} (retry_delay_s,
        retry_max_delay_s): the longest retry wait not below the first, an
        C{@at} not in the past, C{data} that a callback can carry. Each
        problem is added to C{errors} under C{prefix + field}.
        """
        problem = retry_delays_problem(
            *delays, given="retry_delay_s" in given and "retry_max_delay_s" in given
        )
        if problem is not None:
            errors.add(prefix + "retry_max_delay_s", f"{prefix}retry_max_delay_s: {problem}")
        if "spec" in given:
            problem = past_at_problem(job["spec"], now)
            if problem is not None:
                errors.add(prefix + "spec", f"{prefix}spec: {problem}")
        if _SIZED_FIELDS.intersection(given):
            problem = data_problem(job, cap)
            if problem is not None:
                errors.add(prefix + "data", f"{prefix}data: {problem}")

    async def list_jobs(self, call: Call) -> dict:
        limit, offset = call.query["limit"], call.query["offset"]
        project_uuid = call.query.get("project_uuid")
        if project_uuid is not None:
            call.check_project(project_uuid, write=False)
            if not await self.state.get_project(project_uuid):
                raise not_found("project", project_uuid, "project_uuid")
        # One row more than the page, to know whether another page follows
        # even when rows before this position went away meanwhile.
        items, total = await self.state.list_jobs(
            project_uuid=project_uuid,
            paused=call.query.get("paused"),
            limit=limit + 1,
            offset=offset,
            after=call.query.get("after"),
            name_prefix=call.query.get("name_prefix"),
            project_uuids=call.project_filter(),
            selector=call.query.get("selector"),
        )
        more = len(items) > limit
        presented = await self._present_jobs(list(items)[:limit])
        return list_page(presented, total, limit, offset, more=more)

    async def get_job(self, call: Call) -> dict:
        return await self._present_job(await job_or_404(self.state, call.path["uuid"], call))

    async def update_job(self, call: Call) -> dict:
        body = call.object_body()
        errors = FieldErrors()
        changes = check_job(body, prefix="", errors=errors, partial=True)
        errors.raise_if_any()
        job = await job_or_404(self.state, call.path["uuid"], call, write=True)
        if "project_uuid" in changes:
            call.check_project(changes["project_uuid"], write=True)
        for key in ("catch_up_window_s", "timeout_s", "retry_delay_s", "retry_max_delay_s"):
            if key in changes:
                changes[key] = float(changes[key])
        changes = {k: v for k, v in changes.items() if _canonical(job.get(k)) != _canonical(v)}
        if not changes:
            return await self._present_job(job)
        now = self._stamp_now()
        changed = {**job, **changes}
        self._check_new_job(
            changed,
            changes,
            "",
            now,
            payload_cap_bytes(self.defaults.http_executor_payload_max_size_mb),
            errors,
            (changed["retry_delay_s"], changed["retry_max_delay_s"]),
        )
        errors.raise_if_any()
        if "callback_url" in changes:
            reason = await check_url(self.net_policy, changes["callback_url"], self.resolve)
            if reason is not None:
                raise invalid("callback_url", f"callback_url: {reason}")
        if "project_uuid" in changes:
            await self._check_projects_exist({changes["project_uuid"]: ["project_uuid"]})
        updated_at = format_instant(now)
        if "spec" in changes or "timezone" in changes:
            changes["anchor_at"] = format_instant(now.replace(microsecond=0))
        version = await self._labels_version("labels" in changes)
        value = await self.writes.propose(
            "update_job",
            {"uuid": job["uuid"], "changes": changes, "updated_at": updated_at},
            call=call,
            version=version,
        )
        await self.writes.everywhere()
        return await self._present_job(prefer(value, {**job, **changes, "updated_at": updated_at}))

    async def delete_job(self, call: Call) -> dict:
        job = await job_or_404(self.state, call.path["uuid"], call, write=True)
        value = await self.writes.propose("delete_job", {"uuid": job["uuid"]}, call=call)
        await self.writes.everywhere()
        return value if isinstance(value, dict) else {"uuid": job["uuid"]}

    async def _labels_version(self, labelled: bool) -> int:
        """
        The entry version of a job write: L{LABELS_ENTRY_VERSION} when it
        carries labels (refused while the cluster writes an older one),
        else the first, as the previous release wrote it.
        """
        if not labelled:
            return FIRST_ENTRY_VERSION
        require_entry_version(await self.state.entry_version(), LABELS_ENTRY_VERSION, "labels")
        return LABELS_ENTRY_VERSION

    async def pause_jobs(self, call: Call) -> dict:
        return await self._bulk(call, "pause")

    async def resume_jobs(self, call: Call) -> dict:
        return await self._bulk(call, "resume")

    async def delete_jobs(self, call: Call) -> dict:
        return await self._bulk(call, "delete")

    async def _bulk(self, call: Call, action: str) -> dict:
        """
        One bulk_jobs command: C{action} on at most L{BULK_LIMIT} of the jobs
        the selector (and project) selects, resolved when it is applied.
        """
        selector = call.query["selector"]
        project_uuid = call.query.get("project_uuid")
        check_query_project(call.scope, project_uuid, write=True)
        if project_uuid is not None and not await self.state.get_project(project_uuid):
            raise not_found("project", project_uuid, "project_uuid")
        await self._labels_version(True)
        args: dict[str, Any] = {
            "action": action,
            "selector": format_selector(selector),
            "at": format_instant(self._stamp_now()),
            "limit": BULK_LIMIT,
        }
        if project_uuid is not None:
            args["project_uuid"] = project_uuid
        value = await self.writes.propose(
            "bulk_jobs", args, call=call, version=LABELS_ENTRY_VERSION
        )
        await self.writes.everywhere()
        return {key: value[key] for key in ("action", "selector", "count", "uuids", "more")}

    async def run_job(self, call: Call) -> tuple[int, Any]:
        job = await job_or_404(self.state, call.path["uuid"], call, write=True)
        try:
            execution = await maybe(self.scheduler.run_now(job))
        except RecordsHeld as e:
            # Nothing was sent: a run this node cannot record is not sent.
            raise APIError(503, str(e), code=RECORDS_HELD, headers={"Retry-After": "5"}) from None
        return 202, execution

    async def next_runs(self, call: Call) -> dict:
        job = await job_or_404(self.state, call.path["uuid"], call)
        zone_name = job.get("timezone") or "UTC"
        try:
            anchor = parse_instant(job.get("anchor_at") or job["created_at"])
            schedule = make_schedule(job["spec"], zone_name, anchor)
        except (SpecError, ValueError) as error:
            raise APIError(
                409,
                f"spec: the stored schedule cannot be evaluated ({error})",
                {"spec": str(error)},
            ) from None
        zone = ZoneInfo(zone_name)
        instant: datetime | None = utc_now(self.clock)
        # After the wall clock stepped back, the instants up to the job's
        # next slot were sent already and are not sent again: the preview
        # starts where the scheduler will.
        pending = None
        if not job.get("paused"):
            try:
                pending = await maybe(self.scheduler.next_run_at(job))
            except Exception:
                log.failure("next_run_at failed for job {uuid}", Failure(), uuid=job.get("uuid"))
        if pending:
            upcoming = parse_instant(pending) - timedelta(microseconds=1)
            if instant is None or upcoming > instant:
                instant = upcoming
        items = upcoming_slots(schedule, zone, instant, call.query["n"])
        return {"items": items, "timezone": zone_name, "paused": bool(job.get("paused"))}

    async def preview_schedule(self, call: Call) -> dict:
        """
        The next C{n} slots of a schedule not stored anywhere: those a job
        created now with this C{spec} and C{timezone} would fire (for a form
        that shows them while they are typed). The spec and zone are checked
        and their problems worded as when a job is created; nothing is stored.
        """
        body = call.object_body()
        errors = FieldErrors()
        cleaned, problems = check_fields(body, checks=_PREVIEW_CHECKS, required=("spec",))
        add_problems(problems, prefix="", allowed=_PREVIEW_CHECKS, errors=errors, cleaned=cleaned)
        errors.raise_if_any()
        now = self._stamp_now()
        problem = past_at_problem(cleaned["spec"], now)
        if problem is not None:
            raise invalid("spec", f"spec: {problem}")
        zone_name = cleaned.get("timezone", JOB_DEFAULTS["timezone"])
        # Anchored as a job created now would be (see create_jobs).
        try:
            schedule = make_schedule(cleaned["spec"], zone_name, now.replace(microsecond=0))
        except (SpecError, ValueError) as error:
            raise invalid("spec", f"spec: {error}") from None
        count = cleaned.get("n", DEFAULT_NEXT)
        items = upcoming_slots(schedule, ZoneInfo(zone_name), now, count)
        return {"items": items, "timezone": zone_name, "paused": False}


def check_preview_count(value: object) -> int:
    """How many slots a preview lists: an integer from 1 to MAX_NEXT."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON does not tell 3 from 3.0
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_NEXT:
        raise Invalid(f"must be an integer from 1 to {MAX_NEXT}")
    return value


_PREVIEW_CHECKS: dict[str, Callable[[object], Any]] = {
    "spec": check_spec,
    "timezone": check_timezone,
    "n": check_preview_count,
}


def upcoming_slots(schedule: Any, zone: ZoneInfo, after: datetime | None, n: int) -> list[dict]:
    """Up to C{n} slots of C{schedule} after the instant C{after}, in UTC and in C{zone}."""
    items: list[dict] = []
    instant = after
    for _ in range(n):
        instant = schedule.next_after(instant)
        if instant is None:
            break
        try:
            local = instant.astimezone(zone).isoformat(timespec="milliseconds")
        except OverflowError:
            break  # past the year 9999 in the zone: no date can show it
        items.append({"utc": format_instant(instant), "local": local})
    return items


def _canonical(value: Any) -> str:
    """A comparable text form of a JSON value (so 1 and true differ, key order does not matter)."""
    return json.dumps(value, sort_keys=True)
