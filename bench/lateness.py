"""
Lateness of callbacks on one node, kept for its old command line; it is now
scenario 1 of the suite (bench/precision.py, C{python -m bench precision}).

    python -m bench.lateness --jobs 1000 --seconds 60 [--json PATH] [--profile PATH]
"""

from __future__ import annotations

import argparse
import shutil


def main() -> None:
    from bench import precision
    from bench.common import LAST_RESULT

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--json", dest="json_path", help="also write the result here")
    parser.add_argument("--profile", metavar="PATH", help="run the node under cProfile")
    args = parser.parse_args()
    argv = ["--jobs", str(args.jobs), "--seconds", str(args.seconds)]
    if args.profile:
        argv += ["--profile", args.profile]
    try:
        precision.main(argv)
    finally:
        if args.json_path and LAST_RESULT.get("path"):
            shutil.copyfile(LAST_RESULT["path"], args.json_path)


if __name__ == "__main__":
    main()
