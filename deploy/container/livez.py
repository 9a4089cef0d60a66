#!/usr/bin/env python3
"""
The image's health check: exit 0 when this container's node answers
C{GET /livez}, else 1. The address comes from the node's own configuration
(the same file and C{SCHEDULER0_*} variables), asked on the loopback
interface unless the node listens on one address only.
"""

import ssl
import sys
import urllib.request

from scheduler0.config import ConfigError, load_config

WILDCARDS = ("0.0.0.0", "::", "")


def livez_url() -> str:
    """Where this node answers C{/livez}, as seen from inside its container."""
    config = load_config(environ=None)
    host = config.host
    if config.http_endpoint or host in WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{config.protocol}://{host}:{config.port}/livez"


def main() -> int:
    try:
        url = livez_url()
    except ConfigError as e:
        print(f"livez: {e}", file=sys.stderr)
        return 1
    # The node's certificate names its public host, not 127.0.0.1: liveness
    # only asks whether the process serves HTTP.
    context = ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as e:
        print(f"livez: {url}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
