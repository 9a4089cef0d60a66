"""
The cluster: its view (members, leader, term, indexes) and membership
changes (add a member, remove one). A node without Replicas answers a view
of itself and refuses membership changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from scheduler0.api.errors import APIError, FieldErrors, invalid
from scheduler0.api.openapi import MAX_NODE_ID, MEMBER_ADDRESS_PATTERN, RAFT_ADDRESS_PATTERN
from scheduler0.api.ports import Cluster, StateReader
from scheduler0.api.request import Call, maybe


def _single_node() -> APIError:
    return APIError(
        409,
        "cluster: this node runs alone (no Replicas in its config); membership changes "
        "need a cluster",
        {"cluster": "single node"},
        code="conflict",
    )


@attrs.define(eq=False, kw_only=True)
class ClusterResource:
    """The cluster routes; C{health} answers this node's health (a dict, or a Deferred of one)."""

    HANDLERS: ClassVar[tuple[str, ...]] = ("cluster_status", "add_member", "remove_member")

    state: StateReader
    health: Callable[[], Any]
    cluster: Cluster | None = None

    async def cluster_status(self, call: Call) -> dict:
        if self.cluster is not None:
            return await self.cluster.cluster_view()
        health = await maybe(self.health())
        total = sum((await self.state.owner_counts()).values())
        term = health.get("term", 1)
        return {
            "node_id": health.get("node_id"),
            "leader_id": health.get("leader_id", health.get("node_id")),
            "term": term,
            "entry_version": health.get("entry_version"),
            "members": [
                {
                    **member,
                    "voter": True,
                    "reachable": True,
                    "term": term,
                    "commit_index": health.get("commit_index"),
                    "applied_index": health.get("applied_index"),
                    "lease_valid": True,
                    "scheduling_paused": health.get("scheduling_paused", False),
                    "owned_jobs": total,
                }
                for member in health.get("members", ())
            ],
        }

    async def add_member(self, call: Call) -> tuple[int, dict]:
        body = call.object_body()
        errors = FieldErrors()
        unknown = sorted(set(body) - {"node_id", "address", "raft_address"})
        for field in unknown:
            errors.add(field, f"{field}: unknown field")
        node_id = body.get("node_id")
        if isinstance(node_id, float) and node_id.is_integer():
            node_id = int(node_id)  # JSON does not tell 3 from 3.0
        if (
            isinstance(node_id, bool)
            or not isinstance(node_id, int)
            or not 1 <= node_id <= MAX_NODE_ID
        ):
            errors.add("node_id", f"node_id: must be an integer from 1 to {MAX_NODE_ID}")
        address = body.get("address")
        if not isinstance(address, str) or not re.search(MEMBER_ADDRESS_PATTERN, address):
            errors.add("address", "address: must be http://host:port or https://host:port")
        raft_address = body.get("raft_address")
        if not isinstance(raft_address, str) or not re.search(RAFT_ADDRESS_PATTERN, raft_address):
            errors.add("raft_address", "raft_address: must be host:port")
        errors.raise_if_any()
        if self.cluster is None:
            raise _single_node()
        if node_id in self.cluster.member_ids():
            raise APIError(
                409, f"node_id: node {node_id} is already a member", {"node_id": "already a member"}
            )
        await self.cluster.change_members(
            add={"node_id": node_id, "address": address, "raft_address": raft_address}
        )
        return 201, await self.cluster.cluster_view()

    async def remove_member(self, call: Call) -> dict:
        text = call.path["node_id"]
        if not re.fullmatch(r"[1-9][0-9]{0,17}", text):
            raise invalid("node_id", "node_id: must be a positive integer")
        node_id = int(text)
        if self.cluster is None:
            raise _single_node()
        if node_id not in self.cluster.member_ids():
            raise APIError(
                404,
                f"node_id: node {node_id} is not a member",
                {"node_id": "not a member"},
                code="not_found",
            )
        if node_id == self.cluster.leader_id:
            raise APIError(
                409,
                f"node_id: node {node_id} leads the cluster; stop it (another node takes "
                "over) and remove it then",
                {"node_id": "is the leader"},
            )
        await self.cluster.change_members(remove=node_id)
        return await self.cluster.cluster_view()
