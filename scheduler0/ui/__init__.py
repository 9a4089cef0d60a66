"""
The web dashboard: static HTML, CSS and JavaScript served by every node at
C{/ui/}. The files hold no data; the page signs in with a client credential
and reads everything through the node's own authenticated API.
"""

from __future__ import annotations

import os

from twisted.web import resource
from twisted.web.static import File

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

# Not left to the platform's mime.types, which varies between machines.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}

SECURITY_HEADERS = {
    b"cache-control": b"no-cache",
    # Everything (scripts, styles, images, API calls) from this node only;
    # no inline script or style attributes, no frames.
    b"content-security-policy": b"default-src 'self'; frame-ancestors 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
}


class _NotFound(resource.ErrorPage):
    """A plain 404 for paths that are not one of the dashboard's files."""

    def __init__(self) -> None:
        super().__init__(404, "No such file", "The dashboard has no file at this path.")


class DashboardFiles(File):
    """
    The static directory as a L{File} that never lists a directory and
    marks every answer C{no-cache} with a strict Content-Security-Policy.
    """

    contentTypes = CONTENT_TYPES
    defaultType = "application/octet-stream"

    def __init__(self, path: str, *args: object, **kwargs: object) -> None:
        super().__init__(path, *args, **kwargs)  # type: ignore[arg-type]
        self.childNotFound = _NotFound()  # type: ignore[assignment]
        # Only the index page stands for the directory (not "index" or an .rpy).
        self.indexNames = ["index.html"]

    def directoryListing(self) -> resource.IResource:
        return self.childNotFound

    def render(self, request):  # type: ignore[no-untyped-def]
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        return super().render(request)


def dashboard_resource(static_dir: str = STATIC_DIR) -> DashboardFiles:
    """
    The resource serving the dashboard's files from C{static_dir}: C{/ui}
    redirects to C{/ui/}, which answers C{index.html}.
    """
    return DashboardFiles(static_dir)
