"""
Job labels and label selectors.

A job's C{labels} map keys to values under the rules Kubernetes gives its
own labels: a key is a name of at most 63 characters (alphanumerics, with
C{-}, C{_} and C{.} inside), optionally after a prefix and C{/} (a DNS
subdomain of at most 253 characters); a value is empty or shaped like a
name. A job carries at most L{MAX_LABELS} of them.

A selector is Kubernetes' equality-based one: comma-separated terms, all of
which must hold: C{key=value} (or C{key==value}), C{key!=value} (the key is
missing or has another value), C{key} (the key is there) and C{!key} (it is
not). L{parse_selector} reads one, L{format_selector} writes it back in one
canonical text (what a command carries), L{matches} applies it to labels.

Base layer: imports nothing of Scheduler0's (L{scheduler0.values} words
its problems as a job field's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

#: The entry version of a command that carries labels or selects by them
#: (L{scheduler0.versions}): releases before it know neither.
LABELS_ENTRY_VERSION = 2

#: The most labels one job may carry.
MAX_LABELS = 64
#: The longest name part of a key, and the longest value.
MAX_NAME_LENGTH = 63
#: The longest prefix part of a key.
MAX_PREFIX_LENGTH = 253
#: The most terms one selector may have.
MAX_SELECTOR_TERMS = 32

#: A key's name part, and a non-empty value (the length is checked apart).
NAME_PATTERN = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
#: A key's prefix: a DNS subdomain.
PREFIX_PATTERN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"

# The same rules with their lengths, as one regular expression each (the
# OpenAPI document states them so; ECMA and Python read them alike).
_BOUNDED_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_BOUNDED_KEY = rf"((?=[-a-z0-9.]{{1,{MAX_PREFIX_LENGTH}}}/){PREFIX_PATTERN}/)?{_BOUNDED_NAME}"
#: A whole key, and a whole value.
KEY_PATTERN = rf"^{_BOUNDED_KEY}$"
VALUE_PATTERN = rf"^({_BOUNDED_NAME})?$"
_TERM = rf" *(!? *{_BOUNDED_KEY}|{_BOUNDED_KEY} *(=|==|!=) *({_BOUNDED_NAME})?) *"
#: A whole selector (at most L{MAX_SELECTOR_TERMS} terms).
SELECTOR_PATTERN = rf"^{_TERM}(,{_TERM}){{0,{MAX_SELECTOR_TERMS - 1}}}$"

_NAME = re.compile(NAME_PATTERN)
_PREFIX = re.compile(PREFIX_PATTERN)

#: The operators of a selector's terms.
EQUALS = "="
NOT_EQUALS = "!="
EXISTS = "exists"
NOT_EXISTS = "!exists"


def key_problem(key: object) -> str | None:
    """What is wrong with C{key} as a label key, or None."""
    if not isinstance(key, str):
        return "a label key must be a string"
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "a label key's prefix before '/' must not be empty"
        if len(prefix) > MAX_PREFIX_LENGTH:
            return f"a label key's prefix must be at most {MAX_PREFIX_LENGTH} characters"
        if not _PREFIX.fullmatch(prefix):
            return (
                "a label key's prefix must be a DNS subdomain (lowercase letters, digits,"
                " '-' and '.', starting and ending with a letter or digit)"
            )
    if not name:
        return "a label key's name must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"a label key's name must be at most {MAX_NAME_LENGTH} characters"
    if not _NAME.fullmatch(name):
        return (
            "a label key's name must start and end with a letter or digit and hold only"
            " letters, digits, '-', '_' and '.'"
        )
    return None


def value_problem(value: object) -> str | None:
    """What is wrong with C{value} as a label value, or None."""
    if not isinstance(value, str):
        return "a label value must be a string"
    if not value:
        return None
    if len(value) > MAX_NAME_LENGTH:
        return f"a label value must be at most {MAX_NAME_LENGTH} characters"
    if not _NAME.fullmatch(value):
        return (
            "a label value must be empty, or start and end with a letter or digit and hold"
            " only letters, digits, '-', '_' and '.'"
        )
    return None


class LabelError(ValueError):
    """
    A job's labels, or a selector, are wrong: C{key} is the label at fault
    (None: the labels or the selector as a whole), and the message says how.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def check_labels(labels: object) -> dict[str, str]:
    """
    C{labels} as a job stores them (a new dict), or L{LabelError} naming
    the first label at fault (in the order given).
    """
    if not isinstance(labels, Mapping):
        raise LabelError("must be an object of label keys to string values")
    if len(labels) > MAX_LABELS:
        raise LabelError(f"must hold at most {MAX_LABELS} labels, not {len(labels)}")
    for key, value in labels.items():
        problem = key_problem(key)
        if problem is None:
            problem = value_problem(value)
        if problem is not None:
            raise LabelError(problem, key if isinstance(key, str) else None)
    return dict(labels)


# -- selectors -------------------------------------------------------------------


@attrs.frozen
class Requirement:
    """One term of a selector: C{key}, its operator C{op} and (for = and !=) C{value}."""

    key: str
    op: str
    value: str = ""

    @property
    def positive(self) -> bool:
        """Whether only jobs that carry C{key} can match (C{=} and exists)."""
        return self.op in (EQUALS, EXISTS)

    def holds(self, labels: Mapping[str, str]) -> bool:
        """Whether C{labels} meet this term."""
        if self.op == EQUALS:
            return labels.get(self.key) == self.value
        if self.op == NOT_EQUALS:
            return labels.get(self.key) != self.value
        if self.op == EXISTS:
            return self.key in labels
        return self.key not in labels

    def text(self) -> str:
        """This term as a selector writes it."""
        if self.op == EXISTS:
            return self.key
        if self.op == NOT_EXISTS:
            return f"!{self.key}"
        return f"{self.key}{self.op}{self.value}"


Selector = tuple[Requirement, ...]


def _term(text: str) -> Requirement:
    """One term of a selector, or L{LabelError} naming it."""
    # (Spaces only: the document's pattern allows no other blank.)
    term = text.strip(" ")
    if not term:
        raise LabelError("has an empty term (two commas, or one at an end)")
    if term.startswith("!") and "=" not in term:
        key, op, value = term[1:].strip(" "), NOT_EXISTS, ""
    elif "!=" in term:
        key, _, value = term.partition("!=")
        op = NOT_EQUALS
    elif "==" in term:
        key, _, value = term.partition("==")
        op = EQUALS
    elif "=" in term:
        key, _, value = term.partition("=")
        op = EQUALS
    else:
        key, op, value = term, EXISTS, ""
    key, value = key.strip(" "), value.strip(" ")
    problem = key_problem(key) or value_problem(value)
    if problem is not None:
        raise LabelError(f"term {term!r}: {problem}")
    return Requirement(key, op, value)


def parse_selector(text: str) -> Selector:
    """
    The terms of a selector (comma = and), or L{LabelError} naming the first
    term at fault. A selector must have at least one term.
    """
    if not isinstance(text, str) or not text.strip(" "):
        raise LabelError("must not be empty; give terms like team=billing,env!=prod,tier")
    terms = text.split(",")
    if len(terms) > MAX_SELECTOR_TERMS:
        raise LabelError(f"has {len(terms)} terms; at most {MAX_SELECTOR_TERMS} are allowed")
    return tuple(_term(term) for term in terms)


def format_selector(selector: Selector) -> str:
    """The canonical text of C{selector}: its terms as written, in order, comma-separated."""
    return ",".join(requirement.text() for requirement in selector)


def matches(selector: Selector, labels: Mapping[str, str] | None) -> bool:
    """Whether a job with C{labels} is selected by every term of C{selector}."""
    found = labels or {}
    return all(requirement.holds(found) for requirement in selector)


def parse_label_assignment(text: str) -> tuple[str, str]:
    """
    One C{key=value} of a command line (C{--label team=billing}) as a
    (key, value) pair, or L{LabelError} saying what is wrong.
    """
    key, equals, value = text.partition("=")
    if not equals:
        raise LabelError(f"{text!r} is not key=value")
    problem = key_problem(key) or value_problem(value)
    if problem is not None:
        raise LabelError(f"{text!r}: {problem}")
    return key, value


def labels_of(job: Mapping[str, Any]) -> dict[str, str]:
    """A job's labels (an empty dict for a job stored before labels existed)."""
    return job.get("labels") or {}
