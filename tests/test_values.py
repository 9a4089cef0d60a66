"""
scheduler0.values: a job and an execution record as values, and the checks
that make them from proposed mappings.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.model import EXECUTION_COLUMNS, JOB_COLUMNS, JOB_DEFAULTS
from scheduler0.values import (
    INVALID,
    REQUIRED,
    RETRY_DELAYS,
    UNKNOWN,
    Execution,
    Job,
    JobError,
    execution_row,
    job_row,
)

T0 = "2026-01-01T00:00:00.000Z"


def proposed(**fields: Any) -> dict:
    job = {
        "uuid": "j1",
        "project_uuid": "p1",
        "name": "job",
        "spec": "@every 1m",
        "callback_url": "http://cb.test/hook",
        "created_at": T0,
        "updated_at": T0,
    }
    job.update(fields)
    return job


class JobTests(SynchronousTestCase):
    def test_defaults_come_from_the_model(self) -> None:
        """A job given only its required fields has the model's defaults and anchors at creation."""
        job = Job.from_mapping(proposed())
        for field, default in JOB_DEFAULTS.items():
            self.assertEqual(getattr(job, field), default, field)
        self.assertEqual(job.anchor_at, T0)
        self.assertEqual(list(job.as_dict()), list(JOB_COLUMNS))

    def test_plain_and_unusual_mappings_give_the_same_row(self) -> None:
        """The direct checks and the field-by-field ones give the same row."""
        for fields in (
            {},
            {"timeout_s": 5, "catch_up_window_s": 0, "data": {"a": [1]}, "paused": True},
            {"retry_delay_s": 2, "retry_max_delay_s": 2, "concurrency_policy": "forbid"},
            {"anchor_at": "2025-01-01T00:00:00.000Z", "coalesce": True},
        ):
            job = proposed(**fields)
            self.assertEqual(job_row(job), job_row(MappingProxyType(job)), fields)

    def test_the_first_problem_is_named(self) -> None:
        """An unknown field is named first, then the first field at fault in column order."""
        cases = [
            (proposed(colour="red", paused="yes"), "colour", UNKNOWN),
            (proposed(paused="yes", retry_max=1.5), "paused", INVALID),
            (proposed(retry_max=-1), "retry_max", INVALID),
            (proposed(uuid=None), "uuid", INVALID),
            ({k: v for k, v in proposed().items() if k != "spec"}, "spec", REQUIRED),
            (proposed(retry_delay_s=100.0), "retry_max_delay_s", RETRY_DELAYS),
            (proposed(retry_max_delay_s=float("nan")), "retry_max_delay_s", INVALID),
        ]
        for job, field, kind in cases:
            error = self.assertRaises(JobError, job_row, job)
            self.assertEqual((error.problem.field, error.problem.kind), (field, kind), job)

    def test_not_a_mapping(self) -> None:
        """Something other than a mapping is refused under "jobs"."""
        error = self.assertRaises(JobError, job_row, "j1")
        self.assertEqual(error.problem.field, "jobs")


class ExecutionTests(SynchronousTestCase):
    def test_from_mapping(self) -> None:
        """An execution record's value has every column, with its defaults."""
        execution = Execution.from_mapping(
            {"execution_id": "e1", "job_uuid": "j1", "scheduled_at": T0}
        )
        self.assertEqual(list(execution.as_dict()), list(EXECUTION_COLUMNS))
        self.assertEqual((execution.state, execution.attempts), ("scheduled", 0))

    def test_unknown_state_refused(self) -> None:
        """A state not in EXECUTION_STATES is refused, naming the field."""
        record = {"execution_id": "e1", "job_uuid": "j1", "scheduled_at": T0, "state": "lost"}
        error = self.assertRaises(ValueError, execution_row, record)
        self.assertIn("execution field state must be one of", str(error))
