"""``kproxy policy``: check, explain and render university policies.

- ``check [DIR] [--config FILE]`` validates every policy file against the schema and,
  with ``--config``, against the operator's guardrails; one line per problem with file,
  line and field; exit 2 on problems.
- ``explain (--claims FILE | --token JWT) VERB PATH`` shows the mapped identity, the
  decision and what decided it. A token's claims are read without verifying the
  signature: the output says so, and nothing here authenticates anyone.
- ``rbac`` prints Roles, bindings and kproxy's impersonation ClusterRole as YAML.
- ``schema`` prints the JSON Schema of policy files.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any, Final

import yaml

from kproxy.auth.config import AuthenticationSettings, resolve_authentication_settings
from kproxy.auth.identity import Identity, UserInfo
from kproxy.auth.mapping import ClaimMapper, ClaimsRejectedError
from kproxy.configfile import load_document, validate_section
from kproxy.errors import BadRequestError, ConfigError
from kproxy.policy.attributes import parse_request
from kproxy.policy.decision import Decision
from kproxy.policy.loading import (
    compile_guardrails,
    federation_settings,
    load_policy_directory,
    load_policy_models,
    policy_files,
)
from kproxy.policy.policyset import PolicySet
from kproxy.policy.rbac import render_rbac
from kproxy.policy.schema import policy_json_schema_text
from kproxy.policy.settings import FederationSettings

UNVERIFIED_NOTE: Final = (
    "note: the token's signature was NOT verified; its claims are used for this "
    "explanation only"
)
_METHOD_OF_VERB: Final = {
    "get": ("GET", ""),
    "list": ("GET", ""),
    "watch": ("GET", "watch=1"),
    "create": ("POST", ""),
    "update": ("PUT", ""),
    "patch": ("PATCH", ""),
    "delete": ("DELETE", ""),
    "deletecollection": ("DELETE", ""),
}


def register(subparsers: Any) -> None:
    """Add ``policy`` and its subcommands to the ``kproxy`` command line."""
    parser = subparsers.add_parser("policy", help="check, explain and render policies")
    commands = parser.add_subparsers(
        dest="policy_command", metavar="SUBCOMMAND", required=True
    )

    check = commands.add_parser("check", help="validate policy files")
    check.add_argument("directory", nargs="?", type=Path, help="policy directory")
    _config_argument(check)
    check.set_defaults(handler=run_check)

    explain = commands.add_parser("explain", help="show how a request would be decided")
    source = explain.add_mutually_exclusive_group(required=True)
    source.add_argument("--claims", type=Path, help="JSON or YAML file of claims")
    source.add_argument("--token", help="a JWT whose claims to use (not verified)")
    explain.add_argument("--dir", dest="directory", type=Path, help="policy directory")
    _config_argument(explain)
    explain.add_argument("verb", help="a Kubernetes verb or an HTTP method")
    explain.add_argument("path", help="the request path, optionally with ?query")
    explain.set_defaults(handler=run_explain)

    rbac = commands.add_parser("rbac", help="print RBAC objects for the policies")
    rbac.add_argument("--dir", dest="directory", type=Path, help="policy directory")
    _config_argument(rbac, required=True)
    rbac.add_argument(
        "--service-account",
        default="kproxy-system:kproxy",
        help="kproxy's own service account as NAMESPACE:NAME",
    )
    rbac.set_defaults(handler=run_rbac)

    schema = commands.add_parser("schema", help="print the policy file JSON Schema")
    schema.set_defaults(handler=lambda _: _print(policy_json_schema_text(), end=""))


def _config_argument(
    parser: argparse.ArgumentParser, *, required: bool = False
) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        required=required,
        help="kproxy's configuration file, whose federation section holds the guardrails",
    )


def _print(text: str, *, end: str = "\n") -> int:
    print(text, end=end)
    return 0


def _settings(args: argparse.Namespace) -> tuple[FederationSettings | None, Path]:
    """The guardrails (if a configuration was given) and the policy directory."""
    if args.config is None:
        return None, args.directory or Path("policies")
    settings = federation_settings(load_document(args.config))
    directory = (
        args.directory or args.config.resolve().parent / settings.policy_directory
    )
    return settings, directory


def run_check(args: argparse.Namespace) -> int:
    settings, directory = _settings(args)
    _, problems = load_policy_directory(directory, settings)
    for problem in problems:
        print(f"error: {problem}")
    if settings is None:
        print(
            "note: no --config given, so the guardrails were not checked",
            file=sys.stderr,
        )
    if problems:
        return ConfigError.exit_code
    count = len(policy_files(directory))
    print(f"{count} policy files in {directory} are valid")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    settings, directory = _settings(args)
    if settings is None:
        print("error: explain needs --config for the guardrails", file=sys.stderr)
        return ConfigError.exit_code
    universities, problems = load_policy_directory(directory, settings)
    if problems:
        raise ConfigError(problems)
    claims, verified_note = _claims(args)
    if verified_note:
        print(verified_note)
    try:
        identity = _identity(claims, args.config)
    except ClaimsRejectedError as exc:
        print(f"the issuer's claim rules refuse these claims: {exc.message}")
        return 1
    print(f"identity: issuer {identity.issuer}, subject {identity.subject}")
    policies = PolicySet.build(compile_guardrails(settings), universities)
    try:
        request = _request(args.verb, args.path)
    except BadRequestError as exc:
        print(f"request refused before any decision: {exc.message}")
        return 1
    _print_request(request)
    decision = policies.decide(identity, request)
    _print_decision(decision)
    return 0 if decision.allowed else 1


def _claims(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.claims is not None:
        document = load_document(args.claims)
        if not isinstance(document.data, dict):
            raise ConfigError.single(str(args.claims), "claims must be a mapping")
        return document.data, ""
    return _unverified_claims(args.token), UNVERIFIED_NOTE


def _unverified_claims(token: str) -> dict[str, Any]:
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ConfigError.single(
            "--token", "not a JWT: expected three dot-separated parts"
        )
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        unverified_claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError.single(
            "--token", "the payload is not base64url JSON"
        ) from exc
    if not isinstance(unverified_claims, dict):
        raise ConfigError.single("--token", "the payload is not a JSON object")
    return unverified_claims


def _identity(claims: dict[str, Any], config: Path) -> Identity:
    subject = str(claims.get("sub", ""))
    user = _issuer_user(claims, config)
    if user is None:
        print(
            "note: the configuration does not trust this issuer, so its claim "
            "mappings were approximated as username = sub and groups = 'groups'"
        )
        groups = claims.get("groups")
        groups = [groups] if isinstance(groups, str) else groups
        user = UserInfo(
            username=subject, groups=tuple(str(group) for group in groups or ())
        )
    expires = claims.get("exp")
    return Identity(
        user=user,
        issuer=str(claims.get("iss", "")),
        subject=subject,
        claims=claims,
        expires_at=float(expires) if isinstance(expires, int | float) else 0.0,
    )


def _issuer_user(claims: dict[str, Any], config: Path) -> UserInfo | None:
    """Map the claims as the running proxy would, with the issuer's own mappings."""
    document = load_document(config)
    settings = validate_section(document, "authentication", AuthenticationSettings)
    if settings is None:
        return None
    settings = resolve_authentication_settings(
        settings, base_dir=config.resolve().parent
    )
    for authenticator in settings.jwt or ():
        if authenticator.issuer.url == claims.get("iss"):
            mapper = ClaimMapper(
                authenticator, allow_system_names=settings.allow_system_names
            )
            return mapper.user_for(claims)
    return None


def _request(verb: str, target: str) -> Any:
    path, _, query = target.partition("?")
    method, extra_query = _METHOD_OF_VERB.get(verb.lower(), (verb.upper(), ""))
    if extra_query and "watch" not in query:
        query = f"{query}&{extra_query}" if query else extra_query
    return parse_request(method, path, query)


def _print_request(request: Any) -> None:
    if not request.is_resource_request:
        print(f"request: {request.verb} non-resource path {request.path}")
        return
    fields = (
        f"verb={request.verb} group={request.api_group!r} version={request.api_version} "
        f"namespace={request.namespace!r} resource={request.resource!r} "
        f"subresource={request.subresource!r} name={request.name!r}"
    )
    print(f"request: {fields}")


def _print_decision(decision: Decision) -> None:
    if decision.user is not None:
        user = decision.user
        print(f"university: {decision.university}")
        print(f"kubernetes user: {user.username}")
        print(f"groups: {', '.join(user.groups) or '(none)'}")
        for key, values in sorted(user.extra.items()):
            print(f"extra {key}: {', '.join(values)}")
    print(f"decision: {'allowed' if decision.allowed else 'denied'}")
    print(f"decided by: {decision.decided_by}")
    if decision.message:
        print(f"message: {decision.message}")


def run_rbac(args: argparse.Namespace) -> int:
    settings, directory = _settings(args)
    assert settings is not None  # noqa: S101  --config is required by the parser
    policies, problems = load_policy_models(directory, settings)
    if problems:
        raise ConfigError(problems)
    namespace, _, name = args.service_account.partition(":")
    if not namespace or not name:
        raise ConfigError.single("--service-account", "expected NAMESPACE:NAME")
    rendering = render_rbac(settings, policies, service_account=(namespace, name))
    print("# RBAC rendered by 'kproxy policy rbac' from the university policies.")
    for note in rendering.notes:
        print(f"# {note}")
    print(yaml.safe_dump_all(rendering.objects, sort_keys=False), end="")
    return 0
