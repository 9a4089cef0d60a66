"""
Entry versions: how a command states the format it needs, and what a state
file starts at.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from scheduler0.store.commands import Command, Op
from scheduler0.store.sqlite import connection_pool
from scheduler0.store.state import StateStore
from scheduler0.versions import (
    ENTRY_VERSION,
    EntryVersionTooLow,
    UnsupportedVersion,
    require_entry_version,
)


class CommandVersionTests(unittest.TestCase):
    def test_a_first_version_command_is_written_as_releases_before_versioning_wrote_it(self):
        raw = Command(Op.DELETE_JOB, {"uuid": "u"}, "r").to_bytes()
        self.assertEqual(raw, b'{"args":{"uuid":"u"},"op":"delete_job","request_id":"r"}')
        self.assertEqual(Command.from_bytes(raw).version, 1)

    def test_a_later_version_travels_in_the_command(self):
        command = Command(Op.DELETE_JOB, {"uuid": "u"}, None, version=2)
        self.assertIn(b'"v":2', command.to_bytes())
        self.assertEqual(Command.from_bytes(command.to_bytes()), command)

    def test_a_command_of_a_newer_version_is_not_read(self):
        raw = Command(Op.DELETE_JOB, {}, None, version=ENTRY_VERSION + 1).to_bytes()
        with self.assertRaises(UnsupportedVersion) as caught:
            Command.from_bytes(raw)
        self.assertIn(f"entry version {ENTRY_VERSION + 1}", str(caught.exception))

    def test_a_version_that_is_not_a_positive_integer_is_refused(self):
        for bad in (b'"2"', b"0", b"true", b"1.5"):
            raw = b'{"args":{},"op":"delete_job","request_id":null,"v":' + bad + b"}"
            self.assertRaises(ValueError, Command.from_bytes, raw)

    def test_require_names_the_feature_and_both_versions(self):
        require_entry_version(2, 2, "labels")
        with self.assertRaises(EntryVersionTooLow) as caught:
            require_entry_version(1, 2, "labels")
        self.assertEqual((caught.exception.needed, caught.exception.current), (2, 1))
        self.assertIn("labels", str(caught.exception))


class StateEntryVersionTests(unittest.TestCase):
    @defer.inlineCallbacks
    def _version_of(self, path):
        store = StateStore(connection_pool(path, reactor))
        yield store.open()
        try:
            version = yield store.entry_version()
        finally:
            yield store.close()
        return version

    @defer.inlineCallbacks
    def test_a_new_state_file_starts_at_this_release_s_version(self):
        path = os.path.join(self.mktemp(), "state.db")
        os.makedirs(os.path.dirname(path))
        self.assertEqual((yield self._version_of(path)), ENTRY_VERSION)

    @defer.inlineCallbacks
    def test_a_file_an_older_release_wrote_starts_at_the_first_version(self):
        path = os.path.join(self.mktemp(), "state.db")
        os.makedirs(os.path.dirname(path))
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('applied_index', 7)")
        db.commit()
        db.close()
        self.assertEqual((yield self._version_of(path)), 1)
