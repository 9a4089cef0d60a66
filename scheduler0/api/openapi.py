"""
The OpenAPI 3.1 document, generated from the route table the application
registers, so it describes exactly the routes that are served.
"""

from __future__ import annotations

from typing import Any

from scheduler0.api.routes import ADMIN, ANONYMOUS, CLIENT, ROUTES, Param, Route
from scheduler0.api.validation import (
    EXECUTION_STATES,
    MAX_CATCH_UP_WINDOW_S,
    MAX_DESCRIPTION_LENGTH,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    MAX_RETRY_MAX,
    MAX_SPEC_LENGTH,
    MAX_TIMEOUT_S,
    MAX_URL_LENGTH,
)

MAX_JOBS_PER_REQUEST = 10_000


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


_INSTANT = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339 instant in UTC, milliseconds.",
}
_NULLABLE_INSTANT = {"type": ["string", "null"], "format": "date-time"}
_UUID = {"type": "string", "format": "uuid"}
# The API refuses blank (empty or whitespace-only) names, specs and zones.
_NOT_BLANK = r"\S"
# Query integers are at most 18 digits long.
MAX_QUERY_INTEGER = 10**18 - 1

_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": _NOT_BLANK}

_JOB_WRITABLE = {
    "project_uuid": {**_UUID, "maxLength": MAX_ID_LENGTH},
    "name": _NAME,
    "spec": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_SPEC_LENGTH,
        "pattern": _NOT_BLANK,
        "description": (
            "5- or 6-field cron, @hourly/@daily/..., @every <duration>, or @at <RFC 3339 instant>."
        ),
    },
    "callback_url": {
        "type": "string",
        "format": "uri",
        "maxLength": MAX_URL_LENGTH,
        "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#]",
        "description": "An absolute http:// or https:// URL naming a host.",
    },
    "data": {"description": "Any JSON value, sent with every execution. Default null."},
    "timezone": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NAME_LENGTH,
        "pattern": _NOT_BLANK,
        "description": "IANA zone for cron specs. Default UTC.",
    },
    "execution_type": {"type": "string", "enum": ["http"]},
    "paused": {"type": "boolean"},
    "catch_up_window_s": {"type": "number", "minimum": 0, "maximum": MAX_CATCH_UP_WINDOW_S},
    "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
    "retry_max": {"type": "integer", "minimum": 0, "maximum": MAX_RETRY_MAX},
}

_PAGE_KEYS = {
    "total": {"type": "integer"},
    "limit": {"type": "integer"},
    "offset": {"type": "integer"},
    "next_cursor": {"type": ["string", "null"]},
}


def _page(item: str) -> dict:
    return {
        "type": "object",
        "required": ["items", "total", "limit", "offset", "next_cursor"],
        "properties": {"items": {"type": "array", "items": _ref(item)}, **_PAGE_KEYS},
    }


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["success", "data", "error"],
        "properties": {
            "success": {"const": False},
            "data": {"type": "null"},
            "error": {
                "type": "object",
                "required": ["code", "message", "fields"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        },
    },
    "Health": {
        "type": "object",
        "description": "Node id, role, leader, term, indexes, members, paused state.",
    },
    "ProjectInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": _NAME,
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH},
        },
    },
    "ProjectPatch": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": _NAME,
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH},
        },
    },
    "Project": {
        "type": "object",
        "properties": {
            "uuid": _UUID,
            "name": {"type": "string"},
            "description": {"type": "string"},
            "created_at": _INSTANT,
            "updated_at": _INSTANT,
        },
    },
    "NewProject": {
        "type": "object",
        "properties": {
            "uuid": _UUID,
            "name": {"type": "string"},
            "description": {"type": "string"},
            "created_at": _INSTANT,
            "updated_at": _INSTANT,
            "signing_secret": {
                "type": "string",
                "description": "Signs this project's callbacks; shown only in this response.",
            },
        },
    },
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
    "SigningSecret": {
        "type": "object",
        "properties": {
            "project_uuid": _UUID,
            "signing_secret": {"type": "string", "description": "Shown only in this response."},
            "previous_expires_at": _INSTANT,
        },
    },
    "ProjectPage": _page("Project"),
    "ProjectDeleted": {
        "type": "object",
        "properties": {"uuid": _UUID, "deleted_jobs": {"type": "array", "items": _UUID}},
    },
    "Deleted": {"type": "object", "properties": {"uuid": _UUID}},
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
    "Job": {
        "type": "object",
        "properties": {
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
        },
    },
    "JobOrList": {"oneOf": [_ref("Job"), {"type": "array", "items": _ref("Job")}]},
    "JobPage": _page("Job"),
    "NextRuns": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "utc": _INSTANT,
                        "local": {
                            "type": "string",
                            "description": "RFC 3339 with the job zone's offset.",
                        },
                    },
                },
            },
            "timezone": {"type": "string"},
            "paused": {
                "type": "boolean",
                "description": "A paused job fires none of these until resumed.",
            },
        },
    },
    "Execution": {
        "type": "object",
        "properties": {
            "execution_id": {"type": "string"},
            "job_uuid": _UUID,
            "project_uuid": _UUID,
            "scheduled_at": _INSTANT,
            "state": {"type": "string", "enum": list(EXECUTION_STATES)},
            "attempts": {"type": "integer"},
            "node_id": {"type": ["integer", "null"]},
            "started_at": _NULLABLE_INSTANT,
            "finished_at": _NULLABLE_INSTANT,
            "status_code": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
            "skip_reason": {"type": ["string", "null"]},
        },
    },
    "ExecutionPage": _page("Execution"),
    "CredentialInput": {"type": "object", "additionalProperties": False, "properties": {}},
    "Credential": {
        "type": "object",
        "properties": {
            "uuid": _UUID,
            "api_key": {"type": "string"},
            "created_at": _INSTANT,
            "archived_at": _NULLABLE_INSTANT,
        },
    },
    "NewCredential": {
        "type": "object",
        "properties": {
            "uuid": _UUID,
            "api_key": {"type": "string"},
            "api_secret": {"type": "string", "description": "Shown only in this response."},
            "created_at": _INSTANT,
        },
    },
    "CredentialPage": _page("Credential"),
}

_ERROR_STATUSES = {
    "400": "Invalid input; error.fields names each offending field.",
    "401": "Missing or wrong credentials.",
    "403": "Client credentials on an admin route.",
    "404": "Unknown resource or route.",
    "405": "Method not allowed on this path.",
    "409": "Conflict with stored state.",
    "413": "Body or array too large.",
    "415": "Body is not application/json.",
    "429": "Too many requests for this credential; retry after Retry-After seconds.",
    "500": "Unexpected error (logged).",
    "503": "No leader or no quorum in time; retry after Retry-After seconds.",
}


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
        schema = {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_-]+$"}
    else:
        schema = {"type": "string", "minLength": 1}
    if param.enum:
        schema["enum"] = list(param.enum)
    if param.default is not None:
        schema["default"] = param.default
    return {
        "name": param.name,
        "in": "query",
        "required": False,
        "description": param.description,
        "schema": schema,
    }


def _security(auth: str) -> list[dict]:
    if auth == ANONYMOUS:
        return []
    if auth == ADMIN:
        return [{"adminBasic": []}]
    return [{"apiKey": [], "apiSecret": []}, {"adminBasic": []}]


def _operation(route: Route) -> dict:
    operation: dict[str, Any] = {
        "operationId": f"{route.handler}_{route.method.lower()}",
        "summary": route.summary,
        "security": _security(route.auth),
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
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
    else:
        data_schema = _ref(route.response) if route.response else {}
        success = {
            "description": route.summary,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["success", "data"],
                        "properties": {"success": {"const": True}, "data": data_schema},
                    }
                }
            },
        }
    responses = {str(route.status): success}
    for status, text in _ERROR_STATUSES.items():
        if route.auth == ANONYMOUS and status in ("401", "403"):
            continue
        if route.auth != ADMIN and status == "403":
            continue
        if route.auth == ANONYMOUS and status == "429":
            continue
        responses[status] = {
            "description": text,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    operation["responses"] = responses
    return operation


def build_openapi(routes: tuple[Route, ...] = ROUTES, version: str = "0.1.0") -> dict:
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
