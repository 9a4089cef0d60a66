"""
Backup files of the state machine (L{scheduler0.store.backup}): what a backup
keeps and resets, and how a restore checks the file, the versions, the data
directory and the SecretKey before it writes anything; C{scheduler0 restore}
as one line and an exit code.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.cli import main as cli
from scheduler0.cluster.restore import RESTORED_INDEX, restore_cluster_node
from scheduler0.credentials import AdminCredentials, save_admin_credentials
from scheduler0.raft.storage import SqliteRaftStorage
from scheduler0.sealing import SecretSealer
from scheduler0.secret_hash import SecretHasher
from scheduler0.store.backup import (
    BACKUP_VERSION,
    FORMAT,
    BackupError,
    Backups,
    pack,
    restore_backup,
    write_backup,
)
from scheduler0.store.commands import Command
from scheduler0.store.state import StateStore
from scheduler0.versions import ENTRY_VERSION, RELEASE, UnsupportedVersion
from tests.support.state import StateCase, jobs_named, member, project

KEY = "backup-test-secret-key"
OTHER_KEY = "another-secret-key-entirely"
NOW = "2026-01-01T00:10:00.000Z"
#: What a backup keeps as it is, and what it empties.
KEPT = ("projects", "credentials", "signing_secrets")
RESET = ("members", "executions", "fanin", "owner_loads", "node_progress")
_APPLIED = "SELECT value FROM meta WHERE key = 'applied_index'"


def record(execution_id: str, job_uuid: str, scheduled_at: str) -> dict:
    return {
        "execution_id": execution_id,
        "job_uuid": job_uuid,
        "project_uuid": "p1",
        "scheduled_at": scheduled_at,
        "state": "succeeded",
        "attempts": 1,
        "node_id": 2,
        "started_at": None,
        "finished_at": None,
        "status_code": 200,
        "error": None,
        "skip_reason": None,
    }


def rows(path: str, sql: str) -> list:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


class BackupCase(StateCase):
    def populated(self, secret_key: str = KEY) -> StateStore:
        """
        A state with a project (its signing secret sealed under
        C{secret_key}), three jobs on members 1 and 2 (one paused), a client
        credential hashed under C{secret_key}, committed history and progress,
        a progress report and a remembered request.
        """
        store = self.store()
        sealed = SecretSealer.from_secret_key(secret_key).seal("signing-secret-1")
        self.ok(store, "create_project", project=project(), signing_secret=sealed)
        self.ok(store, "set_members", members=[member(1), member(2)])
        self.ok(store, "create_jobs", jobs=jobs_named("j", 3))
        self.ok(store, "update_job", uuid="j002", changes={"paused": True}, updated_at=NOW)
        credential = {
            "uuid": "c1",
            "api_key": "key1",
            "api_secret_hash": SecretHasher.from_secret_key(secret_key).hash("secret1"),
            "created_at": NOW,
        }
        index = self.indexes[id(store)] + 1
        self.indexes[id(store)] = index
        applied = store.apply(index, Command("create_credential", {"credential": credential}, "r1"))
        self.assertTrue(self.result(applied).ok)
        self.ok(
            store,
            "commit_executions",
            node_id=2,
            from_seq=0,
            up_to_seq=2,
            records=[
                record("e1", "j000", "2026-01-01T00:01:00.000Z"),
                record("e2", "j001", "2026-01-01T00:02:00.000Z"),
            ],
            now=NOW,
            keep=100,
        )
        self.ok(store, "record_progress", marks=[[1, "2026-01-01T00:05:00.000Z", 1, 4]])
        return store

    def backup_of(self, store: StateStore, name: str = "backup.s0") -> str:
        """A backup file of C{store}, made as a node makes one."""
        image = os.path.join(self.directory, "copy.db")
        self.result(store.snapshot(image))
        path = os.path.join(self.directory, name)
        with open(path, "wb") as target:
            write_backup(image, target, NOW)
        return path

    def restored(self, path: str, secret_key: str = KEY) -> tuple[dict, StateStore]:
        target = os.path.join(self.directory, "restored")
        header = restore_backup(path, target, secret_key)
        pool = SynchronousConnectionPool(os.path.join(target, "state.db"))
        self.addCleanup(pool.close)
        store = StateStore(pool)
        self.result(store.open())
        return header, store

    def assert_refused(self, path: str, kind: type, *words: str, secret_key: str = KEY) -> str:
        """Restoring C{path} is refused with one line naming C{words}; nothing is written."""
        target = os.path.join(self.directory, "refused")
        error = self.assertRaises(kind, restore_backup, path, target, secret_key)
        message = str(error)
        self.assertNotIn("\n", message)
        for word in words:
            self.assertIn(word, message)
        self.assertFalse(os.path.exists(target))
        return message


class BackupContentTests(BackupCase):
    def test_a_restored_backup_keeps_the_definitions_and_resets_the_cluster(self) -> None:
        """
        Projects, jobs (every field but the owners), credentials and signing
        secrets come back as they were; members, history, fan-in, loads,
        reports and remembered requests are empty; the applied index is 0.
        """
        store = self.populated()
        before = self.result(store.dump())
        header, restored = self.restored(self.backup_of(store))
        after = self.result(restored.dump())
        for table in KEPT:
            self.assertEqual(after[table], before[table], table)
        for table in RESET:
            self.assertNotEqual(before[table], [], table)
            self.assertEqual(after[table], [], table)
        self.assertEqual(self.result(restored.applied_index()), 0)
        self.assertEqual(self.result(restored.entry_version()), ENTRY_VERSION)
        requests = self.result(restored.pool.runQuery("SELECT COUNT(*) FROM requests"))
        self.assertEqual(requests, [(0,)])
        # Every job field the API shows; the owners are cleared.
        for job in self.result(store.all_jobs()):
            kept = self.result(restored.get_job(job["uuid"]))
            self.assertEqual(kept, job)
        placed = self.result(restored.owned_jobs_page(None))
        self.assertEqual([job["uuid"] for job in placed], ["j000", "j001", "j002"])
        self.assertTrue(all(job["owner"] is None for job in placed))
        self.assertTrue(self.result(restored.get_job("j002"))["paused"])
        self.assertEqual(
            (header["index"], header["jobs"], header["projects"], header["credentials"]),
            (self.indexes[id(store)], 3, 1, 1),
        )
        self.assertEqual(
            (header["format"], header["backup_version"], header["release"]),
            (FORMAT, BACKUP_VERSION, RELEASE),
        )
        self.assertEqual(header["created_at"], NOW)

    def test_progress_is_raised_to_what_each_owner_last_reported(self) -> None:
        """
        A job's progress in the backup is the later of its committed last
        slot and its owner's last report (as when a job moves): j000 and
        j001 belong to the nodes; the report of node 1 covers its jobs.
        """
        store = self.populated()
        owners = self.result(store.ownership_of(["j000", "j001", "j002"]))
        committed = self.result(store.job_progress(["j000", "j001", "j002"]))
        _, restored = self.restored(self.backup_of(store))
        progress = self.result(restored.job_progress(["j000", "j001", "j002"]))
        for uuid, (owner, _) in owners.items():
            if owner == 1:
                # Node 1 reported every slot before 00:05 done.
                self.assertEqual(progress[uuid], "2026-01-01T00:04:59.999Z", uuid)
            else:
                self.assertEqual(progress.get(uuid), committed.get(uuid), uuid)
        self.assertIn(1, {owner for owner, _ in owners.values()})

    def test_backups_made_by_a_node_are_one_at_a_time_and_cleaned_up(self) -> None:
        """
        L{Backups} makes the copy in a folder of the data directory; a second
        backup while one is made is refused; discarding removes the folder.
        """
        store = self.populated()
        scratch = os.path.join(self.directory, "data")
        os.makedirs(scratch)
        waiting: list[tuple[Deferred, Any, tuple]] = []

        def run_blocking(fn: Any, *args: Any) -> Deferred:
            d: Deferred = Deferred()
            waiting.append((d, fn, args))
            return d

        backups = Backups(store, run_blocking, scratch, lambda: NOW)
        # Left by a backup a crash interrupted: removed by the next one.
        os.makedirs(os.path.join(scratch, ".backup-interrupted"))
        first = backups.make()
        self.assertTrue(backups.busy)
        self.failureResultOf(backups.make(), BackupError)
        d, fn, args = waiting.pop()
        d.callback(fn(*args))
        made = self.successResultOf(first)
        self.assertFalse(backups.busy)
        self.assertEqual(made.header["jobs"], 3)
        self.assertEqual(os.listdir(made.folder), ["backup.s0"])
        made.discard()
        self.assertEqual(os.listdir(scratch), [])
        backups.run_blocking = lambda fn, *args: succeed(fn(*args))
        self.successResultOf(backups.make()).discard()


class RestoreRefusalTests(BackupCase):
    def test_a_damaged_payload_is_refused(self) -> None:
        """One changed byte of the payload: refused as damaged, nothing written."""
        path = self.backup_of(self.populated())
        with open(path, "r+b") as f:
            f.seek(-100, os.SEEK_END)
            byte = f.read(1)
            f.seek(-100, os.SEEK_END)
            f.write(bytes([byte[0] ^ 0xFF]))
        self.assert_refused(path, BackupError, "damaged")

    def test_a_truncated_file_is_refused(self) -> None:
        """A file cut short (an interrupted download) is refused, nothing written."""
        path = self.backup_of(self.populated())
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size - 10)
        self.assert_refused(path, BackupError, "incomplete")

    def test_a_file_that_is_not_a_backup_is_refused(self) -> None:
        """A state.db (or any other file) is not taken for a backup."""
        path = os.path.join(self.directory, "state.db")
        self.populated()
        self.assert_refused(path, BackupError, "is not a scheduler0 backup")

    def test_a_newer_backup_version_is_refused_naming_the_versions(self) -> None:
        """A backup of a newer layout names its version, its release and what this one reads."""
        path = self.backup_of(self.populated())
        with open(path, "rb") as f:
            header = json.loads(f.readline())
            payload = f.read()
        header.update(backup_version=BACKUP_VERSION + 1, release="9.0.0")
        with open(path, "wb") as f:
            f.write(json.dumps(header).encode() + b"\n" + payload)
        message = self.assert_refused(
            path, UnsupportedVersion, f"version {BACKUP_VERSION + 1}", "9.0.0", RELEASE
        )
        self.assertIn(f"up to {BACKUP_VERSION}", message)

    def test_a_newer_entry_version_is_refused(self) -> None:
        """A state whose cluster writes an entry version this release cannot read is refused."""
        store = self.populated()
        image = os.path.join(self.directory, "copy.db")
        self.result(store.snapshot(image))
        connection = sqlite3.connect(image)
        connection.execute(
            "UPDATE meta SET value = ? WHERE key = 'entry_version'", (ENTRY_VERSION + 1,)
        )
        connection.commit()
        connection.close()
        path = os.path.join(self.directory, "newer.s0")
        with open(path, "wb") as target:
            write_backup(image, target, NOW)
        self.assert_refused(path, UnsupportedVersion, f"entry version {ENTRY_VERSION + 1}")

    def test_a_data_directory_that_is_not_empty_is_refused_and_left_alone(self) -> None:
        """A data directory holding anything is refused, and what it holds is unchanged."""
        path = self.backup_of(self.populated())
        target = os.path.join(self.directory, "used")
        os.makedirs(target)
        with open(os.path.join(target, "raft.db"), "wb") as f:
            f.write(b"old")
        error = self.assertRaises(BackupError, restore_backup, path, target, KEY)
        self.assertIn("is not empty", str(error))
        self.assertEqual(os.listdir(target), ["raft.db"])
        with open(os.path.join(target, "raft.db"), "rb") as f:
            self.assertEqual(f.read(), b"old")

    def test_signing_secrets_sealed_under_another_key_are_refused(self) -> None:
        """Without the SecretKey that sealed the signing secrets, nothing is restored."""
        path = self.backup_of(self.populated())
        self.assert_refused(path, BackupError, "signing secrets", "key id", secret_key=OTHER_KEY)

    def test_credentials_hashed_under_another_key_are_refused(self) -> None:
        """Client credentials hashed under another SecretKey would never authenticate: refused."""
        store = self.populated()
        self.ok(store, "delete_project", uuid="p1", cascade=True)
        self.assertEqual(self.result(store.signing_secrets()), {})
        path = self.backup_of(store)
        self.assert_refused(path, BackupError, "client credentials", "key id", secret_key=OTHER_KEY)

    def test_a_previous_secret_key_opens_the_backup(self) -> None:
        """The SecretKey kept with the backup may be among PreviousSecretKeys now."""
        path = self.backup_of(self.populated())
        target = os.path.join(self.directory, "rotated")
        header = restore_backup(path, target, OTHER_KEY, (KEY,))
        self.assertEqual(header["jobs"], 3)
        self.assertEqual(os.listdir(target), ["state.db"])


class MigrationTests(BackupCase):
    def test_an_image_of_an_older_schema_is_migrated(self) -> None:
        """
        A backup whose image lacks columns added since (as an older release
        wrote it) is restored with them, its rows reading as the defaults.
        """
        store = self.populated()
        image = os.path.join(self.directory, "copy.db")
        self.result(store.snapshot(image))
        connection = sqlite3.connect(image)
        connection.execute("ALTER TABLE projects DROP COLUMN notify_url")
        connection.execute("ALTER TABLE jobs DROP COLUMN coalesce")
        connection.execute("UPDATE meta SET value = 0 WHERE key = 'applied_index'")
        connection.commit()
        connection.close()
        path = os.path.join(self.directory, "older.s0")
        with open(path, "wb") as target:
            pack(image, target, {"created_at": NOW, "index": 9, "entry_version": 1})
        _, restored = self.restored(path)
        self.assertEqual(self.result(restored.get_job("j000"))["coalesce"], False)
        self.assertIsNone(self.result(restored.get_project("p1"))["notify_url"])


class RestoreCommandTests(BackupCase):
    """C{scheduler0 restore}: offline, one line, with the SecretKey of C{.scheduler0}."""

    def run_restore(self, *argv: str) -> tuple[int, str, str]:
        save_admin_credentials(
            os.path.join(self.directory, ".scheduler0"), AdminCredentials("admin", "pw", KEY)
        )
        stdout, stderr = io.StringIO(), io.StringIO()
        code = cli.main(
            ["restore", *argv],
            stdin=io.StringIO(""),
            stdout=stdout,
            stderr=stderr,
            environ={},
            cwd=self.directory,
        )
        return code, stdout.getvalue(), stderr.getvalue()

    def test_restore_writes_the_data_directory_and_says_so_in_one_line(self) -> None:
        """The command restores into --data-dir and prints the index and counts."""
        self.backup_of(self.populated())
        code, out, err = self.run_restore("--input", "backup.s0", "--data-dir", "node-1")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(len(out.splitlines()), 1)
        self.assertIn("1 projects, 3 jobs", out)
        self.assertEqual(os.listdir(os.path.join(self.directory, "node-1")), ["state.db"])

    def test_restore_into_a_used_data_directory_is_one_line_and_exit_1(self) -> None:
        """A refused restore prints one line without a traceback and exits 1."""
        self.backup_of(self.populated())
        code, out, err = self.run_restore("--input", "backup.s0", "--data-dir", ".")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("scheduler0: restore: the data directory"), err)

    def help_of(self, *argv: str) -> str:
        stdout = io.StringIO()
        code = cli.main([*argv, "--help"], stdout=stdout, stderr=io.StringIO(), environ={})
        self.assertEqual(code, 0, argv)
        return stdout.getvalue()

    def test_backup_and_restore_answer_help_and_take_config(self) -> None:
        """Both commands are listed, answer --help and take --config PATH."""
        listed = self.help_of()
        self.assertIn("backup", listed)
        self.assertIn("restore", listed)
        for command, option in (("backup", "--output FILE"), ("restore", "--data-dir DIR")):
            text = self.help_of(command)
            self.assertIn("--config PATH", text)
            self.assertIn(option, text)

    def test_restore_of_a_missing_file_is_one_line(self) -> None:
        code, _, err = self.run_restore("--input", "nothing.s0", "--data-dir", "node-1")
        self.assertEqual(code, 1)
        self.assertIn("cannot read", err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertFalse(os.path.exists(os.path.join(self.directory, "node-1")))

    def test_the_restore_command_loads_no_reactor_until_it_runs(self) -> None:
        """
        Building the command table imports neither the store nor the
        reactor: restore imports the store only when it runs.
        """
        import subprocess
        import sys

        script = (
            "import io, sys; from scheduler0.cli.main import main;"
            " main(['restore', '--help'], stdout=io.StringIO(), stderr=io.StringIO());"
            " print(sorted(m for m in sys.modules if m.startswith('scheduler0.store')"
            " or m == 'twisted.internet.reactor'))"
        )
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        output = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
            check=True,
        ).stdout
        self.assertEqual(output.strip(), "[]")


class ClusterRestoreTests(BackupCase):
    """A cluster node's restore: the Raft log starts with the restored state as a snapshot."""

    def test_the_raft_log_starts_with_the_restored_state(self) -> None:
        """
        state.db is at index 1 and raft.db boots with a snapshot at index 1
        of term 1 (the voters given) whose image is that state.
        """
        path = self.backup_of(self.populated())
        target = os.path.join(self.directory, "node")
        header = restore_cluster_node(path, target, KEY, (), [1, 2, 3])
        self.assertEqual(header["jobs"], 3)
        self.assertEqual(rows(os.path.join(target, "state.db"), _APPLIED), [(RESTORED_INDEX,)])
        storage = SqliteRaftStorage(os.path.join(target, "raft.db"))
        try:
            boot = storage.load()
        finally:
            storage.close()
        assert boot.snapshot is not None and boot.snapshot_data is not None
        self.assertEqual((boot.snapshot.index, boot.snapshot.term), (RESTORED_INDEX, 1))
        self.assertEqual(boot.snapshot.config.voters, frozenset({"1", "2", "3"}))
        self.assertEqual(boot.entries, ())
        image = os.path.join(self.directory, "image.db")
        with open(image, "wb") as f:
            f.write(bytes(boot.snapshot_data))
        self.assertEqual(rows(image, _APPLIED), [(RESTORED_INDEX,)])
        self.assertEqual(len(rows(image, "SELECT uuid FROM jobs")), 3)

    def test_a_refused_cluster_restore_leaves_nothing(self) -> None:
        path = self.backup_of(self.populated())
        target = os.path.join(self.directory, "node")
        self.assertRaises(BackupError, restore_cluster_node, path, target, OTHER_KEY, (), [1])
        self.assertFalse(os.path.exists(target))


class BackupCommandTests(BackupCase):
    """C{scheduler0 backup} reports a node it cannot reach in one line and leaves no file."""

    def test_an_unreachable_node_is_one_line_and_no_file(self) -> None:
        from harness.process import free_port

        save_admin_credentials(
            os.path.join(self.directory, ".scheduler0"), AdminCredentials("admin", "pw", KEY)
        )
        stdout, stderr = io.StringIO(), io.StringIO()
        endpoint = f"http://127.0.0.1:{free_port()}"
        code = cli.main(
            ["backup", "--output", "out.s0", "--endpoint", endpoint],
            stdin=io.StringIO(""),
            stdout=stdout,
            stderr=stderr,
            environ={},
            cwd=self.directory,
        )
        self.assertEqual((code, stdout.getvalue()), (1, ""))
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith(f"scheduler0: cannot reach node at {endpoint}: "))
        self.assertEqual(sorted(os.listdir(self.directory)), [".scheduler0"])


class CancelledBackupTests(BackupCase):
    def test_a_cancelled_backup_finishes_its_copy_then_discards_it(self) -> None:
        """
        A client that goes away cancels the answer; the copy on its thread
        is not pulled from under it: it finishes, is discarded, and only
        then may another backup begin.
        """
        store = self.populated()
        scratch = os.path.join(self.directory, "data")
        os.makedirs(scratch)
        blocked: Deferred = Deferred()
        calls: list = []

        def run_blocking(fn: Any, *args: Any) -> Deferred:
            calls.append((fn, args))
            return blocked

        backups = Backups(store, run_blocking, scratch, lambda: NOW)
        answer = backups.make()
        answer.cancel()
        self.failureResultOf(answer, CancelledError)
        self.assertTrue(backups.busy)
        self.assertEqual(len(os.listdir(scratch)), 1)
        fn, args = calls[0]
        blocked.callback(fn(*args))
        self.assertFalse(backups.busy)
        self.assertEqual(os.listdir(scratch), [])
