"""
Rotating SecretKey carries client credentials over (issue 17, item 4): a
hash made under a key named in PreviousSecretKeys verifies, is replaced by
one under the current key through upgrade_credential_hash on its next use,
and is refused once that key is dropped; the seal route reports how many
hashes are left under previous keys and opens secrets sealed under them.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import closing

from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from harness.process import (
    PEER_PASSWORD,
    PEER_SECRET_KEY,
    PEER_USERNAME,
    client_headers,
    http_client,
    prepare_single_node,
)
from harness.waiting import wait_for
from scheduler0.credentials import (
    AdminCredentials,
    CredentialsError,
    load_admin_credentials,
    read_credentials_file,
    save_admin_credentials,
)
from scheduler0.sealing import SecretSealer, sealed_key_id
from scheduler0.secret_hash import SecretHasher, derive_key, key_id_of
from scheduler0.store.commands import Op
from tests.support.api import ADMIN_PASSWORD, ADMIN_USER, Harness, fired

OLD_KEY = "the-old-secret-key-0123456789"
NEW_KEY = "the-new-secret-key-9876543210"


def rotated_admin(*previous: str) -> AdminCredentials:
    """A node's credentials after the rotation: NEW_KEY, with C{previous} kept."""
    return AdminCredentials(ADMIN_USER, ADMIN_PASSWORD, NEW_KEY, previous)


class HasherTests(SynchronousTestCase):
    def test_previous_keys_verify_and_are_not_current(self) -> None:
        """
        A hash under a previous key verifies as previous, not as current; a
        hash under a key the hasher does not hold is another key's.
        """
        stored = SecretHasher.from_secret_key(OLD_KEY).hash("s3cret")
        hasher = SecretHasher.from_secret_key(NEW_KEY, [OLD_KEY])
        self.assertFalse(hasher.verify("s3cret", stored))
        self.assertTrue(hasher.verify_previous("s3cret", stored))
        self.assertFalse(hasher.verify_previous("wrong", stored))
        self.assertFalse(hasher.current(stored))
        self.assertTrue(hasher.current(hasher.hash("s3cret")))
        self.assertFalse(hasher.other_key(stored))
        self.assertTrue(SecretHasher.from_secret_key(NEW_KEY).other_key(stored))
        self.assertNotIn(derive_key(OLD_KEY).hex(), repr(hasher))

    def test_classify_counts_hashes_by_kind(self) -> None:
        """Counts by key id become current_key / previous_keys / pbkdf2 / unknown_key."""
        old = SecretHasher.from_secret_key(OLD_KEY)
        hasher = SecretHasher.from_secret_key(NEW_KEY, [OLD_KEY])
        counts = {hasher.key_id: 3, old.key_id: 2, None: 1, "ffffffff": 4}
        self.assertEqual(
            hasher.classify(counts),
            {"current_key": 3, "previous_keys": 2, "pbkdf2": 1, "unknown_key": 4},
        )


class RotationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        # Credentials made before the rotation: hashed under OLD_KEY.
        self.old = SecretHasher.from_secret_key(OLD_KEY)
        self.h = Harness(
            admin=rotated_admin(OLD_KEY),
            hash_secret=self.old.hash,
            sealer=SecretSealer.from_secret_key(NEW_KEY, [OLD_KEY]),
        )

    def stored_hash(self, api_key: str) -> str:
        return fired(self.h.state.get_credential_by_key(api_key))["api_secret_hash"]

    def seal(self) -> dict:
        code, _, answer = self.h.request("POST", "/signing-secrets/seal", {}, auth="admin")
        self.assertEqual(code, 200, answer)
        return answer["data"]

    def test_previous_key_hash_verifies_and_moves_to_the_current_key(self) -> None:
        """
        A credential hashed under the previous key is accepted; its use
        proposes upgrade_credential_hash guarded by the old hash, which
        leaves it under the current key; the seal route counts it first under
        previous_keys, then under current_key.
        """
        before = self.stored_hash(self.h.key)
        self.assertEqual(key_id_of(before), self.old.key_id)
        self.assertEqual(self.seal()["credential_hashes"]["previous_keys"], 1)

        code, _, body = self.h.request("GET", "/projects")
        self.assertEqual(code, 200, body)
        upgrades = [c for c in self.h.proposer.proposed if c.op == Op.UPGRADE_CREDENTIAL_HASH]
        self.assertEqual(len(upgrades), 1)
        self.assertEqual(upgrades[0].args["old_hash"], before)
        after = self.stored_hash(self.h.key)
        self.assertTrue(self.h.api.auth.hasher.current(after))
        self.assertEqual(
            self.seal()["credential_hashes"],
            {"current_key": 1, "previous_keys": 0, "pbkdf2": 0, "unknown_key": 0},
        )
        # A node without the previous key verifies it now.
        self.h.api.auth.hasher = SecretHasher.from_secret_key(NEW_KEY)
        self.h.api.auth._live_credentials.clear()
        self.assertEqual(self.h.request("GET", "/projects")[0], 200)

    def test_dropping_the_previous_key_refuses_a_credential_not_yet_moved(self) -> None:
        """A credential never used since the rotation is refused once its key is dropped."""
        self.h.api.auth.hasher = SecretHasher.from_secret_key(NEW_KEY)
        code, _, body = self.h.request("GET", "/projects")
        self.assertEqual(code, 401, body)
        self.assertEqual(key_id_of(self.stored_hash(self.h.key)), self.old.key_id)
        self.assertFalse(
            [c for c in self.h.proposer.proposed if c.op == Op.UPGRADE_CREDENTIAL_HASH]
        )
        warned = [e for e in self.events if "another SecretKey" in str(e.get("log_format"))]
        self.assertEqual(len(warned), 1)

    def test_a_wrong_secret_is_refused_under_a_previous_key(self) -> None:
        """The previous key verifies the right secret only, and proposes nothing otherwise."""
        headers = {"x-api-key": self.h.key, "x-secret-key": "not-the-secret"}
        code, _, body = self.h.request("GET", "/projects", auth="none", headers=headers)
        self.assertEqual(code, 401, body)
        self.assertFalse(self.h.proposer.proposed)

    def test_the_log_never_shows_a_key_or_a_secret(self) -> None:
        """Nothing logged through the rotation holds a key, a derived key or the client secret."""
        self.h.request("GET", "/projects")
        self.h.api.auth.hasher = SecretHasher.from_secret_key(NEW_KEY)
        self.h.api.auth._live_credentials.clear()
        other = fired(self.h.api.create_credential())
        self.h.request(
            "GET",
            "/projects",
            auth="none",
            headers={"x-api-key": other["api_key"], "x-secret-key": other["api_secret"]},
        )
        text = repr(self.events) + repr(self.h.api.admin)
        self.assertTrue(self.events)
        for shown in (OLD_KEY, NEW_KEY, derive_key(OLD_KEY).hex(), self.h.secret):
            self.assertNotIn(shown, text)

    def test_seal_opens_secrets_sealed_under_a_previous_key(self) -> None:
        """
        A signing secret sealed under a previous key opens, and is resealed
        under the current key without old_secret_key.
        """
        old_sealer = SecretSealer.from_secret_key(OLD_KEY)
        new_sealer = SecretSealer.from_secret_key(NEW_KEY)
        self.h.api.project_routes.sealer = old_sealer
        project = self.h.project("made-before")
        self.h.api.project_routes.sealer = SecretSealer.from_secret_key(NEW_KEY, [OLD_KEY])
        # The callback signer's sealer opens it before the reseal, too.
        stored = fired(self.h.state.signing_secrets())[project["uuid"]][0][0]
        self.assertEqual(sealed_key_id(stored), old_sealer.key_id)
        self.assertEqual(self.h.api.project_routes.sealer.open(stored), project["signing_secret"])
        self.assertEqual(self.seal()["resealed"], 1)
        rows = fired(self.h.state.signing_secrets())[project["uuid"]]
        self.assertEqual({sealed_key_id(v) for v, _ in rows}, {new_sealer.key_id})
        self.assertEqual(new_sealer.open(rows[0][0]), project["signing_secret"])


class CredentialsFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.path = os.path.join(self.directory, ".scheduler0")

    def config(self) -> object:
        return type("C", (), {"base_dir": self.directory})()

    def test_previous_keys_round_trip_and_environment_overrides(self) -> None:
        """PreviousSecretKeys is saved and read back; the environment's list replaces it."""
        save_admin_credentials(self.path, rotated_admin(OLD_KEY))
        self.assertEqual(read_credentials_file(self.path)["PreviousSecretKeys"], (OLD_KEY,))
        loaded = load_admin_credentials(self.config(), {})  # type: ignore[arg-type]
        self.assertEqual(loaded, rotated_admin(OLD_KEY))
        environ = {"SCHEDULER0_PREVIOUS_SECRET_KEYS": "first-key-1234567, second-key-1234567"}
        loaded = load_admin_credentials(self.config(), environ)  # type: ignore[arg-type]
        assert loaded is not None
        self.assertEqual(loaded.previous_secret_keys, ("first-key-1234567", "second-key-1234567"))
        self.assertNotIn(OLD_KEY, repr(loaded) + repr(rotated_admin(OLD_KEY)))

    def test_without_previous_keys_the_file_is_as_before(self) -> None:
        """A file without PreviousSecretKeys reads as no previous keys and is written without it."""
        save_admin_credentials(self.path, rotated_admin())
        self.assertNotIn("PreviousSecretKeys", read_credentials_file(self.path))
        loaded = load_admin_credentials(self.config(), {})  # type: ignore[arg-type]
        assert loaded is not None
        self.assertEqual(loaded.previous_secret_keys, ())

    def test_a_bad_list_is_refused_without_echoing_it(self) -> None:
        """PreviousSecretKeys that is not a list of strings is refused, naming it, not its value."""
        with open(self.path, "w") as f:
            f.write(
                f"AuthUsername: a\nAuthPassword: b\nSecretKey: c\nPreviousSecretKeys: {OLD_KEY}\n"
            )
        os.chmod(self.path, 0o600)
        error = self.assertRaises(CredentialsError, read_credentials_file, self.path)
        self.assertIn("PreviousSecretKeys", str(error))
        self.assertNotIn(OLD_KEY, str(error))


class RealNodeRotationTests(TestCase):
    timeout = 90

    async def test_a_restart_with_a_new_key_keeps_credentials_and_secrets(self) -> None:
        """
        A real node restarted with a new SecretKey and the old one in
        PreviousSecretKeys accepts a credential made before, moves its hash
        to the new key in state.db, reseals the old signing secret with a
        plain secrets seal, and still accepts the credential once the
        previous key is dropped; no key reaches the node's log.
        """
        http = http_client(reactor)
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(node.kill)
        await node.start()
        headers = await client_headers(node)
        response = await http.post(node.url + "/projects", json={"name": "r"}, headers=headers)
        self.assertEqual(response.code, 201, await response.text())
        await node.stop()

        path = os.path.join(node.workdir, ".scheduler0")
        save_admin_credentials(
            path, AdminCredentials(PEER_USERNAME, PEER_PASSWORD, NEW_KEY, (PEER_SECRET_KEY,))
        )
        await node.start()
        response = await http.get(node.url + "/projects", headers=headers)
        self.assertEqual(response.code, 200, await response.text())
        new = SecretHasher.from_secret_key(NEW_KEY)
        state_db = os.path.join(node.workdir, "data", "state.db")

        def moved() -> bool:
            with closing(sqlite3.connect(f"file:{state_db}?mode=ro", uri=True)) as db:
                (stored,) = db.execute(
                    "SELECT api_secret_hash FROM credentials WHERE api_key = ?",
                    (headers["x-api-key"],),
                ).fetchone()
            return bool(new.current(stored))

        await wait_for(reactor, moved, timeout=10, what="the hash under the new key")
        response = await http.post(
            node.url + "/signing-secrets/seal",
            json={},
            auth=(PEER_USERNAME, PEER_PASSWORD),
        )
        answer = (await response.json())["data"]
        self.assertEqual(response.code, 200, answer)
        self.assertEqual(answer["resealed"], 1)
        # The node's first credential (printed on its first start) was not
        # used since: it is still under the previous key.
        self.assertEqual(answer["credential_hashes"]["previous_keys"], 1)
        self.assertEqual(answer["credential_hashes"]["current_key"], 1)
        await node.stop()

        save_admin_credentials(path, AdminCredentials(PEER_USERNAME, PEER_PASSWORD, NEW_KEY))
        await node.start()
        response = await http.get(node.url + "/projects", headers=headers)
        self.assertEqual(response.code, 200, await response.text())
        await node.stop()
        logged = ""
        for name in sorted(os.listdir(node.workdir)):
            if name.startswith("node-") and name.endswith(".log"):
                with open(os.path.join(node.workdir, name), encoding="utf-8") as f:
                    logged += f.read()
        self.assertTrue(logged)
        for key in (PEER_SECRET_KEY, NEW_KEY, headers["x-secret-key"]):
            self.assertNotIn(key, logged + node.output)
