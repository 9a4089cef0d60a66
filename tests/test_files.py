"""Tests for L{scheduler0.files.write_atomically}."""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.files import write_atomically


class WriteAtomicallyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = self.mktemp()
        os.makedirs(self.folder)
        self.path = os.path.join(self.folder, "file.yml")

    def test_writes_text_with_mode(self) -> None:
        """The file holds the text and has exactly the mode asked for."""
        write_atomically(self.path, "a: 1\n", mode=0o600)
        with open(self.path) as f:
            self.assertEqual(f.read(), "a: 1\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_replaces_and_tightens_an_existing_file(self) -> None:
        """An existing file is replaced whole, and a looser mode is not kept."""
        with open(self.path, "w") as f:
            f.write("old and longer\n")
        os.chmod(self.path, 0o644)
        write_atomically(self.path, "new\n", mode=0o600)
        with open(self.path) as f:
            self.assertEqual(f.read(), "new\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_failure_leaves_the_old_file_and_no_temporary(self) -> None:
        """A write that fails part-way keeps the old file and removes its temporary."""
        write_atomically(self.path, "old\n")
        with self.assertRaises(TypeError):
            write_atomically(self.path, b"not text")  # type: ignore[arg-type]
        with open(self.path) as f:
            self.assertEqual(f.read(), "old\n")
        self.assertEqual(os.listdir(self.folder), ["file.yml"])
