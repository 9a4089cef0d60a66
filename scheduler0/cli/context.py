"""
What every command of the CLI works with: its exit codes, the error it
reports as one line, the context a handler is given (arguments, streams,
environment, injected prompt and HTTP), and the admin credentials a command
that talks to a node needs. The command table (L{scheduler0.cli.main}) and
the resource commands (L{scheduler0.cli.resources}) both import it, and it
imports neither.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable, Mapping
from typing import IO, Any

from scheduler0.config import Config, ConfigError, load_config
from scheduler0.credentials import AdminCredentials, credentials_path, load_admin_credentials

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Prompt = Callable[[str, bool], str]
Http = Callable[..., tuple[int, Any]]


class CommandError(Exception):
    """A failure reported as one line on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class Context:
    """What a command handler works with: parsed arguments and injected effects."""

    def __init__(
        self,
        args: argparse.Namespace,
        stdin: IO[str],
        stdout: IO[str],
        stderr: IO[str],
        environ: Mapping[str, str],
        cwd: str,
        prompt: Prompt | None,
        http: Http,
    ) -> None:
        self.args = args
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.environ = environ
        self.cwd = cwd
        self.prompt = prompt
        self.http = http

    @property
    def config_option(self) -> str | None:
        return getattr(self.args, "config", None) or getattr(self.args, "global_config", None)

    def interactive(self) -> bool:
        """Prompts are allowed: a prompt function was injected or stdin is a terminal."""
        if self.prompt is not None:
            return True
        try:
            return bool(self.stdin.isatty())
        except (AttributeError, ValueError):
            return False

    def ask(self, text: str, secret: bool = False) -> str:
        asker = self.prompt or _default_prompt
        try:
            return asker(text, secret)
        except EOFError:
            raise CommandError("aborted: no input") from None

    def load(self) -> Config:
        """The validated config; a bad one is a usage error (exit 2)."""
        try:
            config = load_config(self.config_option, self.environ, self.cwd)
        except ConfigError as e:
            raise CommandError(str(e), EXIT_USAGE) from None
        for warning in config.warnings:
            self.stderr.write(f"warning: {warning}\n")
        return config

    def out(self, line: str = "") -> None:
        self.stdout.write(line + "\n")


def _default_prompt(text: str, secret: bool) -> str:
    return getpass.getpass(text) if secret else input(text)


def require_credentials(context: Context, config: Config) -> AdminCredentials:
    try:
        creds = load_admin_credentials(config, context.environ)
    except ConfigError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    if creds is None:
        raise CommandError(
            f"no admin credentials in {credentials_path(config)} or the environment; "
            "run: scheduler0 credential init"
        )
    return creds
