"""
Client secrets by keyed hash, pbkdf2 hashes upgraded on use, and the
throttle on failed authentication (issue 17, items 1 and 2), in memory.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.api.auth import UNKNOWN_KEY_SECONDS
from scheduler0.api.limits import FailureThrottle
from scheduler0.metrics import NodeMetrics
from scheduler0.secret_hash import SecretHasher, derive_key, is_keyed
from scheduler0.store.commands import Command, Op
from tests.support.api import Harness, basic, fired


class SecretHasherTests(SynchronousTestCase):
    def test_keyed_hash_round_trip(self) -> None:
        """A secret verifies against its keyed hash; another secret does not."""
        hasher = SecretHasher.from_secret_key("node secret")
        stored = hasher.hash("s3cret")
        self.assertTrue(stored.startswith("hmac-sha256$"))
        self.assertTrue(is_keyed(stored))
        self.assertTrue(hasher.verify("s3cret", stored))
        self.assertFalse(hasher.verify("s3cret!", stored))
        self.assertFalse(hasher.verify("s3cret", "garbage"))

    def test_another_secret_key_does_not_verify(self) -> None:
        """A hash made under another SecretKey is refused, and recognised as such."""
        stored = SecretHasher.from_secret_key("one").hash("s3cret")
        other = SecretHasher.from_secret_key("two")
        self.assertFalse(other.verify("s3cret", stored))
        self.assertTrue(other.other_key(stored))

    def test_derived_key_depends_on_label_and_is_hidden(self) -> None:
        """The derivation has a purpose label, and repr never shows the key."""
        self.assertNotEqual(derive_key("k"), derive_key("k", b"another purpose"))
        self.assertEqual(len(derive_key("k")), 32)
        self.assertNotIn(derive_key("k").hex(), repr(SecretHasher.from_secret_key("k")))


class FailureThrottleTests(SynchronousTestCase):
    def test_throttled_after_allowed_failures_for_a_window(self) -> None:
        """The fifth failure in 10 s throttles the scope for 10 s; only it starts a burst."""
        clock = Clock()
        throttle = FailureThrottle(clock, allowed=5, window=10)
        starts = [throttle.failed("a") for _ in range(5)]
        self.assertEqual(starts, [False] * 4 + [True])
        self.assertEqual(throttle.wait("a"), 10)
        self.assertIsNone(throttle.wait("b"))
        clock.advance(9.5)
        self.assertEqual(throttle.wait("a"), 1)
        clock.advance(0.5)
        self.assertIsNone(throttle.wait("a"))
        # The same burst goes on: throttled again, not reported again.
        self.assertEqual([throttle.failed("a") for _ in range(5)], [False] * 5)
        self.assertEqual(throttle.wait("a"), 10)

    def test_failures_spread_out_never_throttle(self) -> None:
        """Failures further apart than the window do not add up, and quiet scopes are dropped."""
        clock = Clock()
        throttle = FailureThrottle(clock, allowed=2, window=10)
        for _ in range(5):
            throttle.failed("a")
            clock.advance(11)
        self.assertIsNone(throttle.wait("a"))
        throttle.failed("b")
        self.assertEqual(len(throttle), 1)

    def test_zero_turns_it_off(self) -> None:
        """AuthFailureLimit 0: never throttled."""
        throttle = FailureThrottle(Clock(), allowed=0)
        self.assertFalse(any(throttle.failed("a") for _ in range(50)))
        self.assertIsNone(throttle.wait("a"))

    def test_memory_is_bounded(self) -> None:
        """Past max_scopes the least recently seen scopes go."""
        throttle = FailureThrottle(Clock(), max_scopes=100)
        for i in range(1000):
            throttle.failed(f"s{i}")
        self.assertLessEqual(len(throttle), 100)


class _Counting:
    """A state reader that counts credential reads."""

    def __init__(self, store) -> None:
        self.store = store
        self.reads = 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def get_credential_by_key(self, api_key):
        self.reads += 1
        return self.store.get_credential_by_key(api_key)


class ThrottledAuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.metrics = NodeMetrics(Clock(), 1)
        self.h = Harness(metrics=self.metrics)
        self.h.api.auth.throttle = FailureThrottle(self.h.clock)
        self.counting = _Counting(self.h.state)
        self.h.api.auth.state = self.counting
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def wrong(self) -> tuple[int, dict, dict]:
        headers = {"x-api-key": self.h.key, "x-secret-key": "not-the-secret"}
        return self.h.request("GET", "/projects", auth="none", headers=headers)

    def test_wrong_secrets_get_429_with_retry_after_before_any_read(self) -> None:
        """
        Five wrong secrets get 401; the next get 429 with Retry-After, with
        no store read and no hash check; the burst is logged once, without
        the secret or the whole key; /metrics counts failures and 429s.
        """
        self.h.api.auth.hasher = _Refusing(self.h.api.auth.hasher)
        statuses = [self.wrong()[0] for _ in range(5)]
        self.assertEqual(statuses, [401] * 5)
        reads, checks = self.counting.reads, self.h.api.auth.hasher.checks
        for _ in range(20):
            status, headers, body = self.wrong()
            self.assertEqual(status, 429)
            self.assertEqual(headers["retry-after"], "10")
            self.assertEqual(body["error"]["code"], "auth_throttled")
            self.assertIn("x-api-key", body["error"]["fields"])
        self.assertEqual((self.counting.reads, self.h.api.auth.hasher.checks), (reads, checks))
        bursts = [e for e in self.events if "authentication failures" in e.get("log_format", "")]
        self.assertEqual(len(bursts), 2)  # the address and the key, once each
        text = repr(bursts)
        self.assertNotIn("not-the-secret", text)
        self.assertNotIn(self.h.key, text)
        exposition = self.metrics.exposition().decode()
        self.assertIn('scheduler0_auth_failures_total{reason="wrong_secret"} 5.0', exposition)
        self.assertIn('scheduler0_auth_throttled_total{scope="address"} 20.0', exposition)

    def test_the_key_owner_still_gets_in_once_verified(self) -> None:
        """
        A verified credential is served from memory even while its key and
        its address are throttled.
        """
        self.assertEqual(self.h.request("GET", "/projects")[0], 200)
        for _ in range(6):
            self.wrong()
        self.assertEqual(self.wrong()[0], 429)
        self.assertEqual(self.h.request("GET", "/projects")[0], 200)

    def test_throttle_ends_after_the_window(self) -> None:
        """Ten seconds after the burst the same address is answered 401 again."""
        for _ in range(6):
            self.wrong()
        self.h.clock.advance(10)
        self.assertEqual(self.wrong()[0], 401)

    def test_wrong_admin_passwords_are_throttled(self) -> None:
        """Wrong Basic passwords count too; the right one still gets in."""
        for _ in range(5):
            self.h.request("GET", "/credentials", auth="none", headers=basic(password="x"))
        status, headers, _ = self.h.request(
            "GET", "/credentials", auth="none", headers=basic(password="x")
        )
        self.assertEqual((status, headers["retry-after"]), (429, "10"))
        self.assertEqual(self.h.request("GET", "/credentials", auth="admin")[0], 200)

    def test_unknown_key_is_read_once_until_a_credential_is_created(self) -> None:
        """
        An unknown key is looked up once and then refused from memory for a
        few seconds; a credential created in between clears that memory.
        """
        self.h.api.auth.throttle = FailureThrottle(self.h.clock, allowed=0)
        unknown = {"x-api-key": "nobody", "x-secret-key": "x"}
        for _ in range(3):
            status = self.h.request("GET", "/projects", auth="none", headers=unknown)[0]
            self.assertEqual(status, 401)
        self.assertEqual(self.counting.reads, 1)
        self.h.clock.advance(UNKNOWN_KEY_SECONDS)
        self.h.request("GET", "/projects", auth="none", headers=unknown)
        self.assertEqual(self.counting.reads, 2)
        fired(self.h.api.create_credential())
        self.h.request("GET", "/projects", auth="none", headers=unknown)
        self.assertEqual(self.counting.reads, 3)


class _Refusing:
    """A hasher that counts how often a secret is checked."""

    def __init__(self, real: SecretHasher) -> None:
        self.real = real
        self.checks = 0

    def verify(self, secret: str, stored: str) -> bool:
        self.checks += 1
        return self.real.verify(secret, stored)

    def __getattr__(self, name):
        return getattr(self.real, name)


class UpgradeTests(SynchronousTestCase):
    def test_upgrade_applies_only_over_the_old_hash(self) -> None:
        """upgrade_credential_hash changes a hash only while it is the one the proposer saw."""
        h = Harness(legacy_hashes=True)
        old = fired(h.state.get_credential_by_key(h.key))["api_secret_hash"]
        new = h.api.auth.hasher.hash(h.secret)
        args = {"uuid": h.credential_uuid, "old_hash": "stale", "new_hash": new}
        result = fired(h.proposer.propose(Command(Op.UPGRADE_CREDENTIAL_HASH, args)))
        self.assertEqual(result.value["upgraded"], False)
        args["old_hash"] = old
        result = fired(h.proposer.propose(Command(Op.UPGRADE_CREDENTIAL_HASH, args)))
        self.assertEqual(result.value["upgraded"], True)
        self.assertEqual(fired(h.state.get_credential_by_key(h.key))["api_secret_hash"], new)
        args["new_hash"] = "plain"
        result = fired(h.proposer.propose(Command(Op.UPGRADE_CREDENTIAL_HASH, args)))
        self.assertFalse(result.ok)
        self.assertEqual(result.field, "new_hash")

    def test_successful_use_proposes_one_upgrade_and_a_failure_is_logged_once(self) -> None:
        """
        The first successful use of a pbkdf2 credential proposes its keyed
        hash without waiting; a failed proposal is logged once and tried
        again on a later use.
        """
        h = Harness(legacy_hashes=True)
        proposed: list[tuple] = []

        def failing(uuid: str, old: str, new: str):
            proposed.append((uuid, old, new))
            raise RuntimeError("no leader")

        h.api.auth.upgrade_hash = failing
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.assertEqual(h.request("GET", "/projects")[0], 200)
        self.assertEqual(len(proposed), 1)
        self.assertTrue(proposed[0][2].startswith("hmac-sha256$"))
        h.api.auth._live_credentials.clear()
        self.assertEqual(h.request("GET", "/projects")[0], 200)
        self.assertEqual(len(proposed), 2)
        failures = [e for e in events if "keyed hash failed" in e.get("log_format", "")]
        self.assertEqual(len(failures), 1)
        self.assertNotIn(h.secret, repr(events))

    def test_new_credentials_store_the_keyed_hash(self) -> None:
        """POST /credentials stores hmac-sha256$..., which verifies without pbkdf2."""
        h = Harness()
        stored = fired(h.state.get_credential_by_key(h.key))["api_secret_hash"]
        self.assertTrue(stored.startswith("hmac-sha256$"))
        self.assertEqual(h.request("GET", "/projects")[0], 200)
        self.assertEqual(h.verifications, 0)
