"""``python -m gpucnn info``: versions, backends (and why one cannot run), GPU, compiler and folders."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpucnn", description="gpucnn's command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    info_parser = commands.add_parser("info", help="what gpucnn finds here: versions, backends and whether each "
                                                   "can run, the GPU, the cuda-sim compiler, data and cache folders")
    info_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    from . import info

    report = info.collect()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(info.format(report), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
