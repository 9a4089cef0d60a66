"""
Writing small files so that a crash leaves either the old file or the new
one, never a torn one.
"""

from __future__ import annotations

import os
import tempfile


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """
    Write C{text} to C{path} through a temporary file in the same folder
    (created with C{mode} before any byte is written), fsync it, rename it
    into place and fsync the folder.
    """
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    os.chmod(path, mode)
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; some filesystems refuse to open a folder, which is fine."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def publish(temporary: str, path: str) -> None:
    """
    Move the finished file C{temporary} to C{path} (same folder) durably:
    fsync it, rename it into place and fsync the folder.
    """
    with open(temporary, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _fsync_directory(os.path.dirname(os.path.abspath(path)))
