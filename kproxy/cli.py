"""The ``kproxy`` command: a thin dispatcher over ``kproxy.commands``.

Each module in ``kproxy.commands`` adds its own subcommand with ``register``; the
handler it sets returns the process exit code. Configuration errors exit with 2 and are
printed one problem per line, with file, line and field.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Final

from kproxy import __version__
from kproxy.errors import ConfigError

COMMAND_MODULES: Final = (
    "kproxy.commands.serve",
    "kproxy.commands.demo",
    "kproxy.commands.policy",
    "kproxy.commands.login",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kproxy",
        description="Authenticate federated identities and impersonate them at a "
        "Kubernetes API server.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    version = commands.add_parser("version", help="print kproxy's version")
    version.set_defaults(handler=_print_version)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def _print_version(_: argparse.Namespace) -> int:
    print(f"kproxy {__version__}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return ConfigError.exit_code
    except KeyboardInterrupt:
        return 130
    return code
