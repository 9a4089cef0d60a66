"""
Job labels' rules (Kubernetes' keys and values, the bound on their count)
and label selectors: parsing, their canonical text, and what they match.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.labels import (
    EQUALS,
    EXISTS,
    MAX_LABELS,
    NOT_EQUALS,
    NOT_EXISTS,
    LabelError,
    Requirement,
    check_labels,
    format_selector,
    key_problem,
    matches,
    parse_label_assignment,
    parse_selector,
    value_problem,
)
from scheduler0.values import FieldProblem, Job, JobError, check_fields, labels_check

GOOD_KEYS = (
    "team",
    "a",
    "A1",
    "app.kubernetes.io/name",
    "example.com/tier_1",
    "x" * 63,
    "a-b_c.d",
    ("p" * 253) + "/n",
)
BAD_KEYS = (
    "",
    "-team",
    "team-",
    "te am",
    "x" * 64,
    "/name",
    "Example.com/name",
    "example..com/name",
    "a/b/c",
    ("p" * 254) + "/n",
    "prefix/",
    "café",
)
GOOD_VALUES = ("", "billing", "v1.2.3", "A_b-C", "x" * 63)
BAD_VALUES = ("-x", "x-", "a b", "x" * 64, "a/b", "ü")


class LabelRuleTests(SynchronousTestCase):
    """A label's key and value follow Kubernetes' rules; a job holds at most 64."""

    def test_good_keys(self) -> None:
        """Names, prefixed names and the longest allowed ones are keys."""
        for key in GOOD_KEYS:
            self.assertIsNone(key_problem(key), key)

    def test_bad_keys(self) -> None:
        """Empty, badly shaped or too long names and prefixes are refused."""
        for key in BAD_KEYS:
            self.assertIsNotNone(key_problem(key), key)
        self.assertIsNotNone(key_problem(3))

    def test_values(self) -> None:
        """A value is empty or shaped like a name, at most 63 characters."""
        for value in GOOD_VALUES:
            self.assertIsNone(value_problem(value), value)
        for value in BAD_VALUES:
            self.assertIsNotNone(value_problem(value), value)
        self.assertIsNotNone(value_problem(None))
        self.assertIsNotNone(value_problem(1))

    def test_check_labels_names_the_key(self) -> None:
        """The first label at fault is named; a non-object names no key."""
        self.assertEqual(check_labels({"team": "billing"}), {"team": "billing"})
        with self.assertRaises(LabelError) as caught:
            check_labels({"ok": "1", "team": "-bad"})
        self.assertEqual(caught.exception.key, "team")
        with self.assertRaises(LabelError) as caught:
            check_labels(["team"])
        self.assertIsNone(caught.exception.key)

    def test_count_bound(self) -> None:
        """64 labels are accepted, 65 refused."""
        most = {f"k{i}": "v" for i in range(MAX_LABELS)}
        self.assertEqual(check_labels(most), most)
        with self.assertRaises(LabelError) as caught:
            check_labels({**most, "one-more": "v"})
        self.assertIn("at most 64", str(caught.exception))

    def test_field_loop_names_the_label(self) -> None:
        """The one field loop reports a bad label as the field labels.<key>."""
        _, problems = check_fields({"labels": {"team": "a b"}}, checks={"labels": labels_check})
        self.assertEqual([problem.field for problem in problems], ["labels.team"])
        _, problems = check_fields({"labels": "team"}, checks={"labels": labels_check})
        self.assertEqual([problem.field for problem in problems], ["labels"])

    def test_stored_job_labels(self) -> None:
        """A stored job carries labels (none by default); bad ones name the label."""
        base = {
            "uuid": "j1",
            "project_uuid": "p1",
            "name": "n",
            "spec": "@every 1m",
            "callback_url": "http://h/",
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
        }
        self.assertEqual(Job.from_mapping(base).labels, {})
        labelled = Job.from_mapping({**base, "labels": {"team": "billing"}})
        self.assertEqual(labelled.labels, {"team": "billing"})
        with self.assertRaises(JobError) as caught:
            Job.from_mapping({**base, "labels": {"team": "-x"}})
        self.assertEqual(caught.exception.problem.field, "labels.team")
        self.assertIsInstance(caught.exception.problem, FieldProblem)

    def test_assignment(self) -> None:
        """A command line's key=value is a label; anything else is refused."""
        self.assertEqual(parse_label_assignment("team=billing"), ("team", "billing"))
        self.assertEqual(parse_label_assignment("team="), ("team", ""))
        for bad in ("team", "=x", "te am=x", "team=a b"):
            with self.assertRaises(LabelError):
                parse_label_assignment(bad)


class SelectorTests(SynchronousTestCase):
    """Kubernetes' equality-based selectors: =, ==, !=, key, !key, comma = and."""

    def test_parse(self) -> None:
        """Every kind of term is read, spaces around terms ignored."""
        self.assertEqual(
            parse_selector("team=billing, env!=prod,tier,!legacy,app==web,empty="),
            (
                Requirement("team", EQUALS, "billing"),
                Requirement("env", NOT_EQUALS, "prod"),
                Requirement("tier", EXISTS),
                Requirement("legacy", NOT_EXISTS),
                Requirement("app", EQUALS, "web"),
                Requirement("empty", EQUALS, ""),
            ),
        )

    def test_canonical_text(self) -> None:
        """The canonical text reads back as the same selector; == is written =."""
        selector = parse_selector(" team==billing ,env!=prod,tier,!legacy")
        self.assertEqual(format_selector(selector), "team=billing,env!=prod,tier,!legacy")
        self.assertEqual(parse_selector(format_selector(selector)), selector)

    def test_malformed(self) -> None:
        """A malformed selector names the term at fault."""
        for text, term in (
            ("team=billing,-bad", "'-bad'"),
            ("team=a b", "'team=a b'"),
            ("a!=b!=c", "'a!=b!=c'"),
            ("!", "'!'"),
            ("x=y=z", "'x=y=z'"),
        ):
            with self.assertRaises(LabelError) as caught:
                parse_selector(text)
            self.assertIn(term, str(caught.exception), text)
        for text in ("", " ", "a,,b", "a,"):
            self.assertRaises(LabelError, parse_selector, text)
        self.assertRaises(LabelError, parse_selector, ",".join(["a"] * 33))

    def test_matches(self) -> None:
        """Every term must hold; != and !key hold for jobs without the key."""
        labels = {"team": "billing", "env": "dev"}
        cases = {
            "team=billing": True,
            "team=ops": False,
            "team!=ops": True,
            "tier!=web": True,
            "team": True,
            "tier": False,
            "!tier": True,
            "!team": False,
            "team=billing,env!=prod": True,
            "team=billing,env=prod": False,
        }
        for text, expected in cases.items():
            self.assertEqual(matches(parse_selector(text), labels), expected, text)
        self.assertTrue(matches(parse_selector("!team"), None))
        self.assertFalse(matches(parse_selector("team"), {}))


class PatternTests(SynchronousTestCase):
    """The patterns the OpenAPI document states accept exactly what the checks accept."""

    def test_key_and_value_patterns(self) -> None:
        import re

        from scheduler0.labels import KEY_PATTERN, VALUE_PATTERN

        for key in (*GOOD_KEYS, *BAD_KEYS, "a\n", "a.b/" + "x" * 64):
            self.assertEqual(
                re.search(KEY_PATTERN, key) is not None and "\n" not in key,
                key_problem(key) is None,
                key,
            )
        for value in (*GOOD_VALUES, *BAD_VALUES):
            self.assertEqual(
                re.search(VALUE_PATTERN, value) is not None, value_problem(value) is None
            )

    def test_selector_pattern(self) -> None:
        import re

        from scheduler0.labels import SELECTOR_PATTERN

        for text in (
            "team=billing",
            " team == billing , env!=prod,tier, ! legacy",
            "a.b/c=",
            "a,,b",
            "a,",
            "",
            "\tteam",
            "team=a b",
            "x=y=z",
            "!a=b",
            ",".join(["a"] * 32),
            ",".join(["a"] * 33),
            "example.com/owner!=ann",
        ):
            try:
                parse_selector(text)
                accepted = True
            except LabelError:
                accepted = False
            self.assertEqual(re.fullmatch(SELECTOR_PATTERN, text) is not None, accepted, text)
