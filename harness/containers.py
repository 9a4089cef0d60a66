"""
Build and run the Scheduler0 container image with podman, for the container
tests: whether podman can run here (and why not), a local Debian base image
made with debootstrap when none is cached, the image built from this
checkout's C{Containerfile}, and node containers started, read and removed.

Every podman call goes through L{Podman}, which points podman at a
C{containers.conf} of its own: this kind of machine needs the C{runc}
runtime and explicit ulimits (see README, "Running in a container").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from harness.process import REPO_ROOT

#: The base image the tests build from, made locally when it is missing.
BASE_IMAGE = "localhost/debian:bookworm"
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Extra CA certificates the host trusts (a TLS-intercepting proxy's), given to pip in the build.
HOST_CA_DIR = "/usr/local/share/ca-certificates"

_CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
"""
_RUNC = """\
[engine]
runtime = "runc"
"""


class PodmanError(Exception):
    """A podman command failed; the message holds the command and its output."""


def suffix() -> str:
    """A short random name suffix, so parallel runs never share a container or volume name."""
    return uuid.uuid4().hex[:10]


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), else Debian's."""
    candidates = [
        ("/etc/apt/sources.list.d/debian.sources", "URIs:"),
        ("/etc/apt/sources.list", "deb"),
    ]
    for path, marker in candidates:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            # "URIs: URL" or "deb [options] URL suite ..."
            words = [word for word in line.split() if not word.startswith("[")]
            if len(words) > 1 and words[0] == marker and "://" in words[1]:
                return words[1]
    return DEFAULT_MIRROR


@attrs.define
class Podman:
    """podman run with this harness's C{containers.conf}."""

    executable: str
    conf_dir: str

    @classmethod
    def create(cls) -> Podman:
        """A podman with its own C{containers.conf} (in a new temporary directory)."""
        executable = shutil.which("podman")
        if executable is None:
            raise PodmanError("podman is not installed")
        conf_dir = tempfile.mkdtemp(prefix="scheduler0-podman-")
        with open(os.path.join(conf_dir, "containers.conf"), "w") as f:
            f.write(_CONTAINERS_CONF + (_RUNC if shutil.which("runc") else ""))
        return cls(executable, conf_dir)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CONTAINERS_CONF"] = os.path.join(self.conf_dir, "containers.conf")
        return env

    def argv(self, *args: str) -> list[str]:
        return [self.executable, *args]

    def run(
        self, *args: str, timeout: float = 60, stdin: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run C{podman ARGS} to completion (blocking); raise L{PodmanError} when it fails."""
        done = subprocess.run(
            self.argv(*args),
            input=stdin,
            capture_output=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise PodmanError(
                f"podman {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stderr.decode(errors='replace')}{done.stdout.decode(errors='replace')}"
            )
        return done

    async def run_async(self, reactor: Any, *args: str) -> tuple[str, str, int]:
        """Run C{podman ARGS} without blocking the reactor; return (stdout, stderr, exit code)."""
        from twisted.internet.utils import getProcessOutputAndValue

        out, err, code = await getProcessOutputAndValue(
            self.executable, list(args), env=self.env, reactor=reactor
        )
        return out.decode(errors="replace"), err.decode(errors="replace"), code

    def has_image(self, name: str) -> bool:
        return self.run("image", "exists", name, check=False).returncode == 0

    def close(self) -> None:
        shutil.rmtree(self.conf_dir, ignore_errors=True)


def unavailable_reason(podman: Podman | None) -> str | None:
    """
    Why containers cannot run here (C{None} when they can): podman missing,
    not root, no base image and no debootstrap to make one, or a trial
    C{podman run} of the base image failing.
    """
    if podman is None:
        return "podman is not installed (apt-get install podman buildah runc debootstrap)"
    if os.geteuid() != 0:
        return "the container tests run podman as root, and this process is not root"
    if not podman.has_image(BASE_IMAGE) and shutil.which("debootstrap") is None:
        return f"there is no {BASE_IMAGE} image and no debootstrap to make one"
    return None


def ensure_base_image(podman: Podman) -> None:
    """
    Make L{BASE_IMAGE} when podman does not hold it: a minimal Debian made by
    debootstrap from this machine's mirror, imported into podman (about a
    minute; later runs reuse it).
    """
    if podman.has_image(BASE_IMAGE):
        return
    work = tempfile.mkdtemp(prefix="scheduler0-rootfs-")
    try:
        rootfs = os.path.join(work, "rootfs")
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, rootfs, apt_mirror()],
            capture_output=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise PodmanError(
                f"debootstrap exited {done.returncode}:\n{done.stderr.decode(errors='replace')}"
            )
        tar = subprocess.run(
            ["tar", "-C", rootfs, "-c", "."], capture_output=True, timeout=300, check=True
        )
        podman.run("import", "-", BASE_IMAGE, stdin=tar.stdout, timeout=300)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def trial_run(podman: Podman) -> str | None:
    """C{None} when a container of the base image runs, else why it did not."""
    done = podman.run(
        "run", "--rm", "--network", "host", BASE_IMAGE, "true", check=False, timeout=120
    )
    if done.returncode != 0:
        return f"a trial `podman run {BASE_IMAGE} true` failed: " + done.stderr.decode(
            errors="replace"
        ).strip().replace("\n", " ")
    return None


def build_image(podman: Podman, tag: str, base: str = BASE_IMAGE) -> None:
    """
    Build this checkout's C{Containerfile} as C{tag} from C{base}, keeping
    no intermediate images (C{--layers=false}), in docker format so the
    image keeps its C{HEALTHCHECK}.
    """
    args = [
        "build",
        "--format",
        "docker",
        "--layers=false",
        "--network",
        "host",
        "--build-arg",
        f"BASE={base}",
        "-t",
        tag,
        "-f",
        os.path.join(REPO_ROOT, "Containerfile"),
    ]
    if os.path.isdir(HOST_CA_DIR):
        args += ["-v", f"{HOST_CA_DIR}:{HOST_CA_DIR}:ro"]
    podman.run(*args, REPO_ROOT, timeout=900)


def run_args(
    name: str,
    image: str,
    env: Mapping[str, str],
    volume: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """
    The C{podman run} arguments of a detached node container on the host's
    network with C{volume} as its data, configured by C{env}. Podman's
    health-check timer is off (it needs systemd); C{podman healthcheck run}
    still runs the image's check.
    """
    args = [
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--health-interval",
        "disable",
        "--volume",
        f"{volume}:/var/lib/scheduler0",
    ]
    for key, value in sorted(env.items()):
        args += ["--env", f"{key}={value}"]
    return [*args, *extra, image]
