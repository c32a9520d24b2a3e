"""The ``fer-edge`` command: one entry point, subcommands registered by each half.

The device half (``edge``) never imports TensorFlow; the workstation subcommands live in
``convert.cli`` and import TensorFlow only when they run.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fer_edge import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fer-edge",
        description="Facial expression recognition on Raspberry Pi + Coral Edge TPU.",
    )
    parser.add_argument("--version", action="version", version=f"fer-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Each half registers its own subcommands; registration imports no heavy dependency.
    for module_name in ("convert.cli", "edge.cli", "bench.cli", "dashboard.cli"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that half is not written yet or not installed
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from edge.errors import FerEdgeError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        rc = args.func(args)
    except FerEdgeError as exc:
        print(f"fer-edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
