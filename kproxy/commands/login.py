"""``kproxy login`` and ``kproxy kubeconfig``: the client side of kproxy.

``login`` is the kubectl exec credential plugin: it prints one ``ExecCredential`` on
stdout and everything meant for the person on stderr. ``kubeconfig`` writes the file
that makes kubectl, or a controller in a source cluster, reach a target through kproxy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, get_args

from kproxy.login.credential import exec_credential, read_exec_info
from kproxy.login.errors import KubeconfigError, LoginError
from kproxy.login.kubeconfig import (
    ClusterAccess,
    ExecUser,
    InteractiveMode,
    TokenFileUser,
    build_kubeconfig,
    login_user,
    render_kubeconfig,
    write_kubeconfig,
)
from kproxy.login.plugin import obtain_credential
from kproxy.login.settings import add_login_arguments, settings_from_arguments


def register(subparsers: Any) -> None:
    login = subparsers.add_parser(
        "login",
        help="log in to an OIDC provider and print a kubectl ExecCredential",
        description="The kubectl exec credential plugin: prints an ExecCredential "
        "with a cached, refreshed or newly obtained token.",
    )
    add_login_arguments(login)
    login.set_defaults(handler=run_login)

    kubeconfig = subparsers.add_parser(
        "kubeconfig",
        help="write a kubeconfig that reaches a cluster through kproxy",
        description="Write a kubeconfig for kproxy: either --token-file (a projected "
        "service-account token, for controllers) or --issuer and --client-id (an exec "
        "user running 'kproxy login', for people).",
    )
    _add_kubeconfig_arguments(kubeconfig)
    add_login_arguments(kubeconfig, required=False)
    kubeconfig.set_defaults(handler=run_kubeconfig)


def _add_kubeconfig_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="kproxy's https URL")
    parser.add_argument(
        "--name", default="kproxy", help="name of the cluster, user and context"
    )
    parser.add_argument("--namespace", default="", help="the context's namespace")
    parser.add_argument(
        "--certificate-authority",
        type=Path,
        metavar="FILE",
        help="PEM bundle that signed kproxy's serving certificate",
    )
    parser.add_argument(
        "--embed-certs",
        action="store_true",
        help="embed the certificate authority instead of naming its file",
    )
    parser.add_argument("--tls-server-name", default="", help="name to verify TLS with")
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="absolute path of a bearer token file, such as a projected "
        "service-account token with kproxy's audience",
    )
    parser.add_argument(
        "--login-command",
        default="kproxy",
        metavar="PATH",
        help="the kproxy executable kubectl runs for 'kproxy login'",
    )
    parser.add_argument(
        "--interactive-mode",
        choices=get_args(InteractiveMode),
        default="IfAvailable",
        help="the exec entry's interactiveMode",
    )
    parser.add_argument(
        "--output", "-o", default="-", metavar="FILE", help="file to write, or - "
    )


def run_login(args: argparse.Namespace) -> int:
    try:
        exec_info = read_exec_info(os.environ)
        settings = settings_from_arguments(args)
        credential = obtain_credential(settings, interactive=exec_info.interactive)
    except LoginError as exc:
        print(f"kproxy login: error: {exc}", file=sys.stderr)
        return 1
    document = exec_credential(credential, api_version=exec_info.api_version)
    print(json.dumps(document))
    return 0


def run_kubeconfig(args: argparse.Namespace) -> int:
    try:
        text = render_kubeconfig(
            build_kubeconfig(
                name=args.name,
                cluster=ClusterAccess(
                    server=args.server,
                    certificate_authority=args.certificate_authority,
                    embed_certificate_authority=args.embed_certs,
                    tls_server_name=args.tls_server_name,
                ),
                user=_user(args),
                namespace=args.namespace,
            )
        )
        if args.output == "-":
            sys.stdout.write(text)
        else:
            write_kubeconfig(text, Path(args.output))
    except (KubeconfigError, LoginError) as exc:
        print(f"kproxy kubeconfig: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _user(args: argparse.Namespace) -> TokenFileUser | ExecUser:
    if args.token_file and args.issuer:
        raise KubeconfigError("give either --token-file or --issuer, not both")
    if args.token_file:
        return TokenFileUser(token_file=args.token_file)
    if not args.issuer or not args.client_id:
        raise KubeconfigError("give --token-file, or --issuer and --client-id")
    return login_user(
        settings_from_arguments(args),
        command=args.login_command,
        interactive_mode=args.interactive_mode,
    )
