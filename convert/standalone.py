"""``python -m convert.<module>`` entry points: the same parsing and error output as ``fer-edge``.

A leaf module (it imports no other ``convert`` module), so library modules can offer a ``main``
without importing the ``fer-edge`` command registry (``convert.cli``) and what that imports.
"""

from __future__ import annotations

import argparse
import sys


def run_standalone(prog: str, description: str | None, add_arguments, run, argv=None) -> int:
    """Parse ``argv`` with the module's ``add_arguments``, call its ``run`` and print a FerEdgeError
    as one line (as the ``fer-edge`` subcommand does). Returns the exit status."""
    from edge.errors import FerEdgeError

    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except FerEdgeError as exc:
        print(f"fer-edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
