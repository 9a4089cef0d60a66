"""
Role boundaries of the HTTP API: every route of the route table, called by
every kind of caller — nobody, a wrong key, a wrong admin password, an
archived credential, a live client credential and the admin — gets the
answer its role allows, and a refused call changes nothing stored.
"""

from __future__ import annotations

import re
from base64 import b64encode

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.api.routes import ADMIN, ANONYMOUS, CLIENT, PREFIXES, ROUTES
from tests.support.api import Harness

# A body each writing route accepts, so that an allowed caller gets past
# validation and a refusal can only come from authentication.
_BODIES = {
    "create_project": {"name": "role test"},
    "update_project": {"description": "changed"},
    "create_jobs": None,  # filled in with the project's uuid
    "update_job": {"paused": True},
    "post_credential": {},
    "rotate_signing_secret": {},
    "add_member": {
        "node_id": 4,
        "address": "http://127.0.0.1:9094",
        "raft_address": "127.0.0.1:7074",
    },
}


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


class RoleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.project = self.h.project("roles")
        self.job = self.h.job(self.project["uuid"])
        # A second credential, archived: it must open nothing.
        status, _, body = self.h.request("POST", "/credentials", {}, auth="admin")
        assert status == 201, body
        self.archived = body["data"]
        self.h.request("DELETE", f"/credentials/{self.archived['uuid']}", auth="admin")

    def path_for(self, route_path: str, prefix: str) -> str:
        values = {
            "uuid": self.job["uuid"] if "/jobs/" in route_path else self.project["uuid"],
            "node_id": "2",
        }
        if route_path.startswith("/credentials/"):
            values["uuid"] = self.archived["uuid"]
        return prefix + re.sub(
            r"<(?:[a-z_]+:)?([a-z_]+)>", lambda m: values[m.group(1)], route_path
        )

    def body_for(self, handler: str) -> object:
        if handler == "create_jobs":
            return {
                "project_uuid": self.project["uuid"],
                "name": "role job",
                "spec": "@every 1h",
                "callback_url": "http://127.0.0.1:9/cb",
            }
        return _BODIES.get(handler)

    def call(self, route, prefix: str, caller: str):
        headers: dict = {}
        auth = "none"
        if caller == "client":
            auth = "client"
        elif caller == "admin":
            auth = "admin"
        elif caller == "wrong key":
            headers = {"x-api-key": self.h.key, "x-secret-key": "wrong"}
        elif caller == "unknown key":
            headers = {"x-api-key": "nobody", "x-secret-key": "nothing"}
        elif caller == "wrong admin":
            headers = _basic("admin", "not the password")
        elif caller == "archived":
            headers = {
                "x-api-key": self.archived["api_key"],
                "x-secret-key": self.archived["api_secret"],
            }
        body = self.body_for(route.handler)
        kwargs = {} if body is None or route.method in ("GET", "DELETE") else {"body": body}
        return self.h.request(
            route.method, self.path_for(route.path, prefix), headers=headers, auth=auth, **kwargs
        )

    def test_refused_callers_get_401_and_change_nothing(self) -> None:
        """
        Nobody, a wrong secret, an unknown key, a wrong admin password and an
        archived credential get 401 on every route but the health checks, and
        nothing stored changes.
        """
        before = self.h.dump()
        checked = 0
        for route in ROUTES:
            for prefix in PREFIXES:
                for caller in ("anonymous", "wrong key", "unknown key", "wrong admin", "archived"):
                    status, _, body = self.call(route, prefix, caller)
                    where = f"{caller} {route.method} {prefix}{route.path}"
                    if route.auth == ANONYMOUS:
                        self.assertEqual(status, 200, where)
                    else:
                        self.assertEqual(status, 401, f"{where}: {body}")
                        self.assertIs(body["success"], False, where)
                    checked += 1
        self.assertEqual(self.h.dump(), before)
        self.assertGreater(checked, 5 * 2 * 20)

    def test_clients_are_kept_off_admin_routes(self) -> None:
        """A live client credential gets 401 on every admin route and in on every client route."""
        admin_routes = [r for r in ROUTES if r.auth == ADMIN]
        self.assertTrue(admin_routes)
        before = self.h.dump()
        for route in admin_routes:
            status, _, body = self.call(route, "", "client")
            self.assertEqual(status, 401, f"{route.method} {route.path}: {body}")
        self.assertEqual(self.h.dump(), before)
        for route in ROUTES:
            if route.auth != CLIENT:
                continue
            status, _, body = self.call(route, "/api/v1", "client")
            self.assertNotIn(status, (401, 403), f"{route.method} {route.path}: {body}")

    def test_admin_reaches_every_route(self) -> None:
        """The admin (HTTP Basic from .scheduler0) is let in everywhere."""
        for route in ROUTES:
            status, _, body = self.call(route, "", "admin")
            self.assertNotIn(status, (401, 403), f"{route.method} {route.path}: {body}")

    def test_credential_routes_are_admin_only(self) -> None:
        """Managing credentials is an admin route, whatever the table says about others."""
        credential_routes = [r for r in ROUTES if r.path.startswith("/credentials")]
        self.assertEqual(
            sorted(r.method for r in credential_routes), ["DELETE", "GET", "GET", "POST"]
        )
        for route in credential_routes:
            self.assertEqual(route.auth, ADMIN, f"{route.method} {route.path}")
        self.assertEqual(
            [r.handler for r in ROUTES if r.auth == ANONYMOUS], ["health_check", "liveness"]
        )
