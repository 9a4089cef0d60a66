"""
The audit log (admin only): every user write, newest first, with filters
(who, which object, which op, through which node, when) and cursor pages.
The records are in the replicated state (L{scheduler0.store.audit}), so any
node answers with the same log.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from scheduler0.api.errors import invalid
from scheduler0.api.ports import StateReader
from scheduler0.api.request import Call
from scheduler0.api.validation import encode_cursor

#: The query parameters that filter the log, as the store names them.
AUDIT_FILTERS = ("actor", "object", "op", "via", "since", "until")


@attrs.define(eq=False, kw_only=True)
class AuditResource:
    """The audit route."""

    HANDLERS: ClassVar[tuple[str, ...]] = ("list_audit",)

    state: StateReader

    async def list_audit(self, call: Call) -> dict[str, Any]:
        limit, offset = call.query["limit"], call.query["offset"]
        after = call.query.get("after")
        before_seq = None
        if after is not None:
            if not after[1].isdigit():
                raise invalid("cursor", "cursor: is not a cursor of the audit log")
            before_seq = int(after[1])
        filters = {name: call.query.get(name) for name in AUDIT_FILTERS}
        items, total, more = await self.state.audit_page(filters, limit, before_seq, offset)
        cursor = None
        if more and items:
            last = items[-1]
            cursor = encode_cursor(offset + len(items), (last["at"], str(last["seq"])))
        return {
            "items": items,
            "total": total,
            "limit": limit,
            "offset": offset,
            "next_cursor": cursor,
        }
