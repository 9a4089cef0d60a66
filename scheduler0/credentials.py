"""
The admin/peer credentials file, C{.scheduler0}: the HTTP Basic username and
password nodes use with each other (and the CLI uses with a node), and the
secret key client API credentials are derived from.

The file is a YAML mapping C{{AuthUsername, AuthPassword, SecretKey}} beside
the config file, written atomically with mode 0600. Environment variables
C{SCHEDULER0_AUTH_USERNAME}, C{SCHEDULER0_AUTH_PASSWORD} and
C{SCHEDULER0_SECRET_KEY} override the file field by field.

An optional C{PreviousSecretKeys} (a list of strings; environment
C{SCHEDULER0_PREVIOUS_SECRET_KEYS}, comma-separated) names the keys
C{SecretKey} replaced: client secrets hashed under them still verify and are
re-hashed under C{SecretKey} on use (see 'Rotating SecretKey' in README).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import yaml

from scheduler0.config import Config, ConfigError, parse_yaml
from scheduler0.files import write_atomically

CREDENTIALS_FILE_NAME = ".scheduler0"

# file key -> (attribute, overriding environment variable)
FIELDS: dict[str, tuple[str, str]] = {
    "AuthUsername": ("username", "SCHEDULER0_AUTH_USERNAME"),
    "AuthPassword": ("password", "SCHEDULER0_AUTH_PASSWORD"),
    "SecretKey": ("secret_key", "SCHEDULER0_SECRET_KEY"),
}

# The optional list of the SecretKeys the current one replaced.
PREVIOUS_KEYS_FIELD = "PreviousSecretKeys"
PREVIOUS_KEYS_VARIABLE = "SCHEDULER0_PREVIOUS_SECRET_KEYS"


class CredentialsError(ConfigError):
    """A C{.scheduler0} file that cannot be read or does not hold valid credentials."""


def _hidden(_value: str) -> str:
    return "'***'"


def _key_tuple(keys: Iterable[str]) -> tuple[str, ...]:
    return tuple(keys)


@attrs.frozen
class AdminCredentials:
    """The admin/peer credentials; C{repr} never shows the password or secret key."""

    username: str
    password: str = attrs.field(repr=_hidden)
    secret_key: str = attrs.field(repr=_hidden)
    previous_secret_keys: tuple[str, ...] = attrs.field(
        default=(), repr=_hidden, converter=_key_tuple
    )


def credentials_path(config: Config) -> str:
    """Where C{.scheduler0} lives: beside the config file (or in the working directory)."""
    return os.path.join(os.path.abspath(config.base_dir), CREDENTIALS_FILE_NAME)


def read_credentials_file(path: str) -> dict[str, Any]:
    """
    The fields present in the file at C{path} (by file key), or C{{}} when it
    does not exist. Raise L{CredentialsError} for a file that is not a mapping
    of non-empty strings with known keys.
    """
    try:
        with open(path, encoding="utf-8") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if mode & 0o077:
                # Checked before reading: the secrets must not be used (or
                # trusted) while other users can read or change them.
                raise CredentialsError(
                    f"credentials {path}: mode {mode:04o} lets other users read or change it; "
                    f"run: chmod 600 {path}"
                )
            text = f.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise CredentialsError(f"credentials: cannot read {path}: {e}") from None
    where = f"credentials {path}"
    document = parse_yaml(text, where)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise CredentialsError(
            f"{where}: the top level must be a mapping with AuthUsername, AuthPassword "
            "and SecretKey"
        )
    fields: dict[str, Any] = {}
    for key, value in document.items():
        if key == PREVIOUS_KEYS_FIELD:
            fields[key] = _previous_keys(value, where)
            continue
        if key not in FIELDS:
            raise CredentialsError(
                f"{where}: unknown key {key!r}; expected AuthUsername, AuthPassword, SecretKey"
                f" (and optionally {PREVIOUS_KEYS_FIELD})"
            )
        if not isinstance(value, str) or not value:
            # Never echo the value: it may be a secret.
            raise CredentialsError(f"{where}: {key}: expected a non-empty string")
        fields[key] = value
    return fields


def _previous_keys(value: Any, where: str) -> tuple[str, ...]:
    """C{PreviousSecretKeys} checked: a list of non-empty strings (never echoed)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CredentialsError(
            f"{where}: {PREVIOUS_KEYS_FIELD}: expected a list of non-empty strings"
        )
    return tuple(value)


def _previous_from_environment(environ: Mapping[str, str]) -> tuple[str, ...] | None:
    """C{SCHEDULER0_PREVIOUS_SECRET_KEYS} split at commas, or None when unset or empty."""
    text = environ.get(PREVIOUS_KEYS_VARIABLE)
    if not text:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


def load_admin_credentials(config: Config, environ: Mapping[str, str]) -> AdminCredentials | None:
    """
    The admin credentials from C{.scheduler0} with environment overrides
    applied, or C{None} when the two together do not give all three fields.
    """
    fields = read_credentials_file(credentials_path(config))
    for key, (_attr, variable) in FIELDS.items():
        if environ.get(variable):
            fields[key] = environ[variable]
    if any(key not in fields for key in FIELDS):
        return None
    previous = _previous_from_environment(environ)
    return AdminCredentials(
        **{attr: fields[key] for key, (attr, _) in FIELDS.items()},
        previous_secret_keys=previous
        if previous is not None
        else fields.get(PREVIOUS_KEYS_FIELD, ()),
    )


def save_admin_credentials(path: str, creds: AdminCredentials) -> None:
    """
    Write C{creds} to C{path} atomically (temporary file, fsync, rename) with
    mode 0600, so a crash leaves either the old file or the new one and no
    other user can read the secrets at any point.
    """
    for key, (attr, _) in FIELDS.items():
        value = getattr(creds, attr)
        if not isinstance(value, str) or not value:
            raise CredentialsError(f"credentials: {key} must be a non-empty string")
    document: dict[str, Any] = {key: getattr(creds, attr) for key, (attr, _) in FIELDS.items()}
    if creds.previous_secret_keys:
        document[PREVIOUS_KEYS_FIELD] = list(creds.previous_secret_keys)
    text = yaml.safe_dump(
        document,
        default_flow_style=False,
        sort_keys=False,
    )
    write_atomically(path, text, mode=0o600)


def token(nbytes: int) -> str:
    """
    C{nbytes} random bytes as URL-safe text that never begins with C{-}: a
    value passed after a command-line option (C{--api-secret VALUE}) that
    began with one would be read as another option.
    """
    while True:
        text = secrets.token_urlsafe(nbytes)
        if not text.startswith("-"):
            return text


def generate_password() -> str:
    """A fresh random password for peer basic auth."""
    return token(24)


def generate_secret_key() -> str:
    """A fresh random secret key for deriving client API credentials."""
    return token(32)


def generate_admin_credentials(username: str = "admin") -> AdminCredentials:
    """New random admin credentials for C{username}."""
    return AdminCredentials(username, generate_password(), generate_secret_key())


def ensure_admin_credentials(
    config: Config, environ: Mapping[str, str]
) -> tuple[AdminCredentials, bool]:
    """
    The admin credentials, creating C{.scheduler0} when the file and the
    environment do not give all three fields. Fields that are given (file or
    environment) are kept; only the missing ones are generated. Returns the
    credentials and whether the file was written now.
    """
    existing = load_admin_credentials(config, environ)
    if existing is not None:
        return existing, False
    path = credentials_path(config)
    fields = read_credentials_file(path)
    for key, (_attr, variable) in FIELDS.items():
        if environ.get(variable):
            fields[key] = environ[variable]
    creds = AdminCredentials(
        username=fields.get("AuthUsername", "admin"),
        password=fields.get("AuthPassword") or generate_password(),
        secret_key=fields.get("SecretKey") or generate_secret_key(),
        previous_secret_keys=fields.get(PREVIOUS_KEYS_FIELD, ()),
    )
    save_admin_credentials(path, creds)
    return creds, True
