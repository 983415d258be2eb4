"""The ``npconv`` command (also ``python -m npconv``).

Each subcommand lives in its own module, which exposes ``register(subparsers)``:
it adds its parser and sets ``handler`` to a function ``(args) -> exit status``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "npconv.demo",
    "npconv.book.cli",
    "npconv.bench",
    "npconv.nn.cli",
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="npconv",
        description="Exact, complete and fast 2-D convolution in NumPy and Numba.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"npconv {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except (ValueError, TypeError, OSError) as exc:
        print(f"npconv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional dependency (matplotlib, torch) is missing
        print(f"npconv {args.command}: error: {exc} (pip install 'npconv[plot]' for "
              f"pictures)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
