"""The ``kproxy`` command: a thin dispatcher over ``kproxy.commands``.

Each module in ``kproxy.commands`` adds its own subcommands with ``register``; the
handler it sets returns the process exit code. Configuration errors exit with 2 and are
printed one problem per line, with file, line and field.

Only the module of the command being run is imported: kubectl runs ``kproxy login``
before every request it makes, and importing the proxy's whole stack (CEL, aiohttp's
server, prometheus) would add a second to each of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Final

from kproxy import __version__
from kproxy.errors import ConfigError

COMMAND_MODULES: Final = {
    "serve": "kproxy.commands.serve",
    "demo": "kproxy.commands.demo",
    "policy": "kproxy.commands.policy",
    "login": "kproxy.commands.login",
    "kubeconfig": "kproxy.commands.login",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: with its command's module only, or all for help."""
    parser = argparse.ArgumentParser(
        prog="kproxy",
        description="Authenticate federated identities and impersonate them at a "
        "Kubernetes API server.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    version = commands.add_parser("version", help="print kproxy's version")
    version.set_defaults(handler=_print_version)
    for name in _modules_for(sys.argv[1:] if argv is None else argv):
        importlib.import_module(name).register(commands)
    return parser


def _modules_for(argv: Sequence[str]) -> list[str]:
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    if chosen == "version":
        return []
    if chosen in COMMAND_MODULES:
        return [COMMAND_MODULES[chosen]]
    # Help, or a mistyped command: argparse should list every command.
    return list(dict.fromkeys(COMMAND_MODULES.values()))


def _print_version(_: argparse.Namespace) -> int:
    print(f"kproxy {__version__}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return ConfigError.exit_code
    except KeyboardInterrupt:
        return 130
    return code
