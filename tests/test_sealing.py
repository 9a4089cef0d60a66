"""
Tests for L{scheduler0.sealing}: signing secrets sealed at rest under a key
derived from SecretKey, opened by the signer, resealed under a new key
through the proposer, and never written to the state files in plain text.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.sealing import PREFIX, SealError, SecretSealer, is_sealed, sealed_key_id
from scheduler0.signing import HEADER, CallbackSigner, verify
from scheduler0.store.commands import Command
from scheduler0.store.local import LocalProposer
from scheduler0.store.log import CommandLog
from scheduler0.store.state import StateStore
from tests.support.api import Harness, basic, fired

OLD_KEY = "old-secret-key-0123456789abcdef"
NEW_KEY = "new-secret-key-fedcba9876543210"
BODY = b'[{"execution_id":"e1"}]'
T0 = "2026-01-01T00:00:00.000Z"


class _Delivery:
    def __init__(self, project_uuid: str) -> None:
        self.project_uuid = project_uuid


class SealerTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """A sealed secret opens to itself; the stored text names the key, not the secret."""
        sealer = SecretSealer.from_secret_key(OLD_KEY)
        stored = sealer.seal("the-signing-secret")
        self.assertTrue(stored.startswith(PREFIX))
        self.assertNotIn("the-signing-secret", stored)
        self.assertEqual(sealed_key_id(stored), sealer.key_id)
        self.assertEqual(sealer.open(stored), "the-signing-secret")

    def test_each_seal_has_its_own_nonce(self) -> None:
        """Sealing the same secret twice gives two different values."""
        sealer = SecretSealer.from_secret_key(OLD_KEY)
        self.assertNotEqual(sealer.seal("s"), sealer.seal("s"))

    def test_plain_text_passes_through(self) -> None:
        """A secret stored in plain text by an earlier release opens as it is."""
        sealer = SecretSealer.from_secret_key(OLD_KEY)
        self.assertFalse(is_sealed("legacy-secret"))
        self.assertEqual(sealer.open("legacy-secret"), "legacy-secret")

    def test_wrong_key_is_a_clear_error(self) -> None:
        """Another SecretKey cannot open it: the error names both key ids and README's section."""
        old = SecretSealer.from_secret_key(OLD_KEY)
        new = SecretSealer.from_secret_key(NEW_KEY)
        with self.assertRaises(SealError) as caught:
            new.open(old.seal("s"))
        message = str(caught.exception)
        self.assertIn(old.key_id, message)
        self.assertIn(new.key_id, message)
        self.assertIn("Rotating SecretKey", message)
        self.assertNotIn(OLD_KEY, message)

    def test_damaged_value_is_a_clear_error(self) -> None:
        """A changed ciphertext does not open (AES-GCM authenticates it)."""
        sealer = SecretSealer.from_secret_key(OLD_KEY)
        stored = sealer.seal("s")
        damaged = stored[:-4] + ("AAAA" if not stored.endswith("AAAA") else "BBBB")
        with self.assertRaises(SealError) as caught:
            sealer.open(damaged)
        self.assertIn("damaged", str(caught.exception))

    def test_reseal(self) -> None:
        """Resealing moves a value (sealed or plain text) under the new key."""
        old = SecretSealer.from_secret_key(OLD_KEY)
        new = SecretSealer.from_secret_key(NEW_KEY)
        for stored in (old.seal("s"), "s"):
            moved = old.reseal(stored, new)
            self.assertEqual(sealed_key_id(moved), new.key_id)
            self.assertEqual(new.open(moved), "s")


class SealedSignerTests(SynchronousTestCase):
    """The signer opens sealed secrets from the real StateStore."""

    def setUp(self) -> None:
        pool = SynchronousConnectionPool(":memory:")
        self.addCleanup(pool.close)
        self.state = StateStore(pool)
        self.successResultOf(self.state.open())
        self.index = 0
        self.clock = Clock()
        self.clock.advance(1767225600)
        self.sealer = SecretSealer.from_secret_key(OLD_KEY)
        self.signer = CallbackSigner(self.clock, self.state, self.sealer)

    def apply(self, op: str, args: dict) -> Any:
        self.index += 1
        command = Command(op, args)
        result = self.successResultOf(self.state.apply(self.index, command))
        self.signer.on_applied(command, result)
        return result

    def project(self, uuid: str, stored_secret: str) -> None:
        project = {"uuid": uuid, "name": uuid, "description": "", "created_at": T0}
        project["updated_at"] = T0
        result = self.apply("create_project", {"project": project, "signing_secret": stored_secret})
        self.assertTrue(result.ok, result)

    def verifies(self, signer: CallbackSigner, project: str, secret: str) -> bool:
        header = signer.sign(BODY, [_Delivery(project)]).get(HEADER)
        return header is not None and verify(header, BODY, secret, self.clock.seconds())

    def test_sealed_secret_signs(self) -> None:
        """A secret stored sealed signs with its plain value."""
        self.project("p1", self.sealer.seal("one"))
        self.assertTrue(self.verifies(self.signer, "p1", "one"))

    def test_old_plain_text_secret_still_signs(self) -> None:
        """A secret an earlier release stored in plain text keeps signing."""
        self.project("p1", "legacy")
        self.assertTrue(self.verifies(self.signer, "p1", "legacy"))

    def test_reseal_command_reseals_and_keeps_signing(self) -> None:
        """
        The reseal command moves the stored value under the new key; the node,
        which has the old key still, keeps signing with the secret it holds,
        and a node restarted with the new key signs with it too.
        """
        stored = self.sealer.seal("one")
        self.project("p1", stored)
        self.project("p2", "legacy")
        new = SecretSealer.from_secret_key(NEW_KEY)
        entries = [
            {"project_uuid": "p1", "from": stored, "to": self.sealer.reseal(stored, new)},
            {"project_uuid": "p2", "from": "legacy", "to": new.seal("legacy")},
            {"project_uuid": "p2", "from": "gone", "to": new.seal("x")},
        ]
        result = self.apply("reseal_signing_secrets", {"secrets": entries})
        self.assertEqual(result.value, {"resealed": 2, "skipped": 1})
        rows = self.successResultOf(self.state.signing_secrets())
        self.assertEqual(
            {p: [sealed_key_id(v) for v, _ in r] for p, r in rows.items()},
            {"p1": [new.key_id], "p2": [new.key_id]},
        )
        self.assertTrue(self.verifies(self.signer, "p1", "one"))
        self.assertTrue(self.verifies(self.signer, "p2", "legacy"))
        restarted = CallbackSigner(self.clock, self.state, new)
        self.successResultOf(restarted.load())
        self.assertTrue(self.verifies(restarted, "p1", "one"))

    def test_node_with_another_key_cannot_sign(self) -> None:
        """A node started with a SecretKey that did not seal a secret signs without it."""
        self.project("p1", self.sealer.seal("one"))
        other = CallbackSigner(self.clock, self.state, SecretSealer.from_secret_key(NEW_KEY))
        self.successResultOf(other.load())
        self.assertFalse(self.verifies(other, "p1", "one"))
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class NoPlainTextAtRestTests(SynchronousTestCase):
    """Through the API onto real SQLite files: no signing secret is written in plain text."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        pools = [
            SynchronousConnectionPool(os.path.join(self.directory, name))
            for name in ("state.db", "commands.db")
        ]
        for pool in pools:
            self.addCleanup(pool.close)
        clock = Clock()
        state = StateStore(pools[0])
        fired(state.open())
        log = CommandLog(pools[1])
        fired(log.open())
        proposer = LocalProposer(log, state, clock)
        fired(proposer.start())
        self.state, self.proposer = state, proposer
        self.sealer = SecretSealer.from_secret_key(OLD_KEY)
        self.harness = Harness(state=state, proposer=proposer, sealer=self.sealer)

    def post(self, path: str, body: Any, headers: dict) -> tuple[int, Any]:
        response = self.successResultOf(
            self.harness.treq.post(f"http://node{path}", json=body, headers=headers)
        )
        return response.code, self.successResultOf(response.json())

    def file_bytes(self) -> bytes:
        found = b""
        for path in glob.glob(os.path.join(self.directory, "*")):
            with open(path, "rb") as f:
                found += f.read()
        return found

    def test_created_and_rotated_secrets_are_not_in_the_files(self) -> None:
        """The secrets shown on creation and rotation are in no file byte; the rows are sealed."""
        code, created = self.post("/projects", {"name": "alpha"}, self.harness.client_headers)
        self.assertEqual(code, 201, created)
        secret = created["data"]["signing_secret"]
        uuid = created["data"]["uuid"]
        code, rotated = self.post(
            f"/projects/{uuid}/signing-secret", {"grace_s": 60}, self.harness.client_headers
        )
        self.assertEqual(code, 200, rotated)
        second = rotated["data"]["signing_secret"]
        data = self.file_bytes()
        self.assertGreater(len(data), 0)
        self.assertNotIn(secret.encode(), data)
        self.assertNotIn(second.encode(), data)
        rows = fired(self.state.signing_secrets())[uuid]
        self.assertEqual(sorted(self.sealer.open(v) for v, _ in rows), sorted([secret, second]))
        # A snapshot (what a follower installs, and a backup) carries them sealed too.
        image = fired(self.state.snapshot())
        self.assertIn(b"s0seal:v1:", image)
        self.assertNotIn(secret.encode(), image)
        self.assertNotIn(second.encode(), image)

    def test_seal_route_seals_old_rows_and_rotates_the_key(self) -> None:
        """
        POST /signing-secrets/seal seals plain text rows under the node's key;
        with new_secret_key every row moves under the new key; a key it cannot
        open is a 409 naming old_secret_key; with old_secret_key it opens.
        """
        code, created = self.post("/projects", {"name": "alpha"}, self.harness.client_headers)
        uuid = created["data"]["uuid"]
        # A rotation as an earlier release proposed it: the secret in plain text.
        legacy = {"project_uuid": uuid, "secret": "legacy", "at": T0, "expires_at": T0}
        result = fired(self.proposer.propose(Command("rotate_signing_secret", legacy)))
        self.assertTrue(result.ok, result)
        code, answer = self.post("/signing-secrets/seal", {}, basic())
        self.assertEqual(code, 200, answer)
        self.assertEqual(answer["data"]["resealed"], 1)
        self.assertEqual(answer["data"]["key_id"], self.sealer.key_id)
        code, answer = self.post("/signing-secrets/seal", {}, self.harness.client_headers)
        self.assertEqual(code, 401, answer)

        new = SecretSealer.from_secret_key(NEW_KEY)
        code, answer = self.post("/signing-secrets/seal", {"new_secret_key": NEW_KEY}, basic())
        self.assertEqual((code, answer["data"]["resealed"]), (200, 2), answer)
        rows = fired(self.state.signing_secrets())[uuid]
        self.assertEqual({sealed_key_id(v) for v, _ in rows}, {new.key_id})
        self.assertIn("legacy", [new.open(v) for v, _ in rows])

        # The node still has the old key: sealing back needs the new one to open.
        code, answer = self.post("/signing-secrets/seal", {}, basic())
        self.assertEqual(code, 409, answer)
        self.assertIn("old_secret_key", answer["error"]["message"])
        code, answer = self.post("/signing-secrets/seal", {"old_secret_key": NEW_KEY}, basic())
        self.assertEqual((code, answer["data"]["resealed"]), (200, 2), answer)

    def test_seal_route_checks_its_fields(self) -> None:
        """Unknown fields and short keys are 400s naming the field."""
        code, answer = self.post("/signing-secrets/seal", {"new_secret_key": "short"}, basic())
        self.assertEqual(code, 400, answer)
        self.assertIn("new_secret_key", answer["error"]["message"])
        code, answer = self.post("/signing-secrets/seal", {"key": NEW_KEY}, basic())
        self.assertEqual(code, 400, answer)
        self.assertIn("key", answer["error"]["fields"])
