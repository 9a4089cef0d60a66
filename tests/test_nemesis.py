"""
The nemesis run: its pure checks on hand-made histories, and one bounded
run of a real three-node cluster under a leader kill and a partition.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from harness.nemesis import (
    INFINITY,
    Delivery,
    Fault,
    JobInfo,
    NemesisRun,
    Operation,
    analyse,
    check_slots,
    dump_records,
    expected_slots,
    find_duplicates,
    job_timeline,
    load_records,
    lost_updates,
    lost_writes,
    non_linearizable_keys,
    percentile,
    register_history,
    slot_index,
    slots_between,
    stale_not_found,
)

JOB = JobInfo("j", created_at=100.2, anchor_at=100.0)


def op(
    kind: str,
    call: float,
    returned: float,
    status: int | None = 200,
    job: str | None = "j",
    value: Any = None,
) -> Operation:
    return Operation(0, kind, job, 1, call, returned, status, value)


def delivery(scheduled: float, arrived: float, job: str = "j", eid: str | None = None) -> Delivery:
    return Delivery(job, eid or f"{job}@{scheduled}", scheduled, arrived)


class OperationTests(SynchronousTestCase):
    def test_outcome_is_ok_failed_or_unknown(self) -> None:
        """2xx is ok with an ack time; 4xx failed; 5xx and no answer are unknown."""
        self.assertEqual(
            [op("read", 1, 2, s).outcome for s in (200, 201, 404, 409, 503, None)],
            ["ok", "ok", "failed", "failed", "unknown", "unknown"],
        )
        self.assertEqual(op("read", 1, 2, 200).ack, 2)
        self.assertIsNone(op("read", 1, 2, 503).ack)


class SlotTests(SynchronousTestCase):
    def test_slots_are_strictly_after_creation_and_up_to_the_stop(self) -> None:
        """Slot k is anchor + k s, k >= 1, in (after, until]."""
        self.assertEqual(slots_between(100.0, 100.2, 104.0), [101.0, 102.0, 103.0, 104.0])
        self.assertEqual(slots_between(100.0, 100.0, 102.5), [101.0, 102.0])
        self.assertEqual(slots_between(100.0, 102.0, 102.0), [])
        self.assertEqual(slots_between(100.0, 103.5, 105.0), [104.0, 105.0])

    def test_slot_index_rejects_instants_off_the_grid(self) -> None:
        """An instant on the grid has its k; one off it by more than a millisecond has none."""
        self.assertEqual(slot_index(JOB, 103.0), 3)
        self.assertEqual(slot_index(JOB, 103.0005), 3)
        self.assertIsNone(slot_index(JOB, 103.5))

    def test_a_job_never_touched_expects_every_slot(self) -> None:
        """Without lifecycle requests every slot up to the stop is expected."""
        timeline = job_timeline(JOB, [])
        self.assertEqual(expected_slots(timeline, 104.0), [101.0, 102.0, 103.0, 104.0])
        self.assertEqual(timeline.forbidden, ())

    def test_pause_excludes_from_its_call_to_the_resume_ack(self) -> None:
        """
        A paused span is not expected from the pause's call to the resume's
        2xx; slots after the pause's 2xx until the resume's call are forbidden.
        """
        timeline = job_timeline(JOB, [op("pause", 102.5, 102.6), op("resume", 105.5, 106.2)])
        self.assertEqual(timeline.inactive, ((102.5, 106.2),))
        self.assertEqual(timeline.forbidden, ((102.6, 105.5),))
        self.assertEqual(expected_slots(timeline, 108.0), [101.0, 102.0, 107.0, 108.0])

    def test_an_unknown_pause_makes_the_rest_uncertain(self) -> None:
        """A pause with no answer: nothing expected from its call on, nothing forbidden."""
        timeline = job_timeline(JOB, [op("pause", 102.5, 104.5, status=None)])
        self.assertEqual(timeline.inactive, ((102.5, INFINITY),))
        self.assertEqual(timeline.forbidden, ())
        self.assertEqual(expected_slots(timeline, 110.0), [101.0, 102.0])

    def test_an_unknown_resume_keeps_the_pause_forbidden_until_its_call(self) -> None:
        """After an acked pause, a resume with no answer ends the forbidden span at its call."""
        timeline = job_timeline(
            JOB, [op("pause", 102.5, 102.6), op("resume", 104.5, 109.0, status=503)]
        )
        self.assertEqual(timeline.inactive, ((102.5, INFINITY),))
        self.assertEqual(timeline.forbidden, ((102.6, 104.5),))

    def test_a_failed_request_changes_nothing(self) -> None:
        """4xx pause or delete answers leave every slot expected."""
        failed = [op("pause", 102.5, 102.6, 404), op("delete", 103, 103.1, 404)]
        timeline = job_timeline(JOB, failed)
        self.assertEqual(timeline.inactive, ())
        self.assertEqual(timeline.forbidden, ())

    def test_delete_stops_expectation_at_its_call_and_forbids_after_its_ack(self) -> None:
        """An acked delete: nothing expected from its call, forbidden from its 2xx."""
        timeline = job_timeline(JOB, [op("delete", 103.5, 103.7)])
        self.assertEqual(timeline.inactive, ((103.5, INFINITY),))
        self.assertEqual(timeline.forbidden, ((103.7, INFINITY),))
        unknown = job_timeline(JOB, [op("delete", 103.5, 108, None)])
        self.assertEqual(unknown.forbidden, ())

    def test_delete_of_a_paused_job_keeps_it_forbidden(self) -> None:
        """A job paused (acked) and then deleted may never fire again after the pause's 2xx."""
        timeline = job_timeline(JOB, [op("pause", 102.5, 102.6), op("delete", 104.5, 109.0, None)])
        self.assertEqual(timeline.inactive, ((102.5, INFINITY),))
        self.assertEqual(timeline.forbidden, ((102.6, INFINITY),))

    def test_check_slots_counts_missed_late_forbidden_and_nonexistent(self) -> None:
        """
        Missed slots are expected ones never delivered; lateness is measured
        on first arrivals; a slot after a pause's 2xx is an after-ack
        delivery; off-grid, too-early and unknown-job deliveries do not exist.
        """
        timeline = job_timeline(JOB, [op("pause", 103.5, 103.6), op("resume", 105.5, 105.6)])
        deliveries = [
            delivery(101.0, 101.1),
            delivery(101.0, 103.0),  # a duplicate does not change lateness
            delivery(102.0, 104.0),  # 2 s late
            delivery(104.0, 104.05),  # after the pause's 2xx
            delivery(106.5, 106.6),  # off the grid
            delivery(100.0, 100.3),  # not after created_at
            delivery(101.0, 101.1, job="other"),
        ]
        figures = check_slots({"j": timeline}, deliveries, t_stop=107.0)
        self.assertEqual(figures.expected, 5)  # 101, 102, 103, 106, 107
        self.assertEqual(figures.missed, [("j", 103.0), ("j", 106.0), ("j", 107.0)])
        self.assertEqual((figures.delivered, figures.delivered_other), (2, 1))
        self.assertEqual(sorted(round(x, 3) for x in figures.lateness), [0.1, 2.0])
        self.assertEqual([d.scheduled_at for d in figures.after_ack], [104.0])
        self.assertEqual(
            sorted((d.job_uuid, d.scheduled_at) for d in figures.nonexistent),
            [("j", 100.0), ("j", 106.5), ("other", 101.0)],
        )

    def test_a_slot_owed_through_a_fault_to_a_job_deleted_soon_after_is_excused(self) -> None:
        """
        An undelivered slot inside a fault, followed within the grace by a
        delete call, is excused; the same slot outside any fault is missed.
        """
        timeline = job_timeline(JOB, [op("delete", 106.0, 106.1)])
        fault = Fault("kill_leader", (1,), start=103.5, end=108.0)  # counts from 102.5
        figures = check_slots({"j": timeline}, [delivery(101, 101.1)], 110, faults=[fault])
        self.assertEqual(figures.missed, [("j", 102.0)])
        self.assertEqual(figures.excused, [("j", 103.0), ("j", 104.0), ("j", 105.0)])
        calm = check_slots({"j": timeline}, [delivery(101, 101.1)], 110)
        self.assertEqual(calm.missed, [("j", 102.0), ("j", 103.0), ("j", 104.0), ("j", 105.0)])
        self.assertEqual(calm.excused, [])

    def test_a_slot_between_pause_call_and_ack_may_fire_or_not(self) -> None:
        """A slot inside the pause request itself is neither expected nor forbidden."""
        timeline = job_timeline(JOB, [op("pause", 102.9, 103.2)])
        self.assertEqual(check_slots({"j": timeline}, [delivery(103.0, 103.1)], 104).after_ack, [])
        self.assertEqual(check_slots({"j": timeline}, [], 104).missed, [("j", 101.0), ("j", 102.0)])


class DuplicateTests(SynchronousTestCase):
    def test_an_id_delivered_twice_is_one_duplicate(self) -> None:
        """Each execution id that arrives more than once counts once, with its arrivals."""
        deliveries = [
            delivery(101, 101.1),
            delivery(101, 104.0),
            delivery(101, 104.2),
            delivery(102, 102.1),
        ]
        (duplicate,) = find_duplicates(deliveries)
        self.assertEqual(duplicate.arrivals, (101.1, 104.0, 104.2))
        self.assertEqual(duplicate.scheduled_at, 101)
        self.assertFalse(duplicate.in_fault)

    def test_in_fault_when_a_repeat_falls_in_a_fault_or_its_settling(self) -> None:
        """A repeat arriving during a fault or within the settle time after it is in the fault."""
        fault = Fault("partition", (3,), start=110.0, end=115.0)
        near = find_duplicates([delivery(101, 101.1), delivery(101, 118.0)], [fault])
        far = find_duplicates([delivery(102, 102.1), delivery(102, 130.0)], [fault])
        self.assertTrue(near[0].in_fault)
        self.assertFalse(far[0].in_fault)

    def test_one_slot_under_two_ids_is_a_duplicate(self) -> None:
        """A slot delivered under two different execution ids is reported too."""
        found = find_duplicates([delivery(101, 101.1, eid="a"), delivery(101, 101.2, eid="b")])
        self.assertEqual(len(found), 1)
        self.assertTrue(found[0].execution_id.startswith("ids:"))


class LostWriteTests(SynchronousTestCase):
    def test_an_acked_create_missing_at_the_end_is_lost(self) -> None:
        """A created job absent at the end is lost unless a delete was sent for it."""
        ops = [
            op("create", 1, 2, 201, job="a"),
            op("create", 1, 2, 201, job="b"),
            op("delete", 3, 9, None, job="b"),
        ]
        self.assertEqual(lost_writes(ops, {}).creates, ["a"])

    def test_an_acked_delete_whose_job_is_back_is_lost(self) -> None:
        """A job present at the end after a 2xx delete is a lost delete."""
        ops = [op("create", 1, 2, 201, job="a"), op("delete", 3, 4, 200, job="a")]
        self.assertEqual(lost_writes(ops, {"a": {"uuid": "a"}}).deletes, ["a"])

    def test_the_last_acked_pause_or_resume_holds_at_the_end(self) -> None:
        """The final C{paused} must be what the last acknowledged pause or resume set."""
        ops = [
            op("pause", 1, 2, job="a"),
            op("resume", 3, 4, job="a"),
            op("pause", 5, 6, job="b"),
            op("pause", 5, 6, job="c"),
            op("resume", 7, 8, None, job="c"),
        ]
        final = {"a": {"paused": True}, "b": {"paused": True}, "c": {"paused": True}}
        self.assertEqual(lost_writes(ops, final).pause_states, ["a"])

    def test_an_update_overwritten_by_an_older_one_is_lost(self) -> None:
        """
        An acked update is lost when the final value is the initial one or
        was written by an update that returned before it was called;
        overlapping or unknown updates may win.
        """
        ops = [
            op("update", 1, 2, value=1, job="a"),
            op("update", 3, 4, value=2, job="a"),  # lost: final is 1, which ended first
            op("update", 1, 2, value=3, job="b"),
            op("update", 1.5, 2.5, value=4, job="b"),  # overlaps 3: either may win
            op("update", 1, 2, value=5, job="c"),  # lost: final is the initial None
            op("update", 1, 9, None, value=6, job="d"),
        ]
        lost = lost_updates(ops, {"a": 1, "b": 3, "c": None, "d": None})
        self.assertEqual([(o.job, o.value) for o in lost], [("a", 2), ("c", 5)])


class LinearizabilityTests(SynchronousTestCase):
    def test_a_404_for_a_job_known_to_exist_is_stale(self) -> None:
        """
        A 404 after the create's 2xx, with no delete sent before it returned,
        is stale; one before the create's 2xx or racing a delete is not.
        """
        ops = [
            op("create", 1, 2, 201, job="a"),
            op("read", 1.5, 1.6, 404, job="a"),  # before the 2xx: fine
            op("update", 3, 4, 404, job="a", value=1),  # stale
            op("delete", 5, 5.5, 200, job="a"),
            op("read", 4.5, 6, 404, job="a"),  # races the delete: fine
        ]
        self.assertEqual([(o.kind, o.call) for o in stale_not_found(ops)], [("update", 3)])

    def test_a_stale_read_is_not_linearizable(self) -> None:
        """A read that starts after an acked write and sees the older value breaks the register."""
        ops = [op("update", 1, 2, value=1), op("update", 3, 4, value=2), op("read", 5, 6, value=1)]
        self.assertEqual(non_linearizable_keys(register_history(ops)), ["j"])

    def test_concurrent_and_unknown_operations_are_allowed(self) -> None:
        """A read overlapping a write may see either value; an unknown write may apply late."""
        ops = [
            op("update", 1, 3, value=1),
            op("read", 2, 4, value=None),
            op("update", 5, 6, None, value=2),
            op("read", 7, 8, value=1),
            op("read", 9, 10, value=2),
            op("read", 11, 12, 503, value=None),
        ]
        history = register_history(ops)
        self.assertEqual(len(history), 5)  # the unanswered read says nothing
        self.assertEqual(non_linearizable_keys(history), [])

    def test_the_final_read_catches_a_lost_write(self) -> None:
        """A final read of the initial value after an acked write is not linearizable."""
        ops = [op("update", 1, 2, value=1)]
        final = [op("read", 10, 11, value=None)]
        self.assertEqual(non_linearizable_keys(register_history(ops, final)), ["j"])


class ReportTests(SynchronousTestCase):
    def test_percentile_is_nearest_rank(self) -> None:
        self.assertEqual(percentile([3, 1, 2, 4], 50), 2)
        self.assertEqual(percentile([3, 1, 2, 4], 99), 4)
        self.assertIsNone(percentile([], 50))

    def test_a_clean_history_is_ok_and_a_missed_slot_is_not(self) -> None:
        """The report is ok only when every safety figure is 0; duplicates do not fail it."""
        jobs = {"j": JOB}
        ops = [op("create", 99, 100.3, 201), op("update", 101, 101.5, value=1)]
        final = {"j": {"uuid": "j", "paused": False, "data": {"v": 1}}}
        deliveries = [delivery(101, 101.1), delivery(102, 102.1), delivery(102, 102.5)]

        def run(deliveries: list[Delivery]) -> Any:
            return analyse(
                seed=1,
                nodes=3,
                duration=5,
                base_dir="/x",
                jobs=jobs,
                operations=ops,
                final_reads=[op("read", 110, 111, value=1)],
                final_jobs=final,
                deliveries=deliveries,
                faults=[],
                t_stop=102.0,
                t0=100.0,
            )

        good = run(deliveries)
        self.assertTrue(good.ok, good.render())
        self.assertEqual(len(good.duplicates), 1)
        self.assertIn("DUPLICATED execution ids: 1", good.render())
        self.assertEqual(good.as_json()["slots"]["expected"], 2)
        bad = run(deliveries[:1])
        self.assertFalse(bad.ok)
        self.assertEqual(bad.safety["missed_slots"], 1)
        self.assertIn("RESULT: FAILED", bad.render())
        self.assertIn("j", bad.as_json()["evidence"])

    def test_dumped_records_load_back_to_the_same_report(self) -> None:
        """Records written with dump_records and read with load_records give the same figures."""
        records = dict(
            seed=3,
            nodes=3,
            duration=5,
            base_dir="/x",
            jobs={"j": JOB},
            operations=[op("create", 99, 100.3, 201), op("pause", 101.5, 101.6)],
            final_reads=[op("read", 110, 111, value=None)],
            final_jobs={"j": {"uuid": "j", "paused": False}},
            deliveries=[delivery(101, 101.1), delivery(103, 103.1)],
            faults=[Fault("partition", (3,), 100.5, 102.0, 1, 0.7)],
            t_stop=104.0,
            t0=100.0,
        )
        path = self.mktemp()
        dump_records(path, records)
        loaded = load_records(path)
        self.assertEqual(loaded, records)
        before, after = analyse(**records), analyse(**loaded)
        self.assertEqual(after.as_json(), before.as_json())
        self.assertEqual(before.safety["delivered_after_ack"], 1)
        self.assertEqual(before.safety["lost_writes"], 1)  # the pause did not hold

    def test_bad_arguments_are_named(self) -> None:
        """Bad run parameters are rejected naming the parameter."""
        for kwargs, name in (
            ({"nodes": 2}, "nodes"),
            ({"jobs": 0}, "jobs"),
            ({"duration": 0}, "duration"),
            ({"fault_kinds": ("flood",)}, "faults"),
        ):
            error = self.assertRaises(ValueError, NemesisRun, reactor, **kwargs)
            self.assertIn(name, str(error))


class RealClusterTests(TestCase):
    """One bounded run of three real nodes: a leader kill and a partition."""

    timeout = 150

    async def test_no_safety_figure_under_a_leader_kill_and_a_partition(self) -> None:
        """
        Three nodes, 30 jobs, 25 s of client load with a leader kill and a
        minority partition: no acknowledged write is lost, the registry is
        linearizable, every slot of an active job arrives and nothing fires
        after a delete's or pause's 2xx.
        """
        lines: list[str] = []
        run = NemesisRun(
            reactor,
            nodes=3,
            jobs=30,
            duration=25,
            seed=11,
            fault_kinds=("kill_leader", "partition"),
            quiet_between=(1.5, 2.5),
            hold=(3.0, 4.0),
            settle=8.0,
            base_dir=os.path.abspath(self.mktemp()),
            log=lines.append,
        )
        report = await run.run()
        text = "\n".join(lines) + "\n" + report.render()
        kinds = {fault.kind for fault in report.faults}
        self.assertTrue({"kill_leader", "partition"} <= kinds, text)
        self.assertTrue(any(f.hits_leader for f in report.faults if f.kind == "kill_leader"), text)
        self.assertGreater(report.slots.expected, 500, text)
        self.assertEqual(report.safety, dict.fromkeys(report.safety, 0), text)
