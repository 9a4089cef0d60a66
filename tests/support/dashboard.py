"""
For the dashboard tests in headless Chromium: where screenshots go, and
reads of the page.
"""

from __future__ import annotations

import os


def artifacts_dir() -> str:
    """Where screenshots go: $SCHEDULER0_TEST_ARTIFACTS, else the trial temp dir's artifacts/."""
    path = os.environ.get("SCHEDULER0_TEST_ARTIFACTS") or os.path.join(os.getcwd(), "artifacts")
    return os.path.abspath(path)


# Reads of the page, as JavaScript expressions.
SIGN_IN_SHOWN = "!document.querySelector('#signin').hidden"
SIGN_IN_ERROR = (
    "!document.querySelector('#signin-error').hidden && "
    "document.querySelector('#signin-error').textContent"
)
