"""
C{scheduler0 jobs import}: read a file of jobs, check all of it, then create
the jobs in batches that are each applied at most once.

Each batch carries an Idempotency-Key made of the digest of its (checked)
jobs, its position in the file and its size. Running the same import again,
or retrying a batch after a 503 or a lost connection, sends the same key with
the same body, and the node answers with the jobs it created the first time
instead of creating them again. So does running it again after fixing a row
the node refused: the batches before that row are the same as before.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any

import yaml

from scheduler0.api.errors import FieldErrors
from scheduler0.api.validation import check_job, past_at_problem
from scheduler0.client import APIError, Client
from scheduler0.labels import LabelError, parse_label_assignment
from scheduler0.values import JOB_READ_ONLY_FIELDS, JOB_WRITABLE_FIELDS

FORMATS = (".json", ".yaml", ".yml", ".csv")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


#: The most bad rows an import names, one line each (the rest are counted).
MAX_PROBLEMS_SHOWN = 20


class JobFileError(ValueError):
    """
    The file cannot be imported. C{lines} name the file, the row and the
    field of each problem (at most L{MAX_PROBLEMS_SHOWN}, then how many more);
    C{str()} is all of them.
    """

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class _BadCells(list):
    """A CSV row whose cells could not be read: the problems, one per cell."""


# -- reading -----------------------------------------------------------------


def _csv_value(column: str, text: str) -> Any:
    """The typed value of one CSV cell (C{data} is JSON text, C{labels} L{_csv_labels})."""
    if column in ("paused", "coalesce"):
        try:
            return _BOOLEANS[text.strip().lower()]
        except KeyError:
            raise ValueError(f"must be true or false, not {text!r}") from None
    if column in ("catch_up_window_s", "timeout_s", "retry_delay_s", "retry_max_delay_s"):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"must be a number, not {text!r}") from None
    if column == "retry_max":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"must be an integer, not {text!r}") from None
    if column == "data":
        try:
            return json.loads(text)
        except ValueError as error:
            raise ValueError(f"must be JSON text ({error})") from None
    if column == "labels":
        return _csv_labels(text)
    return text


def _csv_labels(text: str) -> Any:
    """
    A C{labels} cell: C{key=value} pairs separated by commas
    (C{team=billing,env=prod}), or a JSON object.
    """
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as error:
            raise ValueError(f"must be key=value,... or a JSON object ({error})") from None
    try:
        return dict(parse_label_assignment(pair.strip()) for pair in text.split(","))
    except LabelError as error:
        raise ValueError(f"must be key=value,... ({error})") from None


def _read_csv(stream: IO[str], name: str) -> list[tuple[str, Any]]:
    reader = csv.reader(stream)
    header = next(reader, None)
    if not header:
        raise JobFileError(f"{name}: empty; expected a header row (name,spec,callback_url,...)")
    columns = [column.strip() for column in header]
    allowed = (*JOB_WRITABLE_FIELDS, *JOB_READ_ONLY_FIELDS)
    for column in columns:
        if column not in allowed:
            raise JobFileError(
                f"{name}: line 1: column {column!r} is not a job field "
                f"(allowed: {', '.join(JOB_WRITABLE_FIELDS)})"
            )
    rows: list[tuple[str, Any]] = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        where = f"row {len(rows) + 1} (line {reader.line_num})"
        if len(cells) > len(columns):
            rows.append((where, _BadCells([f"{len(cells)} cells, the header has {len(columns)}"])))
            continue
        row: dict[str, Any] = {}
        bad = _BadCells()
        for column, text in zip(columns, cells, strict=False):
            if text == "":
                continue
            try:
                row[column] = _csv_value(column, text)
            except ValueError as problem:
                bad.append(f"{column}: {problem}")
        rows.append((where, bad or row))
    return rows


def _listed(document: Any, name: str) -> list[tuple[str, Any]]:
    if isinstance(document, Mapping) and isinstance(document.get("jobs"), list):
        document = document["jobs"]
    if not isinstance(document, list):
        raise JobFileError(f'{name}: expected a list of jobs, or an object with a "jobs" list')
    return [(f"row {i}", item) for i, item in enumerate(document, 1)]


def read_rows(path: str) -> list[tuple[str, Any]]:
    """(where, raw job) for each row of a .json, .yaml/.yml or .csv file."""
    name = os.path.basename(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise JobFileError(
            f"{name}: unknown format {extension or '(no extension)'!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            if extension == ".csv":
                return _read_csv(stream, name)
            if extension == ".json":
                return _listed(json.load(stream), name)
            return _listed(yaml.safe_load(stream), name)
    except OSError as error:
        raise JobFileError(f"{path}: cannot read it: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise JobFileError(f"{name}: not UTF-8 text ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise JobFileError(f"{name}: line {error.lineno}: malformed JSON ({error.msg})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or error
        raise JobFileError(f"{name}: {where}malformed YAML ({problem})") from None
    except csv.Error as error:
        raise JobFileError(f"{name}: malformed CSV ({error})") from None


def load_jobs(
    path: str, cwd: str, default_project: str | None = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The jobs of L{load_job_rows}, without where they are in the file."""
    return load_job_rows(path, cwd, default_project, now)[0]


def load_job_rows(
    path: str, cwd: str, default_project: str | None = None, now: datetime | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """
    Every job of the file, checked as the API checks them, and where each is
    in the file (C{row 2 (line 3)}). Read-only fields (C{uuid},
    C{created_at}, ...) are dropped, so C{jobs list --json} output imports as
    is; C{default_project} fills a missing C{project_uuid}. An C{@at} before
    C{now} (default: this machine's clock) is refused as the node would
    refuse it. Problems raise L{JobFileError}, one line for each (up to
    L{MAX_PROBLEMS_SHOWN}) naming its row and field. (What only the node can
    check, such as a C{data} too large for its callbacks, is checked when
    each batch is sent.)
    """
    full = os.path.join(cwd, os.path.expanduser(path))
    name = os.path.basename(full)
    rows = read_rows(full)
    if not rows:
        raise JobFileError(f"{name}: no jobs in it")
    if now is None:
        now = datetime.now(UTC)
    jobs: list[dict[str, Any]] = []
    wheres: list[str] = []
    problems: list[str] = []
    for where, row in rows:
        if isinstance(row, _BadCells):
            problems.extend(f"{where}: {problem}" for problem in row)
            continue
        if not isinstance(row, Mapping):
            problems.append(f"{where}: must be a job object, not {type(row).__name__}")
            continue
        job = {k: v for k, v in row.items() if k not in JOB_READ_ONLY_FIELDS}
        if "project_uuid" not in job and default_project is not None:
            job["project_uuid"] = default_project
        errors = FieldErrors()
        cleaned = check_job(job, prefix="", errors=errors, partial=False)
        if "spec" in cleaned:
            problem = past_at_problem(cleaned["spec"], now)
            if problem is not None:
                errors.add("spec", f"spec: {problem.replace('on this node', 'here')}")
        for field, message in errors.fields.items():
            if field == "project_uuid" and message.endswith("is required"):
                message += " (or pass --project UUID)"
            problems.append(f"{where}: {message}")
        jobs.append({**job, **cleaned})
        wheres.append(where)
    if problems:
        raise JobFileError(*_problem_lines(name, problems))
    return jobs, wheres


def _problem_lines(name: str, problems: Sequence[str]) -> list[str]:
    """One line per problem (at most L{MAX_PROBLEMS_SHOWN}), then what it comes to."""
    if len(problems) == 1:
        return [f"{name}: {problems[0]}; nothing was imported"]
    lines = [f"{name}: {problem}" for problem in problems[:MAX_PROBLEMS_SHOWN]]
    count = f"{len(problems):,} problem{'s' if len(problems) > 1 else ''}"
    if len(problems) > MAX_PROBLEMS_SHOWN:
        count += f", the first {MAX_PROBLEMS_SHOWN} shown"
    lines.append(f"{name}: {count}; nothing was imported")
    return lines


def digest(jobs: Sequence[Mapping[str, Any]]) -> str:
    """A digest of a list of jobs, stable across runs (the base of the batch keys)."""
    canonical = json.dumps(list(jobs), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# -- sending -----------------------------------------------------------------


class Progress:
    """
    Import progress on C{stream}: a bar redrawn in place on a terminal, a
    line every tenth of the way otherwise.
    """

    width = 20

    def __init__(self, total: int, stream: IO[str], clock: Callable[[], float]) -> None:
        self.total = total
        self.stream = stream
        self.clock = clock
        self.started = clock()
        try:
            self.tty = bool(stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self._drawn_at: float | None = None
        self._next_tenth = 1

    def line(self, done: int) -> str:
        elapsed = self.clock() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        filled = self.width * done // self.total if self.total else self.width
        if done >= self.total:
            eta = "done"
        else:
            eta = f"ETA {(self.total - done) / rate:.0f}s" if rate else "ETA ?"
        bar = "#" * filled + "." * (self.width - filled)
        return f"[{bar}] {done:,}/{self.total:,} jobs  {rate:,.0f}/s  {eta}"

    def update(self, done: int) -> None:
        if self.tty:
            now = self.clock()
            if self._drawn_at is None or now - self._drawn_at >= 0.1 or done >= self.total:
                self._drawn_at = now
                self.stream.write("\r" + self.line(done) + "\x1b[K")
                self.stream.flush()
            return
        if self.total and done * 10 >= self._next_tenth * self.total:
            while self._next_tenth * self.total <= done * 10:
                self._next_tenth += 1
            self.stream.write(self.line(done) + "\n")

    def finish(self) -> None:
        if self.tty and self._drawn_at is not None:
            self.stream.write("\n")


_AT_MOST = re.compile(r"at most (\d+) jobs")


def _smaller_batch(error: APIError, size: int) -> int:
    """The batch size after a 413: the node's MaxJobsPerRequest if it says, else half."""
    for message in (*error.fields.values(), error.message):
        found = _AT_MOST.search(message)
        if found and 0 < int(found.group(1)) < size:
            return int(found.group(1))
    return max(1, size // 2)


class Importer:
    """Sends the jobs in batches, each under its own Idempotency-Key."""

    def __init__(
        self,
        client: Client,
        jobs: Sequence[Mapping[str, Any]],
        batch_size: int,
        progress: Progress,
    ) -> None:
        self.client = client
        self.jobs = jobs
        self.batch_size = batch_size
        self.progress = progress
        self.done = 0
        self.batches = 0

    def key(self, position: int, size: int) -> str:
        """The batch's Idempotency-Key: same jobs at the same position, same key."""
        batch = digest(self.jobs[position : position + size])
        return f"import-{batch[:40]}-{position}-{size}"

    def run(self) -> list[str]:
        """Create every job; return their uuids in file order."""
        uuids: list[str] = []
        size = self.batch_size
        try:
            while self.done < len(self.jobs):
                batch = self.jobs[self.done : self.done + size]
                try:
                    created = self.client.create_many(
                        batch, idempotency_key=self.key(self.done, len(batch))
                    )
                except APIError as error:
                    if error.status == 413 and size > 1:
                        size = _smaller_batch(error, size)
                        continue
                    raise
                uuids.extend(job["uuid"] for job in created)
                self.done += len(batch)
                self.batches += 1
                self.progress.update(self.done)
        finally:
            self.progress.finish()
        return uuids
