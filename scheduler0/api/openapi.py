"""
The OpenAPI 3.1 document, generated from the route table the application
registers, so it describes exactly the routes that are served.
"""

from __future__ import annotations

from typing import Any

from scheduler0.api.routes import (
    ADMIN,
    ANONYMOUS,
    CLIENT,
    DEFAULT_NEXT,
    MAX_NEXT,
    ROUTES,
    Param,
    Route,
)
from scheduler0.api.scope import COMPUTES, NO_PROJECT, ROUTE_SCOPES
from scheduler0.api.scope import ROLES as SCOPE_ROLES
from scheduler0.api.validation import (
    MAX_CATCH_UP_WINDOW_S,
    MAX_DESCRIPTION_LENGTH,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    MAX_RETRY_DELAY_S,
    MAX_RETRY_MAX,
    MAX_SPEC_LENGTH,
    MAX_TIMEOUT_S,
    MAX_URL_LENGTH,
    encode_cursor,
)
from scheduler0.labels import KEY_PATTERN, MAX_LABELS, SELECTOR_PATTERN, VALUE_PATTERN
from scheduler0.model import CONCURRENCY_POLICIES, EXECUTION_STATES
from scheduler0.readiness import CODES as READINESS_CODES
from scheduler0.versions import RELEASE

MAX_JOBS_PER_REQUEST = 10_000

# Formats of our own for the three inputs whose validity no JSON Schema
# keyword states exactly (a cron grammar with ranges and calendars, the
# node's IANA zone database, a token this API issued). Under OpenAPI 3.1 an
# unknown format is an annotation: the pattern states the shape, the
# format's description the rest. harness/schemathesis_hooks.py tells a
# generator what values of each format are valid.
SPEC_FORMAT = "scheduler0-spec"
CURSOR_FORMAT = "scheduler0-cursor"
# The shape of a spec: a macro, @every with a duration, @at with an
# instant, or 5 or 6 cron fields of digits, names, and * , - / ? L W #.
SPEC_PATTERN = (
    r"^[ \t]*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|@every[ \t]+[0-9][0-9A-Za-z. ]*"
    r"|@at[ \t]+[0-9]{4}-[0-9]{2}-[0-9]{2}T\S+"
    r"|[0-9A-Za-z*,/?#-]+([ \t]+[0-9A-Za-z*,/?#-]+){4,5})[ \t]*$"
)

TIMEZONE_FORMAT = "iana-timezone"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


_INSTANT = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339 instant in UTC, milliseconds.",
}
_NULLABLE_INSTANT = {"type": ["string", "null"], "format": "date-time"}
_UUID = {"type": "string", "format": "uuid"}
# The API refuses blank names, specs and zones: empty, or only characters
# Python's str.strip() removes, which are not quite ECMA's \s (they include
# \x1c-\x1f and \x85, not \ufeff). So at least one character outside them.
_PYTHON_SPACE = r"\t-\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NOT_BLANK = f"[^{_PYTHON_SPACE}]"
# Query integers are at most 18 digits long.
MAX_QUERY_INTEGER = 10**18 - 1

_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": _NOT_BLANK}

_URL = {
    "type": "string",
    "format": "uri",
    "maxLength": MAX_URL_LENGTH,
    "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#]",
    "description": "An absolute http:// or https:// URL naming a host.",
}
_RETRY_DELAY = {"type": "number", "minimum": 0, "maximum": MAX_RETRY_DELAY_S}

_JOB_WRITABLE = {
    "project_uuid": {**_UUID, "maxLength": MAX_ID_LENGTH},
    "name": _NAME,
    "spec": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_SPEC_LENGTH,
        "format": SPEC_FORMAT,
        "pattern": SPEC_PATTERN,
        "description": (
            "Format scheduler0-spec: a 5-field cron (minute hour day-of-month month "
            "day-of-week) or 6 fields (second first), each a list of values, ranges and steps "
            "within the field's bounds; @yearly, @annually, @monthly, @weekly, @daily, "
            "@midnight or @hourly; @every <duration> (e.g. 90m, 1h30m; at least 1 s); or "
            "@at <RFC 3339 instant> not in the past. The pattern states the shape; a value "
            "of that shape outside these rules is refused with 400 naming spec."
        ),
    },
    "callback_url": _URL,
    "data": {"description": "Any JSON value, sent with every execution. Default null."},
    "timezone": {
        "type": "string",
        "format": TIMEZONE_FORMAT,
        "minLength": 1,
        "maxLength": MAX_NAME_LENGTH,
        "examples": ["UTC", "Europe/Berlin"],
        "description": "Format iana-timezone: a zone name of the node's IANA database (e.g. "
        "UTC, Europe/Berlin) for cron specs; another name is refused with 400 naming "
        "timezone. Default UTC.",
    },
    "execution_type": {"type": "string", "enum": ["http"]},
    "paused": {"type": "boolean"},
    "catch_up_window_s": {"type": "number", "minimum": 0, "maximum": MAX_CATCH_UP_WINDOW_S},
    "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
    "retry_max": {"type": "integer", "minimum": 0, "maximum": MAX_RETRY_MAX},
    "retry_delay_s": {
        **_RETRY_DELAY,
        "description": "Seconds before the first retry, doubling per attempt. Default: "
        "JobExecutionRetryDelay.",
    },
    "retry_max_delay_s": {
        **_RETRY_DELAY,
        "description": "The longest wait between attempts: at least retry_delay_s (the one "
        "given with it, else the job's or the default), else 400 naming retry_max_delay_s. "
        "Default: JobExecutionRetryMaxDelay.",
    },
    "concurrency_policy": {
        "type": "string",
        "enum": list(CONCURRENCY_POLICIES),
        "description": "A slot due while the job's previous execution still runs: allow "
        "(default) sends it too, forbid records it skipped (still_running), replace abandons "
        "the running attempt and sends the new slot.",
    },
    "coalesce": {
        "type": "boolean",
        "description": "Slots missed during an outage or pause are sent as one execution, the "
        "latest; the others are recorded skipped (coalesced). Default false.",
    },
    "labels": {
        "type": "object",
        "maxProperties": MAX_LABELS,
        "propertyNames": {"type": "string", "pattern": KEY_PATTERN},
        "additionalProperties": {"type": "string", "pattern": VALUE_PATTERN},
        "description": "Labels for selecting jobs (GET /jobs?selector=...), Kubernetes' rules: "
        "a key is a name (at most 63 letters, digits, '-', '_' and '.', starting and ending "
        "with a letter or digit), optionally after a DNS subdomain prefix (at most 253 "
        "characters) and '/'; a value is empty or shaped like a name. At most 64. A change "
        "replaces all of a job's labels. Default {}.",
    },
}
_NOTIFY_URL = {
    **_URL,
    "type": ["string", "null"],
    "description": "Where notices of the project's failed executions are POSTed (null: "
    "nowhere). An absolute http:// or https:// URL naming a host.",
}

_PAGE_KEYS = {
    "total": {"type": "integer"},
    "limit": {"type": "integer"},
    "offset": {"type": "integer"},
    "next_cursor": {"type": ["string", "null"]},
}


def _closed(properties: dict) -> dict:
    """
    An object schema with exactly C{properties}, all present: what the API
    answers has no optional and no extra fields, so a leaked field (a secret
    hash, say) or a missing one does not match the document.
    """
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(properties),
        "properties": properties,
    }


def _page(item: str) -> dict:
    return _closed({"items": {"type": "array", "items": _ref(item)}, **_PAGE_KEYS})


_PROJECT = {
    "uuid": _UUID,
    "name": {"type": "string"},
    "description": {"type": "string"},
    "created_at": _INSTANT,
    "updated_at": _INSTANT,
    "notify_url": _NOTIFY_URL,
    "paused": {
        "type": "boolean",
        "description": "A paused project fires none of its jobs; each keeps its own paused.",
    },
}
_NULLABLE_INTEGER = {"type": ["integer", "null"]}
_NULLABLE_STRING = {"type": ["string", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_SCOPE = {
    "projects": {
        "type": ["array", "null"],
        "items": {"type": "string"},
        "description": "The projects it may touch (null: all).",
    },
    "role": {"enum": list(SCOPE_ROLES), "description": "read, or write (read and write)."},
}


MAX_NODE_ID = 2**63 - 1
MEMBER_ADDRESS_PATTERN = r"^https?://[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$"
RAFT_ADDRESS_PATTERN = r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$"

SCHEMAS: dict[str, Any] = {
    "Error": _closed(
        {
            "success": {"const": False},
            "data": {"type": "null"},
            "error": _closed(
                {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                }
            ),
        }
    ),
    "Health": {
        "type": "object",
        "description": (
            "Node id, role, leader, term, indexes, members, paused state, whether the node is "
            "ready and why not; more diagnostic fields may follow."
        ),
        "required": [
            "node_id",
            "role",
            "leader_id",
            "leader_address",
            "term",
            "commit_index",
            "applied_index",
            "members",
            "scheduling_paused",
            "pause_reason",
            "ready",
            "reasons",
        ],
        "properties": {
            "node_id": {"type": "integer"},
            "version": {"type": "string"},
            "role": {"type": "string"},
            "leader_id": _NULLABLE_INTEGER,
            "leader_address": _NULLABLE_STRING,
            "term": {"type": "integer"},
            "commit_index": {"type": "integer"},
            "applied_index": {"type": "integer"},
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["node_id", "address", "raft_address", "role", "last_contact"],
                    "properties": {
                        "node_id": {"type": "integer"},
                        "address": {"type": "string"},
                        "raft_address": {"type": "string"},
                        "role": {
                            "type": "string",
                            "description": (
                                "leader, follower, learner, ... as this node sees it; "
                                "unreachable when it has not heard from the member within an "
                                "election timeout."
                            ),
                        },
                        "voter": {"type": "boolean"},
                        "reachable": {"type": "boolean"},
                        "last_contact": {
                            "type": ["number", "null"],
                            "description": "Seconds since the leader last heard from it.",
                        },
                    },
                },
            },
            "lease_valid": {
                "type": "boolean",
                "description": "Cluster only: whether this node may fire its jobs now.",
            },
            "scheduling_paused": {"type": "boolean"},
            "pause_reason": _NULLABLE_STRING,
            "entry_version": {
                "type": ["integer", "null"],
                "description": (
                    "The entry version the cluster writes, as this node has applied it "
                    "(README, Upgrading)."
                ),
            },
            "reads_entry_version": {
                "type": "integer",
                "description": "The newest entry version this node's release reads.",
            },
            "ready": {
                "type": "boolean",
                "description": "This node can serve writes and fire its jobs (200, else 503).",
            },
            "reasons": {
                "type": "array",
                "description": "Why it is not ready (empty when it is).",
                "items": _closed(
                    {
                        "code": {"type": "string", "enum": list(READINESS_CODES)},
                        "message": {"type": "string"},
                    }
                ),
            },
        },
    },
    "Live": _closed({"live": {"const": True}, "node_id": {"type": "integer"}}),
    "MemberInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["node_id", "address", "raft_address"],
        "properties": {
            "node_id": {"type": "integer", "minimum": 1, "maximum": MAX_NODE_ID},
            "address": {
                "type": "string",
                "pattern": MEMBER_ADDRESS_PATTERN,
                "description": "http(s)://host:port of its API.",
            },
            "raft_address": {
                "type": "string",
                "pattern": RAFT_ADDRESS_PATTERN,
                "description": "host:port of its Raft listener.",
            },
        },
    },
    "Cluster": {
        "type": "object",
        "description": "The cluster as the asked node sees it; more fields may follow.",
        "required": ["node_id", "leader_id", "term", "members"],
        "properties": {
            "node_id": {"type": "integer"},
            "leader_id": _NULLABLE_INTEGER,
            "term": {"type": "integer"},
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["node_id", "address", "raft_address", "role", "voter"],
                    "properties": {
                        "node_id": {"type": "integer"},
                        "address": {"type": "string"},
                        "raft_address": {"type": "string"},
                        "role": {"type": "string"},
                        "voter": {"type": "boolean"},
                        "reachable": {"type": "boolean"},
                        "term": _NULLABLE_INTEGER,
                        "commit_index": _NULLABLE_INTEGER,
                        "applied_index": _NULLABLE_INTEGER,
                        "lease_valid": {"type": ["boolean", "null"]},
                        "scheduling_paused": {"type": ["boolean", "null"]},
                        "owned_jobs": {"type": "integer"},
                        "last_contact": {
                            "type": ["number", "null"],
                            "description": (
                                "Seconds since the leader last heard from it (granted it a "
                                "lease), whichever member answers; null when unknown."
                            ),
                        },
                        "release": _NULLABLE_STRING,
                        "reads_entry_version": {
                            "type": ["integer", "null"],
                            "description": (
                                "The newest entry version the member reads (1: a release "
                                "before entry versions; null: it did not answer)."
                            ),
                        },
                    },
                },
            },
            "entry_version": {
                "type": ["integer", "null"],
                "description": "The entry version the cluster writes (README, Upgrading).",
            },
        },
    },
    "ProjectInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": _NAME,
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH},
            "notify_url": _NOTIFY_URL,
            "paused": {"type": "boolean", "description": "Create it paused (default false)."},
        },
    },
    "ProjectPatch": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": _NAME,
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH},
            "notify_url": {**_NOTIFY_URL, "description": "null removes it."},
            "paused": {
                "type": "boolean",
                "description": (
                    "Pause (true) or resume (false) every job of the project; each job keeps "
                    "its own paused. Resumed jobs owe no slot of the pause."
                ),
            },
        },
    },
    "Project": _closed(_PROJECT),
    "NewProject": _closed(
        {
            **_PROJECT,
            "signing_secret": {
                "type": "string",
                "description": "Signs this project's callbacks; shown only in this response.",
            },
        }
    ),
    "SigningSecretInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "grace_s": {
                "type": "number",
                "minimum": 0,
                "maximum": 30 * 86400,
                "description": "Seconds the previous secret keeps signing (default from config).",
            },
        },
    },
    "SigningSecret": _closed(
        {
            "project_uuid": _UUID,
            "signing_secret": {"type": "string", "description": "Shown only in this response."},
            "previous_expires_at": _INSTANT,
        }
    ),
    "SealInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "new_secret_key": {
                "type": "string",
                "minLength": 16,
                "description": "Seal under this key (the next SecretKey) instead of this node's.",
            },
            "old_secret_key": {
                "type": "string",
                "minLength": 16,
                "description": "Opens secrets still sealed under a previous SecretKey.",
            },
        },
    },
    "SealResult": _closed(
        {
            "resealed": {"type": "integer", "minimum": 0},
            "skipped": {"type": "integer", "minimum": 0},
            "key_id": {"type": "string", "description": "The id of the key now sealing them."},
            "credential_hashes": {"type": "object", "additionalProperties": {"type": "integer"}},
        }
    ),
    "ProjectPage": _page("Project"),
    "ProjectDeleted": _closed({"uuid": _UUID, "deleted_jobs": {"type": "array", "items": _UUID}}),
    "Deleted": _closed({"uuid": _UUID}),
    "BulkResult": _closed(
        {
            "action": {"type": "string", "enum": ["pause", "resume", "delete"]},
            "selector": {"type": "string", "description": "The selector, in canonical form."},
            "count": {"type": "integer", "minimum": 0},
            "uuids": {"type": "array", "items": _UUID, "description": "The jobs changed."},
            "more": {
                "type": "boolean",
                "description": "More jobs were selected than one request changes.",
            },
        }
    ),
    "JobInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["project_uuid", "name", "spec", "callback_url"],
        "properties": _JOB_WRITABLE,
    },
    "JobInputOrList": {
        "oneOf": [
            _ref("JobInput"),
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_JOBS_PER_REQUEST,
                "items": _ref("JobInput"),
            },
        ]
    },
    "JobPatch": {"type": "object", "additionalProperties": False, "properties": _JOB_WRITABLE},
    "SchedulePreviewInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["spec"],
        "properties": {
            "spec": _JOB_WRITABLE["spec"],
            "timezone": _JOB_WRITABLE["timezone"],
            "n": {"type": "integer", "minimum": 1, "maximum": MAX_NEXT, "default": DEFAULT_NEXT},
        },
    },
    "Job": _closed(
        {
            "uuid": _UUID,
            **_JOB_WRITABLE,
            "created_at": _INSTANT,
            "updated_at": _INSTANT,
            "anchor_at": {
                **_INSTANT,
                "description": "Where @every slots count from (creation or last spec change).",
            },
            "next_run_at": _NULLABLE_INSTANT,
            "last_run_at": _NULLABLE_INSTANT,
            "last_status": {"type": ["string", "null"], "enum": [*EXECUTION_STATES, None]},
        }
    ),
    "JobOrList": {"oneOf": [_ref("Job"), {"type": "array", "items": _ref("Job")}]},
    "JobPage": _page("Job"),
    "NextRuns": _closed(
        {
            "items": {
                "type": "array",
                "items": _closed(
                    {
                        "utc": _INSTANT,
                        "local": {
                            "type": "string",
                            "description": "RFC 3339 with the job zone's offset.",
                        },
                    }
                ),
            },
            "timezone": {"type": "string"},
            "paused": {
                "type": "boolean",
                "description": "A paused job fires none of these until resumed.",
            },
        }
    ),
    "Execution": _closed(
        {
            "execution_id": {"type": "string"},
            "job_uuid": _UUID,
            "project_uuid": {**_UUID, "type": ["string", "null"]},
            "scheduled_at": _INSTANT,
            "state": {"type": "string", "enum": list(EXECUTION_STATES)},
            "attempts": {"type": "integer"},
            "node_id": _NULLABLE_INTEGER,
            "started_at": _NULLABLE_INSTANT,
            "finished_at": _NULLABLE_INSTANT,
            "status_code": _NULLABLE_INTEGER,
            "error": _NULLABLE_STRING,
            "skip_reason": _NULLABLE_STRING,
            "response_body": {
                "type": ["string", "null"],
                "description": "The first bytes (CallbackResponseExcerptBytes) of the answer "
                "to a failed attempt, as text; null when there is none.",
            },
        },
    ),
    # missing_nodes: in a cluster, the members whose records could not be
    # read for this page (always empty on a single node).
    "ExecutionPage": _closed(
        {
            "items": {"type": "array", "items": _ref("Execution")},
            **_PAGE_KEYS,
            "missing_nodes": {"type": "array", "items": {"type": "integer"}},
        }
    ),
    "ExecutionSummary": _closed(
        {
            "minutes": {"type": "integer", "minimum": 1, "maximum": 60},
            "buckets": {
                "type": "array",
                "description": "One per minute, oldest first; the last is the current minute.",
                "items": _closed(
                    {
                        "at": {**_INSTANT, "description": "The minute's start (UTC)."},
                        "succeeded": _COUNT,
                        "failed": _COUNT,
                        "skipped": _COUNT,
                        "started": {
                            **_COUNT,
                            "description": "First callback attempts that began in the minute.",
                        },
                        "lateness_sum_s": {
                            "type": "number",
                            "description": "Sum of those attempts' start minus slot instant.",
                        },
                        "lateness_max_s": {"type": "number"},
                    }
                ),
            },
            "totals": _closed(
                {"succeeded": _COUNT, "failed": _COUNT, "skipped": _COUNT, "started": _COUNT}
            ),
            "lateness": _closed(
                {
                    "bounds_s": {"type": "array", "items": {"type": "number"}},
                    "counts": {
                        "type": "array",
                        "items": _COUNT,
                        "description": (
                            "len(bounds_s) + 1 counts, not cumulative: counts[i] holds "
                            "bounds_s[i-1] < lateness <= bounds_s[i]; the last, lateness over "
                            "the last bound."
                        ),
                    },
                }
            ),
            "nodes": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "Nodes whose counts are in the summary.",
            },
            "missing_nodes": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "Members that did not answer in time (their counts are missing).",
            },
        }
    ),
    "CredentialInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "projects": {
                "type": ["array", "null"],
                "minItems": 1,
                "items": {"type": "string", "minLength": 1},
                "description": "The projects the credential may touch (absent or null: all).",
            },
            "role": {
                "type": ["string", "null"],
                "enum": [*SCOPE_ROLES, None],
                "description": "read, or write (read and write; the default).",
            },
        },
    },
    "Credential": _closed(
        {
            "uuid": _UUID,
            "api_key": {"type": "string"},
            "created_at": _INSTANT,
            "archived_at": _NULLABLE_INSTANT,
            **_SCOPE,
        }
    ),
    "NewCredential": _closed(
        {
            "uuid": _UUID,
            "api_key": {"type": "string"},
            "api_secret": {"type": "string", "description": "Shown only in this response."},
            "created_at": _INSTANT,
            **_SCOPE,
        }
    ),
    "CredentialPage": _page("Credential"),
    # Issue 19: the audit log.
    "AuditRecord": _closed(
        {
            "seq": {"type": "integer", "description": "The write's place in the log."},
            "at": _INSTANT,
            "actor": {"type": "string", "description": "admin, or the credential's uuid."},
            "actor_key": {
                "type": ["string", "null"],
                "description": "The first characters of the credential's API key.",
            },
            "via": {"type": ["integer", "null"], "description": "The node it came through."},
            "method": {"type": ["string", "null"]},
            "route": {"type": ["string", "null"]},
            "op": {"type": "string"},
            "object_type": {"type": ["string", "null"]},
            "object_uuid": _NULLABLE_STRING,
            "object_uuids": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The first objects written (at most 10).",
            },
            "object_count": _COUNT,
            "outcome": {"enum": ["applied", "refused"]},
            "code": _NULLABLE_STRING,
        }
    ),
    "AuditPage": _page("AuditRecord"),
}

_ERROR_STATUSES = {
    "400": "Invalid input; error.fields names each offending field.",
    "401": "Missing or wrong credentials (on an admin route: anything but admin Basic auth).",
    "403": (
        "Outside the client credential's scope (its projects and role): the message names "
        "the scope and what the call needed (code forbidden)."
    ),
    "404": "Unknown resource or route.",
    "405": "Method not allowed on this path.",
    "409": "Conflict with stored state.",
    "413": "Body or array too large.",
    "415": "Body is not application/json.",
    "429": "Too many requests or failed authentications; retry after Retry-After seconds.",
    "500": "Unexpected error (logged).",
    "503": "No leader or no quorum in time; retry after Retry-After seconds.",
}


# A write the data directory cannot store (any route that writes).
_INSUFFICIENT_STORAGE: dict[str, Any] = {
    "description": (
        "The write was not stored and changed nothing: the data directory is below "
        "DataDirMinFreeMB, full or read-only (the message names it and its free space)."
    ),
    "content": {
        "application/json": {
            "schema": _closed(
                {
                    "success": {"const": False},
                    "data": _closed(
                        {
                            "data_dir": {"type": "string"},
                            "free_bytes": {"type": "integer"},
                            "floor_bytes": {"type": "integer"},
                            "cause": {"type": "string"},
                        }
                    ),
                    "error": _closed(
                        {
                            "code": {"const": "insufficient_storage"},
                            "message": {"type": "string"},
                            "fields": {"type": "object"},
                        }
                    ),
                }
            )
        }
    },
}

# Routes whose answer to an error status is not the plain Error envelope.
_ROUTE_ERRORS: dict[str, dict[str, tuple[str, dict]]] = {
    "health_check": {
        "503": (
            "This node is not ready: the health data with ready false, its reasons, and the "
            "error envelope (code not_ready).",
            _closed(
                {
                    "success": {"const": False},
                    "data": _ref("Health"),
                    "error": _closed(
                        {
                            "code": {"const": "not_ready"},
                            "message": {"type": "string"},
                            "fields": {"type": "object", "maxProperties": 0},
                        }
                    ),
                }
            ),
        )
    },
    "run_job": {
        "503": (
            "Nothing was sent: no leader or no quorum in time, or (code records_held) this "
            "node's execution records cannot be written and ExecutionRecordsMaxPending of "
            "them wait, so it could not record the run; retry after Retry-After seconds.",
            _ref("Error"),
        )
    },
}

_ERROR_HEADERS: dict[str, dict[str, Any]] = {
    "405": {
        "Allow": {
            "required": True,
            "description": "The methods this path takes.",
            "schema": {"type": "string"},
        }
    },
}
for _status in ("429", "503"):
    _ERROR_HEADERS[_status] = {
        "Retry-After": {
            "required": True,
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer", "minimum": 0},
        }
    }


_STRING = {"type": "string"}
_PATH_SCHEMAS = {"node_id": {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"}}


def _param(param: Param) -> dict:
    schema: dict[str, Any]
    if param.kind == "integer":
        schema = {"type": "integer"}
        if param.minimum is not None:
            schema["minimum"] = param.minimum
        schema["maximum"] = MAX_QUERY_INTEGER if param.maximum is None else param.maximum
    elif param.kind == "boolean":
        schema = {"type": "boolean"}
    elif param.kind == "instant":
        schema = {"type": "string", "format": "date-time"}
    elif param.kind == "cursor":
        schema = {
            "type": "string",
            "minLength": 1,
            "format": CURSOR_FORMAT,
            "examples": [encode_cursor(50)],
        }
    elif param.kind == "selector":
        schema = {"type": "string", "minLength": 1, "pattern": SELECTOR_PATTERN}
    else:
        schema = {"type": "string", "minLength": 1}
    if param.enum:
        schema["enum"] = list(param.enum)
    if param.default is not None:
        schema["default"] = param.default
    description = param.description
    if param.kind == "cursor":
        description += (
            " Format scheduler0-cursor: only a next_cursor this API answered is accepted;"
            " any other token is refused with 400 naming cursor."
        )
    if param.kind == "instant":
        description += " From 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z."
    return {
        "name": param.name,
        "in": "query",
        "required": param.required,
        "description": description,
        "schema": schema,
    }


def _security(auth: str) -> list[dict]:
    if auth == ANONYMOUS:
        return []
    if auth == ADMIN:
        return [{"adminBasic": []}]
    return [{"apiKey": [], "apiSecret": []}, {"adminBasic": []}]


def _scope_can_refuse(route: Route) -> bool:
    """Whether a client credential's scope can refuse a call of C{route} (403)."""
    if route.auth != CLIENT:
        return False
    kind = ROUTE_SCOPES.get(route.handler)
    if kind == COMPUTES:
        return False
    return route.method != "GET" or kind != NO_PROJECT


def _operation(route: Route) -> dict:
    operation: dict[str, Any] = {
        "operationId": f"{route.handler}_{route.method.lower()}",
        "summary": route.summary,
        "security": _security(route.auth),
        "parameters": [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": _PATH_SCHEMAS.get(name, _STRING),
            }
            for name in route.path_params
        ]
        + [_param(p) for p in route.query],
    }
    if route.description:
        operation["description"] = route.description
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": _ref(route.body)}},
        }
    if route.handler == "openapi_document":
        success = {
            "description": "The OpenAPI document.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    elif route.media_type != "application/json":
        # A file, not the envelope (GET /backup).
        success = {
            "description": route.summary,
            "content": {
                route.media_type: {
                    "schema": {"type": "string", "contentMediaType": route.media_type}
                }
            },
        }
    else:
        data_schema = _ref(route.response) if route.response else {}
        success = {
            "description": route.summary,
            "content": {
                "application/json": {
                    "schema": _closed({"success": {"const": True}, "data": data_schema})
                }
            },
        }
    responses = {str(route.status): success}
    for status, text in _ERROR_STATUSES.items():
        if route.auth == ANONYMOUS and status == "401":
            continue
        if route.auth == ANONYMOUS and status == "429":
            continue
        if status == "403" and not _scope_can_refuse(route):
            continue
        text, schema = _ROUTE_ERRORS.get(route.handler, {}).get(status, (text, _ref("Error")))
        response: dict[str, Any] = {
            "description": text,
            "content": {"application/json": {"schema": schema}},
        }
        headers = dict(_ERROR_HEADERS.get(status, {}))
        if status == "401" and route.auth == ADMIN:
            headers["WWW-Authenticate"] = {
                "required": True,
                "description": 'Basic realm="scheduler0": the route takes admin Basic auth.',
                "schema": {"type": "string"},
            }
        if headers:
            response["headers"] = headers
        responses[status] = response
    if route.method != "GET":
        responses["507"] = _INSUFFICIENT_STORAGE
    operation["responses"] = responses
    return operation


def build_openapi(routes: tuple[Route, ...] = ROUTES, version: str = RELEASE) -> dict:
    """The OpenAPI 3.1 document for C{routes}, served under both path prefixes."""
    paths: dict[str, dict] = {}
    for route in routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Scheduler0",
            "version": version,
            "description": (
                "Distributed cron-job server. Every path is served both under /api/v1 and without "
                "the prefix. Every response except this document is {success, data[, error]}."
            ),
        },
        "servers": [{"url": "/api/v1"}, {"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "apiSecret": {"type": "apiKey", "in": "header", "name": "x-secret-key"},
                "adminBasic": {"type": "http", "scheme": "basic"},
            },
        },
    }


__all__ = ["build_openapi", "SCHEMAS", "CLIENT", "ADMIN", "ANONYMOUS"]
