"""
An earlier release of Scheduler0, installed from this repository's git
history into a virtualenv of its own, for tests that run it beside this
code (a rolling upgrade).

The release is taken with C{git archive <commit>} (so the checkout must
have that commit: a shallow clone does not) and installed with pip into
C{<cache>/<full commit>/venv}; the folder is made under a temporary name
and renamed when the install is complete, so a finished one is reused at
once by later runs and a half-made one never is. The cache is
C{$SCHEDULER0_RELEASE_CACHE}, else C{~/.cache/scheduler0/releases}.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from harness.process import REPO_ROOT

#: Seconds the whole install may take (pip fetching the dependencies included).
INSTALL_TIMEOUT_S = 300.0


class ReleaseUnavailable(Exception):
    """The release could not be installed; the message says why and what to do."""


def cache_root() -> str:
    """Where installed releases are kept."""
    given = os.environ.get("SCHEDULER0_RELEASE_CACHE")
    if given:
        return os.path.abspath(given)
    return os.path.join(os.path.expanduser("~"), ".cache", "scheduler0", "releases")


def _run(argv: list[str], what: str, timeout: float, cwd: str | None = None) -> bytes:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ReleaseUnavailable(f"{what} took more than {timeout:.0f} s") from None
    except OSError as e:
        raise ReleaseUnavailable(f"{what} could not run: {e}") from None
    if done.returncode:
        output = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
        raise ReleaseUnavailable(f"{what} failed ({done.returncode}): {output[-2000:]}")
    return done.stdout


def full_commit(commit: str, repo: str = REPO_ROOT) -> str:
    """The full hash of C{commit} in C{repo}, or L{ReleaseUnavailable} if it is not there."""
    try:
        out = _run(
            ["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
            f"finding commit {commit}",
            30,
        )
    except ReleaseUnavailable:
        raise ReleaseUnavailable(
            f"commit {commit} is not in the history of {repo} (a shallow clone?):"
            f" fetch it first, e.g. git fetch --unshallow"
        ) from None
    return out.decode().strip()


def release_python(commit: str, timeout: float = INSTALL_TIMEOUT_S) -> str:
    """
    The python executable of a virtualenv where the release at C{commit}
    is installed (and nothing of this checkout), installing it first if no
    earlier run did.
    """
    full = full_commit(commit)
    home = os.path.join(cache_root(), full)
    python = os.path.join(home, "venv", "bin", "python")
    if os.path.exists(python):
        return python
    os.makedirs(cache_root(), exist_ok=True)
    building = tempfile.mkdtemp(prefix=f".{full[:12]}-", dir=cache_root())
    try:
        source = os.path.join(building, "source")
        os.makedirs(source)
        archive = os.path.join(building, "source.tar")
        _run(
            ["git", "-C", REPO_ROOT, "archive", "--format=tar", f"--output={archive}", full],
            f"git archive {full[:12]}",
            60,
        )
        _run(["tar", "-xf", archive, "-C", source], "unpacking the archive", 60)
        venv = os.path.join(building, "venv")
        _run([sys.executable, "-m", "venv", venv], "making a virtualenv", 120)
        # Only through its python (never its scripts, which name this path),
        # so the venv still works once renamed.
        _run(
            [
                os.path.join(venv, "bin", "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                source,
            ],
            f"pip install of release {full[:12]} (it needs its dependencies from the index)",
            timeout,
        )
        try:
            os.rename(building, home)
        except OSError:
            # Another run finished the same install first: use that one.
            if not os.path.exists(python):
                raise
    finally:
        if os.path.exists(building):
            shutil.rmtree(building, ignore_errors=True)
    return python
