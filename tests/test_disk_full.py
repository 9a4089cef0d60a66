"""
Writes on a full disk, with real parts: a real C{twistd scheduler0} node
whose data directory is a small tmpfs, filled and freed by the test with a
file, a real receiver, real SQLite files checked with C{PRAGMA
integrity_check} at the end. Needs root (to mount); skipped without it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, TestCase

from harness.process import NodeProcess, client_headers, http_client, prepare_single_node
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for

MB = 1024 * 1024
# Writes are refused below this much free space (DataDirMinFreeMB).
FLOOR_MB = 4


def mount_tmpfs(test: TestCase, path: str, size_mb: int) -> None:
    """Mount a tmpfs of C{size_mb} at C{path} for this test, unmounted at its end."""
    if os.geteuid() != 0:
        raise SkipTest("mounting a small tmpfs for a full data directory needs root")
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", path],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SkipTest(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    test.addCleanup(subprocess.run, ["umount", "-l", path], capture_output=True)


def fill(directory: str, leave_bytes: int) -> str:
    """Write a file into C{directory} that leaves about C{leave_bytes} free; return its path."""
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    path = os.path.join(directory, "filler")
    with open(path, "ab") as f:
        f.write(b"\0" * max(0, free - leave_bytes))
    return path


def integrity(directory: str) -> dict[str, str]:
    """C{PRAGMA integrity_check} of every .db file in C{directory}."""
    answers = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".db"):
            with sqlite3.connect(os.path.join(directory, name)) as connection:
                answers[name] = connection.execute("PRAGMA integrity_check").fetchone()[0]
    return answers


def log_lines(node: NodeProcess, text: str) -> list[str]:
    """The lines of every log file of C{node} that contain C{text}."""
    found = []
    for name in sorted(os.listdir(node.workdir)):
        if name.startswith("node-") and name.endswith(".log"):
            with open(os.path.join(node.workdir, name), errors="replace") as f:
                found.extend(line for line in f if text in line)
    return found


class DiskFullTests(TestCase):
    timeout = 120

    async def _node(self, size_mb: int) -> tuple[NodeProcess, str]:
        workdir = os.path.abspath(self.mktemp())
        data = os.path.join(workdir, "data")
        mount_tmpfs(self, data, size_mb)
        node = await prepare_single_node(reactor, workdir, f"DataDirMinFreeMB: {FLOOR_MB}\n")
        self.addCleanup(node.kill)
        return node, data

    async def _health(self, node: NodeProcess) -> tuple[int, dict]:
        response = await http_client(reactor).get(node.url + "/healthcheck", timeout=2)
        return response.code, await response.json()

    async def test_writes_refused_below_the_floor_resume_when_space_returns(self) -> None:
        """
        Below DataDirMinFreeMB a job create and a PATCH answer 507 naming the
        data directory and its free space, and change nothing; health answers
        503 with writes_refused and the gauge says 1; once the file is deleted
        writes succeed without a restart and health is 200. One log event
        says writes were refused, one that they resumed.
        """
        http = http_client(reactor)
        receiver = CallbackReceiver(reactor)
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        node, data = await self._node(24)
        await node.start()
        headers = await client_headers(node)
        response = await http.post(node.url + "/projects", json={"name": "disk"}, headers=headers)
        self.assertEqual(response.code, 201, await response.text())
        project = (await response.json())["data"]["uuid"]
        job = {
            "project_uuid": project,
            "name": "tick",
            "spec": "@every 1s",
            "callback_url": f"http://127.0.0.1:{port}/tick",
        }
        response = await http.post(node.url + "/jobs", json=job, headers=headers)
        self.assertEqual(response.code, 201, await response.text())
        job_uuid = (await response.json())["data"]["uuid"]

        filler = fill(data, 2 * MB)

        async def refused() -> dict | None:
            code, body = await self._health(node)
            codes = [r["code"] for r in body["data"]["reasons"]]
            return body if code == 503 and "writes_refused" in codes else None

        health = await wait_for(reactor, refused, timeout=10, what="health to say writes_refused")
        self.assertTrue(health["data"]["disk"]["writes_refused"])
        self.assertEqual(health["data"]["disk"]["data_dir"], data)

        response = await http.post(node.url + "/jobs", json={**job, "name": "x"}, headers=headers)
        body = await response.json()
        self.assertEqual(response.code, 507, body)
        self.assertEqual(body["error"]["code"], "insufficient_storage")
        self.assertIn(data, body["error"]["message"])
        self.assertIn("MB free", body["error"]["message"])
        self.assertEqual(body["data"]["data_dir"], data)

        response = await http.patch(
            node.url + f"/jobs/{job_uuid}", json={"paused": True}, headers=headers
        )
        self.assertEqual(response.code, 507, await response.text())
        response = await http.get(node.url + f"/jobs/{job_uuid}", headers=headers)
        self.assertEqual(response.code, 200)
        self.assertFalse((await response.json())["data"]["paused"])
        response = await http.get(node.url + "/jobs", headers=headers)
        self.assertEqual((await response.json())["data"]["total"], 1)

        response = await http.get(node.url + "/metrics", headers=headers)
        self.assertIn("scheduler0_writes_refused 1.0", await response.text())

        os.unlink(filler)

        async def ready() -> bool:
            return (await self._health(node))[0] == 200

        await wait_for(reactor, ready, timeout=10, what="health to answer 200 again")
        response = await http.patch(
            node.url + f"/jobs/{job_uuid}", json={"paused": True}, headers=headers
        )
        self.assertEqual(response.code, 200, await response.text())
        response = await http.post(node.url + "/jobs", json={**job, "name": "y"}, headers=headers)
        self.assertEqual(response.code, 201, await response.text())
        await node.stop()
        self.assertEqual(len(log_lines(node, "writes refused: ")), 1)
        self.assertEqual(len(log_lines(node, "writes resumed: ")), 1)
        self.assertEqual(log_lines(node, "Traceback"), [])
        self.assertEqual(set(integrity(data).values()), {"ok"})

    async def test_a_full_or_read_only_data_directory_refuses_to_start(self) -> None:
        """
        A node with a job whose slots were missed, restarted on a full data
        directory, and then on a read-only one, exits non-zero each time with
        one line naming the directory and the cause, and delivers nothing;
        with space back it starts.
        """
        http = http_client(reactor)
        receiver = CallbackReceiver(reactor)
        port = await receiver.listen(reactor)
        self.addCleanup(receiver.stop)
        node, data = await self._node(16)
        await node.start()
        headers = await client_headers(node)
        response = await http.post(node.url + "/projects", json={"name": "disk"}, headers=headers)
        project = (await response.json())["data"]["uuid"]
        response = await http.post(
            node.url + "/jobs",
            json={
                "project_uuid": project,
                "name": "tick",
                "spec": "@every 1s",
                "callback_url": f"http://127.0.0.1:{port}/tick",
            },
            headers=headers,
        )
        self.assertEqual(response.code, 201, await response.text())
        await receiver.wait_until(lambda: len(receiver.arrivals) >= 1)
        await node.stop()
        delivered = len(receiver.arrivals)

        filler = fill(data, 1 * MB)
        node.spawn()
        ended = await node.exited()
        self.assertNotEqual(getattr(ended, "exitCode", 0), 0, node.output)
        lines = log_lines(node, "does not start")
        self.assertEqual(len(lines), 1, node.output)
        self.assertIn(data, lines[0])
        self.assertIn("MB free", lines[0])

        os.unlink(filler)
        subprocess.run(["mount", "-o", "remount,ro", data], check=True)
        try:
            node.spawn()
            ended = await node.exited()
        finally:
            subprocess.run(["mount", "-o", "remount,rw", data], check=True)
        self.assertNotEqual(getattr(ended, "exitCode", 0), 0, node.output)
        lines = log_lines(node, "does not start")
        self.assertEqual(len(lines), 2, node.output)
        self.assertIn(data, lines[1])
        self.assertIn("read-only", lines[1])
        self.assertEqual(log_lines(node, "Traceback"), [])
        self.assertEqual(len(receiver.arrivals), delivered)

        await node.start()
        await receiver.wait_until(lambda: len(receiver.arrivals) > delivered)
        await node.stop()
        self.assertEqual(set(integrity(data).values()), {"ok"})
