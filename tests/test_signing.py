"""
Tests for L{scheduler0.signing}: the callback signature, its verification
recipe, and the signer that follows each project's secrets in the state
machine (the real StateStore, on the synchronous SQLite pool).
"""

from __future__ import annotations

import hashlib
import hmac

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.signing import HEADER, CallbackSigner, signature_header, verify
from scheduler0.store.commands import Command
from scheduler0.store.state import StateStore

T0 = "2026-01-01T00:00:00.000Z"
BODY = b'[{"execution_id":"e1"}]'


@attrs.frozen
class _Delivery:
    project_uuid: str


class SignatureTests(SynchronousTestCase):
    def test_header_is_hmac_of_timestamp_dot_body(self) -> None:
        """v1 is hex HMAC-SHA256 over "<t>." + body, as SPEC §9 says."""
        header = signature_header(["s3cret"], 1700000000, BODY)
        expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
        self.assertEqual(header, f"t=1700000000,v1={expected}")

    def test_verify_accepts_any_listed_secret(self) -> None:
        """A header with several v1 values verifies under each of their secrets."""
        header = signature_header(["new", "old"], 1000, BODY)
        self.assertTrue(verify(header, BODY, "new", now=1000))
        self.assertTrue(verify(header, BODY, "old", now=1000))
        self.assertFalse(verify(header, BODY, "other", now=1000))

    def test_tampering_is_detected(self) -> None:
        """A changed body, a changed t or a changed signature fails verification."""
        header = signature_header(["k"], 1000, BODY)
        self.assertFalse(verify(header, BODY.replace(b"e1", b"e2"), "k", now=1000))
        self.assertFalse(verify(header.replace("t=1000", "t=1001"), BODY, "k", now=1000))
        flipped = header[:-1] + ("0" if header[-1] != "0" else "1")
        self.assertFalse(verify(flipped, BODY, "k", now=1000))
        self.assertFalse(verify("v1=abc", BODY, "k", now=1000))

    def test_old_timestamps_are_refused(self) -> None:
        """A signature older (or newer) than the tolerance fails: a replay is refused."""
        header = signature_header(["k"], 1000, BODY)
        self.assertTrue(verify(header, BODY, "k", now=1300, tolerance_s=300))
        self.assertFalse(verify(header, BODY, "k", now=1301, tolerance_s=300))
        self.assertFalse(verify(header, BODY, "k", now=699, tolerance_s=300))


class SignerTests(SynchronousTestCase):
    def setUp(self) -> None:
        pool = SynchronousConnectionPool(":memory:")
        self.addCleanup(pool.close)
        self.state = StateStore(pool)
        self.successResultOf(self.state.open())
        self.index = 0
        self.clock = Clock()
        self.clock.advance(1767225600)  # 2026-01-01T00:00:00Z
        self.signer = CallbackSigner(self.clock, self.state)

    def apply(self, op: str, args: dict) -> dict:
        self.index += 1
        command = Command(op, args)
        result = self.successResultOf(self.state.apply(self.index, command))
        self.signer.on_applied(command, result)
        return result

    def project(self, uuid: str, secret: str) -> None:
        project = {
            "uuid": uuid,
            "name": uuid,
            "description": "",
            "created_at": T0,
            "updated_at": T0,
        }
        self.assertTrue(
            self.apply("create_project", {"project": project, "signing_secret": secret}).ok
        )

    def header(self, *projects: str) -> str | None:
        return self.signer.sign(BODY, [_Delivery(p) for p in projects]).get(HEADER)

    def test_signs_with_the_project_secret(self) -> None:
        """A body of one project's executions is signed with that project's secret."""
        self.project("p1", "one")
        self.project("p2", "two")
        header = self.header("p1")
        now = self.clock.seconds()
        self.assertTrue(verify(header, BODY, "one", now))
        self.assertFalse(verify(header, BODY, "two", now))

    def test_mixed_body_carries_each_project_signature(self) -> None:
        """A body shared by two projects' executions (same URL) verifies under either secret."""
        self.project("p1", "one")
        self.project("p2", "two")
        header = self.header("p1", "p2", "p1")
        now = self.clock.seconds()
        self.assertTrue(verify(header, BODY, "one", now))
        self.assertTrue(verify(header, BODY, "two", now))

    def test_rotation_keeps_the_old_secret_for_its_grace(self) -> None:
        """After a rotation both secrets sign until the grace ends; then only the new one."""
        self.project("p1", "old")
        result = self.apply(
            "rotate_signing_secret",
            {
                "project_uuid": "p1",
                "secret": "new",
                "at": "2026-01-01T00:00:00.000Z",
                "expires_at": "2026-01-01T00:01:00.000Z",
            },
        )
        self.assertTrue(result.ok, result)
        self.clock.advance(59)
        header = self.header("p1")
        self.assertTrue(verify(header, BODY, "new", self.clock.seconds()))
        self.assertTrue(verify(header, BODY, "old", self.clock.seconds()))
        self.clock.advance(2)
        header = self.header("p1")
        self.assertTrue(verify(header, BODY, "new", self.clock.seconds()))
        self.assertFalse(verify(header, BODY, "old", self.clock.seconds()))

    def test_rotation_of_unknown_project_is_rejected(self) -> None:
        """Rotating the secret of a project that does not exist changes nothing."""
        before = self.successResultOf(self.state.dump())
        result = self.apply(
            "rotate_signing_secret",
            {"project_uuid": "nope", "secret": "s", "at": T0, "expires_at": T0},
        )
        self.assertEqual((result.ok, result.code), (False, "not_found"))
        after = self.successResultOf(self.state.dump())
        del before["meta"], after["meta"]
        self.assertEqual(before, after)

    def test_deleted_project_signs_nothing(self) -> None:
        """Deleting a project drops its secrets; a project without secrets sends no header."""
        self.project("p1", "one")
        self.assertTrue(self.apply("delete_project", {"uuid": "p1"}).ok)
        self.assertIsNone(self.header("p1"))
        self.assertEqual(self.successResultOf(self.state.signing_secrets()), {})

    def test_signer_loads_what_is_stored(self) -> None:
        """A new signer (a restarted node) loads the secrets from the state machine."""
        self.project("p1", "one")
        fresh = CallbackSigner(self.clock, self.state)
        self.successResultOf(fresh.load())
        header = fresh.sign(BODY, [_Delivery("p1")])[HEADER]
        self.assertTrue(verify(header, BODY, "one", self.clock.seconds()))
