"""The ``globeflow`` command line: one sub-command per module in ``globeflow.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status: 0 success, 1 nothing done, 2 usage error).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ("embed", "train", "evaluate", "score", "predict", "map", "serve", "download", "models")


def _load(name: str):
    try:
        return importlib.import_module(f"globeflow.commands.{name}")
    except ModuleNotFoundError as err:  # a command not built yet in this checkout
        if err.name == f"globeflow.commands.{name}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="globeflow",
        description="Generative, probabilistic geolocation: where on Earth was this photo (or text) taken?",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        if module is None:
            continue
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(args._run(args))


if __name__ == "__main__":
    sys.exit(main())
