"""
The store: commands, the SQLite state machine, the command log, the local
proposer and node-local execution records.

One suite runs twice: on the synchronous fake pool (SynchronousTestCase) and on
the real adbapi pool with threads (trial's reactor TestCase), so the fake is
verified against the real thing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Coroutine
from typing import Any

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import SynchronousTestCase, TestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.errors import NotLeader, ProposalTimeout, StoreUnavailable
from scheduler0.store.commands import Command, Result
from scheduler0.store.executions import ExecutionStore
from scheduler0.store.local import LocalProposer
from scheduler0.store.log import ZLIB_MARKER, CommandLog
from scheduler0.store.sqlite import connection_pool
from scheduler0.store.state import REQUEST_MEMORY, STATE_CACHE_KIB, StateStore
from scheduler0.versions import ENTRY_VERSION, UnsupportedVersion

T0 = "2026-01-01T00:00:00.000Z"
T1 = "2026-01-01T00:01:00.000Z"
DAY = 86400.0


def scenario(fn: Callable[[Any], Coroutine]) -> Callable[[Any], Any]:
    """Turn an async test body into a plain test method that both case types run."""

    @functools.wraps(fn)
    def run(self: Any) -> Any:
        return self.drive(fn(self))

    return run


def project(uuid: str = "p1", name: str = "alpha", created_at: str = T0) -> dict:
    return {
        "uuid": uuid,
        "name": name,
        "description": "d",
        "created_at": created_at,
        "updated_at": created_at,
        "notify_url": None,
    }


def job(uuid: str, project_uuid: str = "p1", created_at: str = T0, **extra: Any) -> dict:
    value = {
        "uuid": uuid,
        "project_uuid": project_uuid,
        "name": f"job {uuid}",
        "spec": "@every 1m",
        "callback_url": "http://127.0.0.1/cb",
        "data": {"b": [1, 2], "a": None},
        "timezone": "UTC",
        "execution_type": "http",
        "paused": False,
        "catch_up_window_s": 60.0,
        "timeout_s": 30.0,
        "retry_max": 10,
        "retry_delay_s": 1.0,
        "retry_max_delay_s": 60.0,
        "concurrency_policy": "allow",
        "coalesce": False,
        "created_at": created_at,
        "updated_at": created_at,
        "anchor_at": created_at,
        "labels": {},
    }
    value.update(extra)
    return value


def credential(uuid: str = "c1", api_key: str = "key1") -> dict:
    return {"uuid": uuid, "api_key": api_key, "api_secret_hash": "$hash$", "created_at": T0}


def execution(
    eid: str, job_uuid: str = "j1", scheduled_at: str = T0, state: str = "succeeded", **extra: Any
) -> dict:
    value = {
        "execution_id": eid,
        "job_uuid": job_uuid,
        "project_uuid": "p1",
        "scheduled_at": scheduled_at,
        "state": state,
        "attempts": 1,
        "node_id": "n1",
        "started_at": None,
        "finished_at": None,
        "status_code": 200,
        "error": None,
        "skip_reason": None,
        "response_body": None,
    }
    value.update(extra)
    return value


def instant(seconds: float) -> str:
    from scheduler0.timeutil import format_instant, utc_from_timestamp

    return format_instant(utc_from_timestamp(seconds))


class GatedLog:
    """A CommandLog whose appends wait for the test to open a gate, counting them."""

    def __init__(self, inner: CommandLog):
        self.inner = inner
        self.appends: list[int] = []
        self.gate: Deferred | None = None

    def append(self, commands: list) -> Deferred:
        self.appends.append(len(commands))
        gate = self.gate
        self.gate = None
        if gate is None:
            return self.inner.append(commands)
        return gate.addCallback(lambda _: self.inner.append(commands))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FlakyState:
    """A StateStore whose apply raises while C{failing} is set (a broken disk)."""

    def __init__(self, inner: StateStore):
        self.inner = inner
        self.failing = True

    def apply(self, index: int, command: Command) -> Deferred:
        if self.failing:
            return Deferred.fromCoroutine(self._fail())
        return self.inner.apply(index, command)

    async def _fail(self) -> None:
        raise RuntimeError("disk I/O error")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class StoreSuiteMixin:
    """Behaviour shared by the fake and the real pool; subclasses say how to drive."""

    def drive(self, coroutine: Coroutine) -> Any:
        raise NotImplementedError

    def make_pool(self, name: str) -> Any:
        raise NotImplementedError

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.clock = task.Clock()
        self._pools: list = []
        self.addCleanup(self._close_pools)

    def _close_pools(self) -> None:
        for pool in self._pools:
            close_quietly(pool)

    def pool(self, name: str) -> Any:
        pool = self.make_pool(os.path.join(self.directory, name))
        self._pools.append(pool)
        return pool

    async def state(self, name: str = "state.db") -> StateStore:
        store = StateStore(self.pool(name))
        await store.open()
        return store

    async def proposer(
        self, log: Any = None, state: StateStore | None = None, **kw: Any
    ) -> LocalProposer:
        if log is None:
            log = CommandLog(self.pool("log.db"))
            await log.open()
        if state is None:
            state = await self.state()
        proposer = LocalProposer(log, state, self.clock, **kw)
        await proposer.start()
        return proposer

    async def executions(self, name: str = "executions.db", **kw: Any) -> ExecutionStore:
        store = ExecutionStore(self.pool(name), self.clock, **kw)
        await store.open()
        return store

    async def seeded(self) -> tuple[LocalProposer, StateStore]:
        proposer = await self.proposer()
        result = await proposer.propose(Command("create_project", {"project": project()}))
        self.assertTrue(result.ok, result)
        return proposer, proposer.state

    # -- projects ----------------------------------------------------------------

    @scenario
    async def test_create_project_returns_and_stores_it(self) -> None:
        """create_project returns the project and it reads back by uuid and by name."""
        proposer = await self.proposer()
        result = await proposer.propose(Command("create_project", {"project": project()}))
        self.assertEqual(result, Result.success(project()))
        self.assertEqual(await proposer.state.get_project("p1"), project())
        self.assertEqual(await proposer.state.get_project_by_name("alpha"), project())
        self.assertIsNone(await proposer.state.get_project("nope"))

    @scenario
    async def test_create_project_duplicate_name_conflicts(self) -> None:
        """A second project with the same name is a conflict on field name and is not stored."""
        proposer, state = await self.seeded()
        result = await proposer.propose(Command("create_project", {"project": project("p2")}))
        self.assertEqual((result.ok, result.code, result.field), (False, "conflict", "name"))
        self.assertIsNone(await state.get_project("p2"))

    @scenario
    async def test_create_project_missing_field_is_invalid(self) -> None:
        """A project without a name is invalid and the error names the field."""
        proposer = await self.proposer()
        bad = project()
        del bad["name"]
        result = await proposer.propose(Command("create_project", {"project": bad}))
        self.assertEqual((result.code, result.field), ("invalid", "name"))

    @scenario
    async def test_list_projects_pages_in_creation_order(self) -> None:
        """list_projects orders by created_at then uuid and reports the total."""
        proposer = await self.proposer()
        for uuid, name, created in [("b", "n1", T1), ("c", "n2", T0), ("a", "n3", T0)]:
            await proposer.propose(
                Command("create_project", {"project": project(uuid, name, created)})
            )
        items, total = await proposer.state.list_projects(limit=2, offset=0)
        self.assertEqual(([p["uuid"] for p in items], total), (["a", "c"], 3))
        items, total = await proposer.state.list_projects(limit=2, offset=2)
        self.assertEqual(([p["uuid"] for p in items], total), (["b"], 3))

    @scenario
    async def test_update_project_changes_fields(self) -> None:
        """update_project changes the given fields and updated_at only."""
        proposer, state = await self.seeded()
        result = await proposer.propose(
            Command(
                "update_project",
                {"uuid": "p1", "changes": {"description": "new"}, "updated_at": T1},
            )
        )
        expected = dict(project(), description="new", updated_at=T1)
        self.assertEqual(result, Result.success(expected))
        self.assertEqual(await state.get_project("p1"), expected)

    @scenario
    async def test_update_project_errors(self) -> None:
        """update_project: unknown uuid is not_found, a taken name conflicts."""
        proposer, state = await self.seeded()
        await proposer.propose(Command("create_project", {"project": project("p2", "beta")}))
        missing = await proposer.propose(
            Command("update_project", {"uuid": "zz", "changes": {"name": "x"}, "updated_at": T1})
        )
        self.assertEqual((missing.code, missing.field), ("not_found", "uuid"))
        taken = await proposer.propose(
            Command(
                "update_project", {"uuid": "p2", "changes": {"name": "alpha"}, "updated_at": T1}
            )
        )
        self.assertEqual((taken.code, taken.field), ("conflict", "name"))
        same = await proposer.propose(
            Command("update_project", {"uuid": "p2", "changes": {"name": "beta"}, "updated_at": T1})
        )
        self.assertTrue(same.ok)
        unknown = await proposer.propose(
            Command(
                "update_project", {"uuid": "p2", "changes": {"colour": "red"}, "updated_at": T1}
            )
        )
        self.assertEqual((unknown.code, unknown.field), ("invalid", "colour"))
        self.assertEqual((await state.get_project("p2"))["name"], "beta")

    @scenario
    async def test_delete_project_with_jobs_needs_cascade(self) -> None:
        """A project with jobs conflicts (naming the count) unless cascade, which deletes them."""
        proposer, state = await self.seeded()
        await proposer.propose(
            Command("create_jobs", {"jobs": [job("j2", created_at=T1), job("j1")]})
        )
        refused = await proposer.propose(
            Command("delete_project", {"uuid": "p1", "cascade": False})
        )
        self.assertEqual((refused.code, refused.field), ("conflict", "uuid"))
        self.assertIn("2 jobs", refused.message)
        self.assertEqual(await state.count_jobs("p1"), 2)
        done = await proposer.propose(Command("delete_project", {"uuid": "p1", "cascade": True}))
        self.assertEqual(done, Result.success({"uuid": "p1", "deleted_jobs": ["j1", "j2"]}))
        self.assertIsNone(await state.get_project("p1"))
        self.assertEqual(await state.all_jobs(), [])

    @scenario
    async def test_delete_project_empty_and_missing(self) -> None:
        """An empty project is deleted without cascade; an unknown one is not_found."""
        proposer, state = await self.seeded()
        done = await proposer.propose(Command("delete_project", {"uuid": "p1", "cascade": False}))
        self.assertEqual(done.value, {"uuid": "p1", "deleted_jobs": []})
        missing = await proposer.propose(
            Command("delete_project", {"uuid": "p1", "cascade": False})
        )
        self.assertEqual((missing.code, missing.field), ("not_found", "uuid"))

    # -- jobs --------------------------------------------------------------------

    @scenario
    async def test_create_jobs_round_trip(self) -> None:
        """create_jobs returns the stored jobs; reads decode data and paused."""
        proposer, state = await self.seeded()
        result = await proposer.propose(
            Command("create_jobs", {"jobs": [job("j1"), job("j2", paused=True, data=[1, "x"])]})
        )
        self.assertEqual(result.value, [job("j1"), job("j2", paused=True, data=[1, "x"])])
        self.assertEqual(await state.get_job("j1"), job("j1"))
        self.assertIs((await state.get_job("j2"))["paused"], True)
        self.assertEqual(
            await state.get_jobs(["j2", "zz", "j1"]),
            [job("j2", paused=True, data=[1, "x"]), job("j1")],
        )
        self.assertIsNone(await state.get_job("zz"))

    @scenario
    async def test_create_jobs_is_atomic(self) -> None:
        """One job naming a missing project stores nothing and names project_uuid."""
        proposer, state = await self.seeded()
        result = await proposer.propose(
            Command(
                "create_jobs", {"jobs": [job("j1"), job("j2", project_uuid="missing"), job("j3")]}
            )
        )
        self.assertEqual(
            (result.ok, result.code, result.field), (False, "not_found", "project_uuid")
        )
        self.assertEqual(await state.all_jobs(), [])

    @scenario
    async def test_create_jobs_uuid_conflict(self) -> None:
        """A job uuid that exists (or repeats in the batch) is a conflict and nothing is stored."""
        proposer, state = await self.seeded()
        await proposer.propose(Command("create_jobs", {"jobs": [job("j1")]}))
        again = await proposer.propose(Command("create_jobs", {"jobs": [job("j2"), job("j1")]}))
        self.assertEqual((again.code, again.field), ("conflict", "uuid"))
        twice = await proposer.propose(Command("create_jobs", {"jobs": [job("j3"), job("j3")]}))
        self.assertEqual(twice.code, "conflict")
        self.assertEqual([j["uuid"] for j in await state.all_jobs()], ["j1"])

    @scenario
    async def test_create_jobs_invalid_field_named(self) -> None:
        """A job field of the wrong type is invalid and the error names it."""
        proposer, state = await self.seeded()
        result = await proposer.propose(Command("create_jobs", {"jobs": [job("j1", paused="yes")]}))
        self.assertEqual((result.code, result.field), ("invalid", "paused"))
        result = await proposer.propose(
            Command("create_jobs", {"jobs": [job("j1", retry_max=1.5)]})
        )
        self.assertEqual((result.code, result.field), ("invalid", "retry_max"))
        result = await proposer.propose(Command("create_jobs", {"jobs": "j1"}))
        self.assertEqual((result.code, result.field), ("invalid", "jobs"))

    @scenario
    async def test_create_jobs_conflict_names_the_first_job_at_fault(self) -> None:
        """A taken uuid late in a big batch is named in the error, and nothing is stored."""
        proposer, state = await self.seeded()
        await proposer.propose(Command("create_jobs", {"jobs": [job("taken")]}))
        batch = [job(f"n{i:03}") for i in range(200)] + [job("taken"), job("n999")]
        result = await proposer.propose(Command("create_jobs", {"jobs": batch}))
        self.assertEqual(
            (result.code, result.field, result.message),
            ("conflict", "uuid", "a job with uuid taken exists"),
        )
        self.assertEqual([j["uuid"] for j in await state.all_jobs()], ["taken"])

    @scenario
    async def test_create_jobs_with_plain_and_other_values_store_alike(self) -> None:
        """Defaults, int numbers and a missing anchor are stored as the full checks store them."""
        proposer, state = await self.seeded()
        sparse = {k: v for k, v in job("j1").items() if k not in ("data", "anchor_at", "paused")}
        sparse.update(timeout_s=5, catch_up_window_s=0)
        result = await proposer.propose(Command("create_jobs", {"jobs": [sparse]}))
        stored = await state.get_job("j1")
        self.assertEqual(result.value, [stored])
        self.assertEqual((stored["data"], stored["paused"], stored["anchor_at"]), (None, False, T0))
        self.assertEqual((stored["timeout_s"], stored["catch_up_window_s"]), (5.0, 0.0))
        self.assertIsInstance(stored["timeout_s"], float)
        refused = await proposer.propose(
            Command("create_jobs", {"jobs": [job("j2", timeout_s=True)]})
        )
        self.assertEqual((refused.code, refused.field), ("invalid", "timeout_s"))

    @scenario
    async def test_a_repeated_create_jobs_gets_the_same_jobs_from_a_small_record(self) -> None:
        """
        A retried create_jobs answers with the jobs the first apply created,
        while what is remembered for the request is a mark, not the jobs.
        """
        state = await self.state()
        await state.apply(1, Command("create_project", {"project": project()}))
        jobs = [job(f"j{i}", data={"i": i}) for i in range(50)]
        first = Command("create_jobs", {"jobs": jobs}, request_id="req-1")
        result = await state.apply(2, first)
        self.assertEqual(result.value, jobs)
        again = await state.apply(3, first)
        self.assertEqual(again, attrs.evolve(result, duplicate=True))
        self.assertEqual(len(await state.all_jobs()), 50)
        (remembered,) = await state.pool.runInteraction(
            lambda txn: txn.execute("SELECT result FROM requests").fetchall()
        )
        self.assertLess(len(remembered[0]), 100)

    @scenario
    async def test_jobs_page_walks_every_job_in_creation_order(self) -> None:
        """jobs_page returns jobs by (created_at, uuid), each page after the last one's position."""
        proposer, state = await self.seeded()
        jobs = [job("c", created_at=T1), job("b"), job("a"), job("d", created_at=T1), job("e")]
        await proposer.propose(Command("create_jobs", {"jobs": jobs}))
        pages = []
        after = None
        while True:
            page = await state.jobs_page(after, 2)
            pages.append([j["uuid"] for j in page])
            if len(page) < 2:
                break
            after = (page[-1]["created_at"], page[-1]["uuid"])
        self.assertEqual(pages, [["a", "b"], ["e", "c"], ["d"]])
        self.assertEqual(await state.jobs_page(None, 10), await state.all_jobs())
        with self.assertRaises(ValueError):
            await state.jobs_page(None, -1)

    @scenario
    async def test_state_page_cache_is_sized_for_many_jobs(self) -> None:
        """The state connection keeps up to STATE_CACHE_KIB of pages in memory."""
        state = await self.state()
        (size,) = await state.pool.runInteraction(
            lambda txn: txn.execute("PRAGMA cache_size").fetchone()
        )
        self.assertEqual(size, -STATE_CACHE_KIB)

    @scenario
    async def test_list_jobs_filters_and_pages(self) -> None:
        """list_jobs filters by project and paused, orders by created_at, uuid, and totals."""
        proposer, state = await self.seeded()
        await proposer.propose(Command("create_project", {"project": project("p2", "beta")}))
        await proposer.propose(
            Command(
                "create_jobs",
                {
                    "jobs": [
                        job("j3"),
                        job("j1", created_at=T1),
                        job("j2", paused=True),
                        job("k1", "p2"),
                    ]
                },
            )
        )
        items, total = await state.list_jobs()
        self.assertEqual(([j["uuid"] for j in items], total), (["j2", "j3", "k1", "j1"], 4))
        items, total = await state.list_jobs(project_uuid="p1", limit=2, offset=1)
        self.assertEqual(([j["uuid"] for j in items], total), (["j3", "j1"], 3))
        items, total = await state.list_jobs(paused=True)
        self.assertEqual(([j["uuid"] for j in items], total), (["j2"], 1))
        items, total = await state.list_jobs(project_uuid="p1", paused=False)
        self.assertEqual(([j["uuid"] for j in items], total), (["j3", "j1"], 2))
        self.assertEqual(await state.count_jobs("p2"), 1)
        self.assertEqual([j["uuid"] for j in await state.all_jobs()], ["j2", "j3", "k1", "j1"])

    @scenario
    async def test_update_job(self) -> None:
        """update_job changes the given fields and updated_at; errors name the field."""
        proposer, state = await self.seeded()
        await proposer.propose(Command("create_project", {"project": project("p2", "beta")}))
        await proposer.propose(Command("create_jobs", {"jobs": [job("j1")]}))
        changes = {
            "paused": True,
            "data": {"k": 1},
            "spec": "@every 2m",
            "anchor_at": T1,
            "project_uuid": "p2",
        }
        result = await proposer.propose(
            Command("update_job", {"uuid": "j1", "changes": changes, "updated_at": T1})
        )
        expected = dict(job("j1"), updated_at=T1, **changes)
        self.assertEqual(result, Result.success(expected))
        self.assertEqual(await state.get_job("j1"), expected)
        missing = await proposer.propose(
            Command("update_job", {"uuid": "zz", "changes": {}, "updated_at": T1})
        )
        self.assertEqual((missing.code, missing.field), ("not_found", "uuid"))
        no_project = await proposer.propose(
            Command(
                "update_job", {"uuid": "j1", "changes": {"project_uuid": "zz"}, "updated_at": T1}
            )
        )
        self.assertEqual((no_project.code, no_project.field), ("not_found", "project_uuid"))
        bad = await proposer.propose(
            Command("update_job", {"uuid": "j1", "changes": {"uuid": "x"}, "updated_at": T1})
        )
        self.assertEqual((bad.code, bad.field), ("invalid", "uuid"))
        self.assertEqual(await state.get_job("j1"), expected)

    @scenario
    async def test_delete_job(self) -> None:
        """delete_job removes the job; a second delete is not_found."""
        proposer, state = await self.seeded()
        await proposer.propose(Command("create_jobs", {"jobs": [job("j1")]}))
        self.assertEqual(
            await proposer.propose(Command("delete_job", {"uuid": "j1"})),
            Result.success({"uuid": "j1"}),
        )
        self.assertIsNone(await state.get_job("j1"))
        again = await proposer.propose(Command("delete_job", {"uuid": "j1"}))
        self.assertEqual((again.code, again.field), ("not_found", "uuid"))

    # -- credentials ---------------------------------------------------------------

    @scenario
    async def test_credentials(self) -> None:
        """Credentials are returned without the hash; by key they carry hash and archive time."""
        proposer = await self.proposer()
        state = proposer.state
        public = {"uuid": "c1", "api_key": "key1", "created_at": T0, "archived_at": None}
        created = await proposer.propose(Command("create_credential", {"credential": credential()}))
        self.assertEqual(created, Result.success(public))
        self.assertEqual(await state.get_credential("c1"), public)
        self.assertEqual(
            await state.get_credential_by_key("key1"), dict(public, api_secret_hash="$hash$")
        )
        self.assertIsNone(await state.get_credential_by_key("nope"))
        dup = await proposer.propose(
            Command("create_credential", {"credential": credential("c2", "key1")})
        )
        self.assertEqual((dup.code, dup.field), ("conflict", "api_key"))
        archived = await proposer.propose(
            Command("archive_credential", {"uuid": "c1", "archived_at": T1})
        )
        self.assertEqual(archived.value, dict(public, archived_at=T1))
        self.assertEqual((await state.get_credential_by_key("key1"))["archived_at"], T1)
        missing = await proposer.propose(
            Command("archive_credential", {"uuid": "zz", "archived_at": T1})
        )
        self.assertEqual((missing.code, missing.field), ("not_found", "uuid"))
        await proposer.propose(
            Command("create_credential", {"credential": credential("c0", "key0")})
        )
        items, total = await state.list_credentials(limit=1, offset=1)
        self.assertEqual((items, total), ([dict(public, archived_at=T1)], 2))
        self.assertEqual(await state.count_credentials(), 2)

    # -- apply semantics --------------------------------------------------------------

    @scenario
    async def test_unknown_op_is_refused_and_does_not_consume_index(self) -> None:
        """
        An op this release has no handler for was written by a newer one: it
        fails with UnsupportedVersion naming the op, changes nothing and
        leaves the applied index where it was (the node stops; see
        scheduler0.versions). Releases before entry versions answered
        "invalid" and used up the index, which left such a node's state apart
        from the others'.
        """
        state = await self.state()
        await state.apply(1, Command("create_project", {"project": project()}))
        before = await state.dump()
        try:
            await state.apply(2, Command("drop_everything", {}))
        except UnsupportedVersion as e:
            self.assertIn("'drop_everything'", str(e))
        else:
            self.fail("an unknown op was applied")
        self.assertEqual(await state.applied_index(), 1)
        self.assertEqual(await state.dump(), before)

    @scenario
    async def test_rejected_command_advances_index_without_changes(self) -> None:
        """A rejected command leaves the rows alone but records its index as applied."""
        state = await self.state()
        await state.apply(1, Command("create_project", {"project": project()}))
        before = await state.dump()
        result = await state.apply(
            2, Command("create_jobs", {"jobs": [job("j1"), job("j2", project_uuid="x")]})
        )
        self.assertFalse(result.ok)
        after = await state.dump()
        self.assertEqual(after["meta"], [["applied_index", 2], ["entry_version", ENTRY_VERSION]])
        self.assertEqual(
            {k: v for k, v in after.items() if k != "meta"},
            {k: v for k, v in before.items() if k != "meta"},
        )

    @scenario
    async def test_applying_an_applied_index_is_a_noop(self) -> None:
        """An index at or below the applied index is skipped and reported as a duplicate."""
        state = await self.state()
        await state.apply(1, Command("create_project", {"project": project()}))
        dump = await state.dump()
        again = await state.apply(1, Command("create_project", {"project": project("p9", "other")}))
        self.assertEqual(again, Result(True, None, duplicate=True))
        self.assertEqual(await state.dump(), dump)

    @scenario
    async def test_a_repeated_request_is_answered_not_applied(self) -> None:
        """The same request id again gets the first result and changes nothing."""
        state = await self.state()
        first = Command("create_project", {"project": project()}, request_id="req-1")
        result = await state.apply(1, first)
        self.assertTrue(result.ok)
        before = await state.dump()
        again = await state.apply(2, first)
        self.assertEqual(again, attrs.evolve(result, duplicate=True))
        after = await state.dump()
        self.assertEqual(after["projects"], before["projects"])
        self.assertEqual(await state.applied_index(), 2)
        other = Command("create_project", {"project": project("p2", "b")}, request_id="req-2")
        self.assertFalse((await state.apply(3, other)).duplicate)

    @scenario
    async def test_request_ids_are_forgotten_after_the_memory(self) -> None:
        """Request ids older than REQUEST_MEMORY indexes are dropped, deterministically."""
        state = await self.state()
        await state.apply(1, Command("create_project", {"project": project()}, request_id="old"))
        late = REQUEST_MEMORY + 1000
        await state.apply(late, Command("delete_project", {"uuid": "p1", "cascade": True}))
        again = await state.apply(
            late + 1, Command("create_project", {"project": project()}, request_id="old")
        )
        self.assertFalse(again.duplicate)
        self.assertTrue(again.ok)

    @scenario
    async def test_snapshot_restores_the_whole_state(self) -> None:
        """A snapshot restored into another store gives the same rows and applied index."""
        source = await self.state("source.db")
        await source.apply(3, Command("create_project", {"project": project()}))
        await source.apply(4, Command("create_jobs", {"jobs": [job("j1"), job("j2")]}))
        image = await source.snapshot()
        target = await self.state("target.db")
        await target.apply(9, Command("create_project", {"project": project("p9", "other")}))
        await target.restore(image)
        self.assertEqual(await target.dump(), await source.dump())
        self.assertEqual(await target.applied_index(), 4)
        self.assertIsNone(await target.get_project("p9"))

    @scenario
    async def test_apply_is_deterministic(self) -> None:
        """The same commands applied to two fresh stores give identical dumps and results."""
        commands = [
            Command("create_project", {"project": project()}),
            Command("create_project", {"project": project("p2", "alpha")}),
            Command(
                "create_jobs",
                {"jobs": [job("j1", data={"z": 1, "a": [3, {"y": 2, "b": 1}]}), job("j2")]},
            ),
            Command(
                "update_job",
                {
                    "uuid": "j1",
                    "changes": {"paused": True, "data": {"y": 1, "x": 2}},
                    "updated_at": T1,
                },
            ),
            Command("create_credential", {"credential": credential()}),
            Command("archive_credential", {"uuid": "c1", "archived_at": T1}),
            Command("delete_job", {"uuid": "j2"}),
        ]
        one = await self.state("one.db")
        two = await self.state("two.db")
        results_one = [await one.apply(i, c) for i, c in enumerate(commands, 1)]
        # The second store sees the commands as a follower would: decoded from bytes.
        results_two = [
            await two.apply(i, Command.from_bytes(c.to_bytes())) for i, c in enumerate(commands, 1)
        ]
        self.assertEqual(results_one, results_two)
        self.assertEqual(await one.dump(), await two.dump())

    # -- log and proposer -------------------------------------------------------------

    @scenario
    async def test_log_append_and_read(self) -> None:
        """The log numbers entries from 1, reads after an index, survives truncation."""
        log = CommandLog(self.pool("log.db"))
        await log.open()
        self.assertEqual(await log.last_index(), 0)
        first = [Command("a", {"n": 1}), Command("b", {"n": 2}, request_id="r")]
        self.assertEqual(await log.append(first), [1, 2])
        self.assertEqual(await log.append([Command("c", {})]), [3])
        self.assertEqual(await log.entries_after(1), [(2, first[1]), (3, Command("c", {}))])
        self.assertEqual(await log.entries_after(0, limit=1), [(1, first[0])])
        await log.truncate_before(4)
        self.assertEqual(await log.entries_after(0), [])
        self.assertEqual(await log.append([Command("d", {})]), [4])
        self.assertEqual(await log.last_index(), 4)

    @scenario
    async def test_a_log_with_plain_and_compressed_entries_replays_both(self) -> None:
        """
        A log written before entries were compressed keeps its plain JSON
        entry; a new one is stored compressed; start() applies both, in order.
        """
        pool = self.pool("log.db")
        log = CommandLog(pool)
        await log.open()
        old = Command("create_project", {"project": project()})
        await pool.runOperation("INSERT INTO log (idx, command) VALUES (1, ?)", (old.to_bytes(),))
        await pool.runOperation("UPDATE log_meta SET value = 1 WHERE key = 'last_index'")
        new = Command("create_jobs", {"jobs": [job(f"j{i}") for i in range(50)]})
        self.assertEqual(await log.append([new]), [2])
        stored = dict(await pool.runQuery("SELECT idx, command FROM log"))
        self.assertEqual(bytes(stored[1])[:1], b"{")
        self.assertEqual(bytes(stored[2])[:1], ZLIB_MARKER)
        self.assertLess(len(stored[2]), len(new.to_bytes()) / 4)
        self.assertEqual(await log.entries_after(0), [(1, old), (2, new)])
        state = await self.state()
        proposer = LocalProposer(log, state, self.clock)
        await proposer.start()
        self.assertEqual(await state.applied_index(), 2)
        self.assertEqual(len(await state.all_jobs()), 50)

    @scenario
    async def test_crash_between_append_and_apply_is_replayed_once(self) -> None:
        """Entries appended but not applied are applied exactly once by start()."""
        log = CommandLog(self.pool("log.db"))
        await log.open()
        state = await self.state()
        await log.append(
            [
                Command("create_project", {"project": project()}),
                Command("create_jobs", {"jobs": [job("j1")]}),
            ]
        )
        await state.apply(1, Command("create_project", {"project": project()}))
        seen: list = []
        proposer = LocalProposer(log, state, self.clock)
        proposer.subscribe(lambda command, result: seen.append((command.op, result.ok)))
        await proposer.start()
        self.assertEqual(seen, [("create_jobs", True)])
        self.assertEqual(await state.applied_index(), 2)
        self.assertEqual([j["uuid"] for j in await state.all_jobs()], ["j1"])
        again = LocalProposer(log, state, self.clock)
        await again.start()
        self.assertEqual(await state.applied_index(), 2)
        result = await again.propose(Command("delete_job", {"uuid": "j1"}))
        self.assertTrue(result.ok)
        self.assertEqual(await state.applied_index(), 3)

    @scenario
    async def test_state_ahead_of_log_keeps_new_commands(self) -> None:
        """If the log is behind the state (lost log file), new proposals are still applied."""
        state = await self.state()
        await state.apply(5, Command("create_project", {"project": project()}))
        proposer = await self.proposer(state=state)
        result = await proposer.propose(
            Command("create_project", {"project": project("p2", "beta")})
        )
        self.assertTrue(result.ok)
        self.assertFalse(result.duplicate)
        self.assertEqual(await state.applied_index(), 6)

    @scenario
    async def test_group_commit(self) -> None:
        """Proposals made during an in-flight append share the next one; results come in order."""
        inner = CommandLog(self.pool("log.db"))
        await inner.open()
        log = GatedLog(inner)
        seen: list = []
        proposer = await self.proposer(log=log)
        proposer.subscribe(lambda command, result: seen.append(command.args["project"]["uuid"]))
        gate: Deferred = Deferred()
        log.gate = gate
        pending = [
            proposer.propose(Command("create_project", {"project": project(f"p{i}", f"n{i}")}))
            for i in range(6)
        ]
        gate.callback(None)
        results = await gatherResults(pending)
        self.assertEqual([r.value["uuid"] for r in results], [f"p{i}" for i in range(6)])
        self.assertEqual(log.appends, [1, 5])
        self.assertEqual(seen, [f"p{i}" for i in range(6)])
        self.assertEqual(await proposer.state.applied_index(), 6)

    @scenario
    async def test_subscriber_errors_do_not_propagate(self) -> None:
        """A failing subscriber is logged; the proposal and later subscribers still succeed."""
        proposer = await self.proposer()
        seen: list = []

        def broken(command: Command, result: dict) -> None:
            raise RuntimeError("boom")

        proposer.subscribe(broken)
        proposer.subscribe(lambda command, result: seen.append(result.ok))
        result = await proposer.propose(Command("create_project", {"project": project()}))
        self.assertTrue(result.ok)
        self.assertEqual(seen, [True])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @scenario
    async def test_append_failure_is_store_unavailable(self) -> None:
        """When the log cannot append, propose fails with StoreUnavailable and applies nothing."""

        class FailingLog(GatedLog):
            def append(self, commands: list) -> Deferred:
                return Deferred.fromCoroutine(self._fail())

            async def _fail(self) -> None:
                raise OSError("disk full")

        inner = CommandLog(self.pool("log.db"))
        await inner.open()
        proposer = await self.proposer(log=FailingLog(inner))
        try:
            await proposer.propose(Command("create_project", {"project": project()}))
        except StoreUnavailable as e:
            self.assertIn("disk full", str(e))
        else:
            self.fail("propose did not fail")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(await proposer.state.applied_index(), 0)

    @scenario
    async def test_stop_refuses_new_proposals(self) -> None:
        """After stop(), proposals fail with StoreUnavailable."""
        proposer = await self.proposer()
        await proposer.stop()
        with self.assertRaises(StoreUnavailable):
            await proposer.propose(Command("create_project", {"project": project()}))

    @scenario
    async def test_compaction_truncates_applied_entries(self) -> None:
        """Every compact_every applies, entries already applied are dropped from the log."""
        proposer = await self.proposer(compact_every=2)
        for i in range(3):
            await proposer.propose(
                Command("create_project", {"project": project(f"p{i}", f"n{i}")})
            )
        self.assertEqual([index for index, _ in await proposer.log.entries_after(0)], [3])
        await proposer.propose(Command("create_project", {"project": project("p3", "n3")}))
        await proposer.stop()  # compaction runs after the reply; wait for it
        self.assertEqual(await proposer.log.entries_after(0), [])
        self.assertEqual(await proposer.log.last_index(), 4)

    @scenario
    async def test_trusted_records_are_written_once_per_flush(self) -> None:
        """
        A trusted record (the scheduler's) replaced within one flush is
        written once, in its last state, and reads back like any other.
        """
        executions = await self.executions()
        running = execution("e1", state="running", status_code=None, node_id=1)
        executions.record(running, trusted=True)
        done = dict(running, state="succeeded", status_code=200, finished_at=T1)
        executions.record(done, trusted=True)
        executions.record(execution("e2", state="failed"))
        await executions.flush()
        items, total = await executions.query(limit=10)
        by_id = {item["execution_id"]: item for item in items}
        self.assertEqual(total, 2)
        self.assertEqual(by_id["e1"], done)
        self.assertEqual(by_id["e2"]["state"], "failed")

    @scenario
    async def test_compaction_by_size(self) -> None:
        """A few big commands compact the log as many small ones do (compact_bytes)."""
        proposer = await self.proposer(compact_every=1000)
        proposer.compact_bytes = 2000
        await proposer.propose(Command("create_project", {"project": project()}))
        self.assertEqual(len(await proposer.log.entries_after(0)), 1)
        jobs = [job(f"j{i}") for i in range(10)]
        await proposer.propose(Command("create_jobs", {"jobs": jobs}))
        await proposer.stop()
        self.assertGreater(proposer.log.appended_bytes, 2000)
        self.assertEqual(await proposer.log.entries_after(0), [])
        self.assertEqual(await proposer.log.last_index(), 2)

    @scenario
    async def test_compaction_makes_the_state_durable_first(self) -> None:
        """
        The log forgets entries only after the state file synced what they
        did (it does not sync each commit): checkpoint, then truncate.
        """
        events: list[str] = []
        proposer = await self.proposer(compact_every=1)
        state, log = proposer.state, proposer.log

        class Watched:
            def __init__(self, inner: Any, name: str) -> None:
                self.inner, self.name = inner, name

            def __getattr__(self, attribute: str) -> Any:
                found = getattr(self.inner, attribute)
                if attribute in ("make_durable", "truncate_before"):

                    def noted(*args: Any) -> Any:
                        events.append(f"{self.name}.{attribute}")
                        return found(*args)

                    return noted
                return found

        proposer.state = Watched(state, "state")
        proposer.log = Watched(log, "log")
        await proposer.propose(Command("create_project", {"project": project()}))
        await proposer.stop()
        self.assertEqual(events, ["state.make_durable", "log.truncate_before"])
        self.assertEqual(await log.entries_after(0), [])

    @scenario
    async def test_reopening_files_keeps_data(self) -> None:
        """Closing and reopening the state, log and execution files keeps everything."""
        proposer, state = await self.seeded()
        await proposer.propose(Command("create_jobs", {"jobs": [job("j1")]}))
        executions = await self.executions()
        executions.record(execution("e1", state="failed"))
        dump = await state.dump()
        await proposer.stop()
        await state.close()
        await proposer.log.close()
        await executions.close()
        reopened = await self.proposer(state=await self.state(), log=None)
        self.assertEqual(await reopened.state.dump(), dump)
        self.assertEqual(await reopened.log.last_index(), 2)
        executions = await self.executions()
        items, total = await executions.query()
        self.assertEqual((items, total), ([execution("e1", state="failed")], 1))

    # -- executions ------------------------------------------------------------------

    @scenario
    async def test_records_in_one_turn_share_one_transaction(self) -> None:
        """Records made in one reactor turn are written by one flush, upserted by execution_id."""
        store = await self.executions()
        store.record(execution("e1", state="scheduled", status_code=None))
        store.record(execution("e2"))
        store.record(execution("e1", state="running", status_code=None, started_at=T1))
        self.assertEqual(store.flush_count, 0)
        self.clock.advance(0)
        self.assertEqual(store.flush_count, 1)
        items, total = await store.query(job_uuid="j1")
        self.assertEqual(total, 2)
        self.assertEqual(
            {item["execution_id"]: item["state"] for item in items},
            {"e1": "running", "e2": "succeeded"},
        )
        store.record(execution("e1", state="succeeded", started_at=T1, finished_at=T1))
        items, _ = await store.query(state="succeeded")
        self.assertEqual(sorted(item["execution_id"] for item in items), ["e1", "e2"])

    @scenario
    async def test_query_filters_and_pages(self) -> None:
        """query filters by job, project, state and [since, until), newest first, with totals."""
        store = await self.executions()
        for i in range(5):
            store.record(
                execution(f"a{i}", "j1", instant(i * 60), "succeeded" if i % 2 else "failed")
            )
        store.record(execution("b0", "j2", instant(90), project_uuid="p2"))
        items, total = await store.query()
        self.assertEqual([x["execution_id"] for x in items], ["a4", "a3", "a2", "b0", "a1", "a0"])
        self.assertEqual(total, 6)
        items, total = await store.query(job_uuid="j1", limit=2, offset=1)
        self.assertEqual(([x["execution_id"] for x in items], total), (["a3", "a2"], 5))
        items, total = await store.query(project_uuid="p2")
        self.assertEqual(([x["execution_id"] for x in items], total), (["b0"], 1))
        items, total = await store.query(state="failed")
        self.assertEqual(([x["execution_id"] for x in items], total), (["a4", "a2", "a0"], 3))
        items, total = await store.query(since=instant(60), until=instant(180))
        self.assertEqual(([x["execution_id"] for x in items], total), (["a2", "b0", "a1"], 3))

    @scenario
    async def test_last_slots_and_latest_per_job(self) -> None:
        """
        last_slots gives each job's latest scheduled_at past "scheduled" (never
        sent slots are still owed); latest_per_job its newest record.
        """
        store = await self.executions()
        store.record(execution("a0", "j1", instant(0)))
        store.record(execution("a1", "j1", instant(60), "skipped", skip_reason="queue_full"))
        store.record(execution("b0", "j2", instant(30), "running"))
        store.record(execution("b1", "j2", instant(40), "scheduled"))
        store.record(execution("c0", "j3", instant(50), "scheduled"))
        self.assertEqual(await store.last_slots(), {"j1": instant(60), "j2": instant(30)})
        latest = await store.latest_per_job(["j1", "j4"])
        self.assertEqual(
            latest, {"j1": execution("a1", "j1", instant(60), "skipped", skip_reason="queue_full")}
        )

    @scenario
    async def test_last_slots_of_some_jobs(self) -> None:
        """last_slots_of answers as last_slots does, for just the jobs asked about."""
        store = await self.executions()
        store.record(execution("a0", "j1", instant(0)))
        store.record(execution("a1", "j1", instant(60), "skipped", skip_reason="queue_full"))
        store.record(execution("a2", "j1", instant(70), "scheduled"))
        store.record(execution("b0", "j2", instant(30), "running"))
        store.record(execution("b1", "j2", instant(40), "scheduled"))
        store.record(execution("c0", "j3", instant(50), "scheduled"))
        store.record(execution("d0", "j4", instant(20)))
        self.assertEqual(
            await store.last_slots_of(["j1", "j2", "j3", "j5"]),
            {"j1": instant(60), "j2": instant(30)},
        )
        everything = await store.last_slots()
        self.assertEqual(await store.last_slots_of(sorted(everything)), everything)

    @scenario
    async def test_prune_keeps_history_and_recent_failures(self) -> None:
        """prune keeps the newest N per job plus failures of the last 7 days, deleting the rest."""
        now = 30 * DAY
        self.clock.advance(now)
        store = await self.executions(history_per_job=2)
        store.record(execution("old-fail", "j1", instant(now - 8 * DAY), "failed"))
        store.record(execution("recent-fail", "j1", instant(now - 6 * DAY), "failed"))
        store.record(execution("old-ok", "j1", instant(now - 5 * DAY)))
        store.record(execution("new-1", "j1", instant(now - 2 * DAY)))
        store.record(execution("new-2", "j1", instant(now - 1 * DAY)))
        store.record(execution("other", "j2", instant(now - 9 * DAY)))
        self.assertEqual(await store.prune(), 2)
        items, _ = await store.query()
        self.assertEqual(
            sorted(x["execution_id"] for x in items), ["new-1", "new-2", "other", "recent-fail"]
        )
        self.assertEqual(await store.prune(), 0)

    @scenario
    async def test_record_rejects_bad_fields(self) -> None:
        """A record with a bad state or time is refused with an error naming the field."""
        store = await self.executions()
        with self.assertRaises(ValueError) as caught:
            store.record(execution("e1", state="exploded"))
        self.assertIn("state", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            store.record(execution("e1", started_at="yesterday"))
        self.assertIn("started_at", str(caught.exception))
        self.assertEqual((await store.query())[1], 0)

    @scenario
    async def test_bad_paging_and_times_fail_the_deferred(self) -> None:
        """A negative limit or an unparsable since fails the read with an error naming it."""
        executions = await self.executions()
        state = await self.state()
        with self.assertRaises(ValueError) as caught:
            await executions.query(since="soon")
        self.assertIn("since", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            await executions.query(limit=-1)
        self.assertIn("limit", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            await state.list_jobs(offset=-5)
        self.assertIn("offset", str(caught.exception))

    @scenario
    async def test_apply_error_stops_proposer_and_restart_replays(self) -> None:
        """An apply exception fails that proposal and later ones; a restart replays the entry."""
        real = await self.state()
        state = FlakyState(real)
        proposer = await self.proposer(state=state)
        with self.assertRaises(StoreUnavailable):
            await proposer.propose(Command("create_project", {"project": project()}))
        with self.assertRaises(StoreUnavailable):
            await proposer.propose(Command("create_project", {"project": project("p2", "b")}))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        state.failing = False
        restarted = LocalProposer(proposer.log, real, self.clock)
        await restarted.start()
        self.assertEqual(await real.get_project("p1"), project())
        self.assertEqual(await real.applied_index(), 1)


def close_quietly(pool: Any) -> None:
    """Close a pool once, whichever kind it is."""
    if getattr(pool, "_closed_by_test", False):
        return
    pool._closed_by_test = True
    try:
        pool.close()
    except Exception:
        pass


class FakePoolStoreTests(StoreSuiteMixin, SynchronousTestCase):
    """The store suite on the synchronous fake pool."""

    def drive(self, coroutine: Coroutine) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def make_pool(self, path: str) -> Any:
        return SynchronousConnectionPool(path)

    def test_pruning_runs_every_interval(self) -> None:
        """start_pruning prunes once per interval on the store's clock, until stopped."""

        async def go() -> None:
            self.clock.advance(DAY)
            store = await self.executions(history_per_job=1)
            for n in range(3):
                store.record(execution(f"e{n}", "j1", instant(DAY - 100 + n)))
            await store.flush()
            store.start_pruning(60)
            self.clock.advance(59)
            self.assertEqual((await store.query())[1], 3)
            self.clock.advance(1)
            self.assertEqual((await store.query())[1], 1)
            store.record(execution("e9", "j1", instant(DAY - 1)))
            store.stop_pruning()
            self.clock.advance(600)
            self.assertEqual((await store.query())[1], 2)

        self.drive(go())


class RealPoolStoreTests(StoreSuiteMixin, TestCase):
    """The store suite on the real adbapi pool (threads, files)."""

    timeout = 30

    def drive(self, coroutine: Coroutine) -> Deferred:
        return Deferred.fromCoroutine(coroutine)

    def make_pool(self, path: str) -> Any:
        return connection_pool(path)

    @scenario
    async def test_concurrent_proposals_share_appends(self) -> None:
        """On the real threaded pool, N concurrent proposals need fewer than N appends."""
        proposer = await self.proposer()
        pending = [
            proposer.propose(Command("create_project", {"project": project(f"p{i}", f"n{i}")}))
            for i in range(20)
        ]
        results = await gatherResults(pending)
        self.assertEqual([r.value["uuid"] for r in results], [f"p{i}" for i in range(20)])
        self.assertLess(proposer.append_count, 20)


class CommandTests(SynchronousTestCase):
    """Command encoding and the error types."""

    def test_round_trip_is_canonical(self) -> None:
        """to_bytes sorts keys without spaces and from_bytes restores an equal command."""
        command = Command("create_jobs", {"b": 1, "a": {"d": None, "c": [1, 2]}}, request_id="r1")
        raw = command.to_bytes()
        self.assertEqual(
            raw, b'{"args":{"a":{"c":[1,2],"d":null},"b":1},"op":"create_jobs","request_id":"r1"}'
        )
        self.assertEqual(Command.from_bytes(raw), command)
        self.assertEqual(
            Command("x", {"a": 1, "b": 2}).to_bytes(), Command("x", {"b": 2, "a": 1}).to_bytes()
        )

    def test_from_bytes_names_bad_fields(self) -> None:
        """Malformed bytes raise ValueError naming what is wrong."""
        for raw, word in [
            (b"nope", "JSON"),
            (b"[]", "object"),
            (b'{"args":{}}', "op"),
            (b'{"op":"x","args":1}', "args"),
        ]:
            with self.assertRaises(ValueError) as caught:
                Command.from_bytes(raw)
            self.assertIn(word, str(caught.exception))

    def test_error_types(self) -> None:
        """NotLeader and ProposalTimeout are StoreUnavailable; NotLeader carries the leader."""
        self.assertIsInstance(NotLeader(leader_address="10.0.0.1:9090"), StoreUnavailable)
        self.assertEqual(NotLeader(leader_address="10.0.0.1:9090").leader_address, "10.0.0.1:9090")
        self.assertIsInstance(ProposalTimeout(), StoreUnavailable)


class SynchronousPoolTests(SynchronousTestCase):
    """The fake pool keeps adbapi's transaction rules."""

    def test_commit_on_success_rollback_on_error(self) -> None:
        """An interaction that raises changes nothing and fails its Deferred; a good one commits."""
        pool = SynchronousConnectionPool(":memory:")
        self.addCleanup(pool.close)
        self.successResultOf(pool.runOperation("CREATE TABLE t (x INTEGER)"))

        def bad(cursor: Any) -> None:
            cursor.execute("INSERT INTO t VALUES (1)")
            raise KeyError("x")

        self.failureResultOf(pool.runInteraction(bad), KeyError)
        self.assertEqual(self.successResultOf(pool.runQuery("SELECT COUNT(*) FROM t")), [(0,)])
        self.successResultOf(pool.runOperation("INSERT INTO t VALUES (?)", (2,)))
        self.assertEqual(self.successResultOf(pool.runQuery("SELECT x FROM t")), [(2,)])

    def test_closed_pool_fails(self) -> None:
        """Interactions on a closed pool fail instead of touching a closed connection."""
        pool = SynchronousConnectionPool(":memory:")
        pool.close()
        self.failureResultOf(pool.runQuery("SELECT 1"), RuntimeError)
