"""
Finding jobs by their labels: keeping the label index (the C{job_labels}
table) in step with the jobs, and turning a label selector, with the
project and paused filters, into the SQL that reads the jobs it selects.

A selector with a C{key=value} or a bare C{key} term is answered from the
index: the term that selects the fewest jobs (counted up to
L{DRIVE_LIMIT} each) drives, and each job it finds is checked against the
other terms on its own C{labels} column. When every such term selects more
than L{DRIVE_LIMIT} jobs, or the selector has only negative terms (C{!=},
C{!key}), the jobs are scanned in creation order and each is checked.
Both plans read the same rows in the same order, so the state machine's
bulk actions select the same jobs on every node.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

from scheduler0.labels import EQUALS, EXISTS, NOT_EQUALS, Requirement, Selector
from scheduler0.store.rows import _all, _one_known

#: A positive term that selects fewer jobs than this drives the query
#: through the index; past it, scanning the jobs in order costs no more.
DRIVE_LIMIT = 50_000

_INSERT = "INSERT OR IGNORE INTO job_labels (key, value, job_uuid) VALUES (?, ?, ?)"
_DELETE = "DELETE FROM job_labels WHERE key = ? AND value = ? AND job_uuid = ?"


def _entries(job_uuid: str, labels: Any) -> list[tuple[str, str, str]]:
    """The index rows of one job's C{labels} (a dict, or its stored JSON text)."""
    if isinstance(labels, str):
        labels = json.loads(labels) if labels and labels != "{}" else {}
    return [(key, value, job_uuid) for key, value in sorted((labels or {}).items())]


def index_labels(txn: Any, jobs: Iterable[tuple[str, Any]]) -> None:
    """Add the index rows of each (job uuid, labels)."""
    rows = [entry for job_uuid, labels in jobs if labels for entry in _entries(job_uuid, labels)]
    if rows:
        txn.executemany(_INSERT, sorted(rows))


def unindex_labels(txn: Any, jobs: Iterable[tuple[str, Any]]) -> None:
    """Drop the index rows of each (job uuid, labels as stored)."""
    rows = [entry for job_uuid, labels in jobs if labels for entry in _entries(job_uuid, labels)]
    if rows:
        txn.executemany(_DELETE, rows)


def _path(key: str) -> str:
    # Keys hold no quotes (scheduler0.labels), so the quoted path is exact.
    return f'$."{key}"'


def _condition(requirement: Requirement) -> tuple[str, tuple]:
    """One term as a condition on the jobs' C{labels} column."""
    path = _path(requirement.key)
    if requirement.op == EQUALS:
        return "json_extract(labels, ?) = ?", (path, requirement.value)
    if requirement.op == NOT_EQUALS:
        return "json_extract(labels, ?) IS NOT ?", (path, requirement.value)
    if requirement.op == EXISTS:
        return "json_type(labels, ?) IS NOT NULL", (path,)
    return "json_type(labels, ?) IS NULL", (path,)


def _index_range(requirement: Requirement) -> tuple[str, tuple]:
    """The index rows of the jobs a positive term selects."""
    if requirement.op == EQUALS:
        return "l.key = ? AND l.value = ?", (requirement.key, requirement.value)
    return "l.key = ?", (requirement.key,)


def _selects(txn: Any, requirement: Requirement) -> int:
    """How many jobs a positive term selects, counted up to L{DRIVE_LIMIT}."""
    where, params = _index_range(requirement)
    return _one_known(
        txn,
        f"SELECT COUNT(*) FROM (SELECT 1 FROM job_labels AS l WHERE {where} LIMIT ?)",
        (*params, DRIVE_LIMIT),
    )[0]


def job_source(
    txn: Any,
    *,
    project_uuid: str | None = None,
    paused: bool | None = None,
    selector: Selector | None = None,
    name_prefix: str | None = None,
    project_uuids: Collection[str] | None = None,
) -> tuple[str, list[str], list[Any]]:
    """
    Where the jobs these filters select are read from: the C{FROM} part
    (C{jobs}, or the index joined to it), the conditions, and their
    parameters. The jobs' columns keep their names either way.
    C{name_prefix}: names that start with it (a range of C{jobs_by_name});
    C{project_uuids}: jobs of those projects only.
    """
    where: list[str] = []
    params: list[Any] = []
    source = "jobs"
    driver: Requirement | None = None
    if selector:
        counted = sorted(
            (_selects(txn, requirement), position, requirement)
            for position, requirement in enumerate(selector)
            if requirement.positive
        )
        if counted and counted[0][0] < DRIVE_LIMIT:
            driver = counted[0][2]
    if driver is not None:
        # CROSS JOIN: SQLite keeps the index as the outer loop.
        source = "job_labels AS l CROSS JOIN jobs ON jobs.uuid = l.job_uuid"
        range_sql, range_params = _index_range(driver)
        where.append(range_sql)
        params.extend(range_params)
    if project_uuid is not None:
        # With a name prefix, "+" keeps SQLite on the name index: a prefix
        # range is at most as large as the project, and usually far smaller.
        where.append("+project_uuid = ?" if name_prefix else "project_uuid = ?")
        params.append(project_uuid)
    if project_uuids is not None:
        wanted = sorted(project_uuids)
        where.append(f"project_uuid IN ({', '.join('?' * len(wanted))})" if wanted else "0")
        params.extend(wanted)
    if paused is not None:
        where.append("paused = ?")
        params.append(int(bool(paused)))
    if name_prefix:
        where.append("name >= ?")
        params.append(name_prefix)
        end = prefix_end(name_prefix)
        if end is not None:
            where.append("name < ?")
            params.append(end)
    for requirement in selector or ():
        if requirement is driver:
            continue
        condition, condition_params = _condition(requirement)
        where.append(condition)
        params.extend(condition_params)
    return source, where, params


def index_total(
    txn: Any,
    *,
    project_uuid: str | None = None,
    paused: bool | None = None,
    selector: Selector | None = None,
) -> int | None:
    """
    How many jobs a selector of one term selects, with no other filter,
    counted in the index (a negative term: every job but those its
    positive form selects), or None for any other listing: so a single
    label that many jobs share, listed by a scan, still has a total without
    a pass over every job's labels.
    """
    if project_uuid is not None or paused is not None or not selector or len(selector) != 1:
        return None
    (requirement,) = selector
    positive = requirement
    if not requirement.positive:
        op = EQUALS if requirement.op == NOT_EQUALS else EXISTS
        positive = Requirement(requirement.key, op, requirement.value)
    where, params = _index_range(positive)
    selected = _one_known(txn, f"SELECT COUNT(*) FROM job_labels AS l WHERE {where}", params)[0]
    if requirement.positive:
        return selected
    return _one_known(txn, "SELECT COUNT(*) FROM jobs")[0] - selected


def prefix_end(prefix: str) -> str | None:
    """
    The least text greater than every text that starts with C{prefix}, in
    SQLite's binary order (that of UTF-8 bytes, so of code points); None when
    no text is (C{prefix} is all U+10FFFF).
    """
    for position in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[position])
        if code < 0x10FFFF:
            code += 1
            if 0xD800 <= code <= 0xDFFF:
                code = 0xE000  # surrogates are no characters of UTF-8 text
            return prefix[:position] + chr(code)
    return None


def where_clause(where: list[str]) -> str:
    """C{ WHERE a AND b}, or nothing for no conditions."""
    return (" WHERE " + " AND ".join(where)) if where else ""


def selected_rows(
    txn: Any,
    columns: str,
    *,
    project_uuid: str | None = None,
    paused: bool | None = None,
    selector: Selector | None = None,
    limit: int,
) -> list[tuple]:
    """The first C{limit} rows of C{columns} of the selected jobs, in creation order."""
    source, where, params = job_source(
        txn, project_uuid=project_uuid, paused=paused, selector=selector
    )
    return _all(
        txn,
        f"SELECT {columns} FROM {source}{where_clause(where)} ORDER BY created_at, uuid LIMIT ?",
        (*params, limit),
    )
