"""
Tests for L{scheduler0.store.commands}: the L{Op} names and the one way
subscribers hear applied commands (L{Subscribers}), and the L{Result} of
an apply as it travels between peers and is kept for retries.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.store.commands import Command, Op, Result, Subscribers, canonical_json
from scheduler0.store.state import HANDLERS


class OpTests(SynchronousTestCase):
    def test_every_handler_has_an_op_and_only_state_restored_has_none(self) -> None:
        """The state machine handles every op but the state_restored notice."""
        self.assertEqual(set(HANDLERS), set(Op) - {Op.STATE_RESTORED})

    def test_an_op_is_its_text_on_the_wire(self) -> None:
        command = Command(Op.CREATE_JOBS, {"jobs": []})
        decoded = Command.from_bytes(command.to_bytes())
        self.assertEqual(decoded.op, Op.CREATE_JOBS)
        self.assertIn(b'"op":"create_jobs"', command.to_bytes())


class ResultTests(SynchronousTestCase):
    def test_its_json_is_the_objects_older_releases_send_and_keep(self) -> None:
        """A success is {ok, value}, a refusal {ok, code, message, field}; duplicate when so."""
        self.assertEqual(
            canonical_json(Result.success({"uuid": "p1"}).to_json()),
            '{"ok":true,"value":{"uuid":"p1"}}',
        )
        self.assertEqual(
            canonical_json(Result.failure("conflict", "taken", "name").to_json()),
            '{"code":"conflict","field":"name","message":"taken","ok":false}',
        )
        self.assertEqual(
            Result(True, None, duplicate=True).to_json(),
            {"ok": True, "value": None, "duplicate": True},
        )
        self.assertEqual(
            Result.failure("invalid", "no", None).to_json(),
            {"ok": False, "code": "invalid", "message": "no", "field": None},
        )

    def test_a_result_survives_its_json(self) -> None:
        for result in (
            Result.success([1, "x"]),
            Result.success(None),
            Result.failure("not_found", "gone", "uuid"),
            Result(True, {"a": 1}, duplicate=True),
            Result(False, code="conflict", message="taken", field=None, duplicate=True),
        ):
            self.assertEqual(Result.from_json(result.to_json()), result)


class SubscribersTests(SynchronousTestCase):
    def test_each_hears_the_ops_it_names_in_the_order_subscribed(self) -> None:
        heard: list[tuple[str, str]] = []
        subscribers = Subscribers()
        subscribers.add(lambda c, r: heard.append(("all", c.op)))
        subscribers.add(lambda c, r: heard.append(("jobs", c.op)), {Op.CREATE_JOBS, Op.DELETE_JOB})
        subscribers.add(lambda c, r: heard.append(("restore", c.op)), (Op.STATE_RESTORED,))
        for op in (Op.CREATE_JOBS, Op.UPDATE_PROJECT, Op.STATE_RESTORED):
            subscribers.tell(Command(op, {}), Result.success(None))
        self.assertEqual(
            heard,
            [
                ("all", "create_jobs"),
                ("jobs", "create_jobs"),
                ("all", "update_project"),
                ("all", "state_restored"),
                ("restore", "state_restored"),
            ],
        )

    def test_one_that_raises_is_logged_and_the_others_still_hear(self) -> None:
        heard: list[str] = []
        subscribers = Subscribers()

        def broken(command: Command, result: Result) -> None:
            raise RuntimeError("boom")

        subscribers.add(broken)
        subscribers.add(lambda c, r: heard.append(c.op))
        subscribers.tell(Command(Op.DELETE_JOB, {}), Result.success(None))
        self.assertEqual(heard, ["delete_job"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
