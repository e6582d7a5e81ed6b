"""The federation a benchmark runs under: issuer, universities, policies, config files.

Sizes follow the brief's worst plausible case: 100 universities of 50 rules each, all
admitting service accounts of one shared issuer (as many campuses share CILogon), so
admission considers every university's entry and the rule scan is long. The bench
university's pod rule comes last in its file, after 49 rules for the same verbs that do
not match, so a decision walks the whole list before it allows.

Tokens are signed by an in-process issuer whose public keys kproxy is given as a
static key set: no discovery fetch happens while measuring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from bench.upstream import NAMESPACE
from kproxy.standins.apiserver.certificates import CertificateAuthority
from kproxy.standins.issuer import IssuerStandin, SigningKey

ISSUER_URL: Final = "https://cluster.bench.invalid/k8s"
AUDIENCE: Final = "https://kproxy.bench.invalid"
UPSTREAM_TOKEN: Final = "upstream-credential"
UPSTREAM_POOL: Final = 12_000
UNLIMITED: Final = (
    "requestsPerSecondPerUniversity",
    "burstPerUniversity",
    "maxInFlightPerIdentity",
    "maxInFlightPerUniversity",
    "maxLongRunningPerIdentity",
    "maxLongRunningPerUniversity",
)


def university_name(index: int) -> str:
    return f"u{index:03d}"


def bench_university(universities: int) -> int:
    """The university whose identity every benchmark request carries: the middle one."""
    return universities // 2


def service_account_namespace(index: int) -> str:
    return f"admiralty-{university_name(index)}"


def policy_document(index: int, *, rules: int, bench: bool) -> dict[str, Any]:
    """One university's policy: ``rules - 1`` near misses, then the pod rule."""
    name = university_name(index)
    near_misses = [
        {
            "name": f"objects-{n}",
            "namespaces": [f"{name}-ns{n}"],
            "apiGroups": ["", "apps", "batch"],
            "resources": ["configmaps", "secrets", "services", f"things{n}"],
            "verbs": ["get", "list", "watch", "create", "update"],
        }
        for n in range(rules - 1)
    ]
    pods = {
        "name": "pods",
        "namespaces": [NAMESPACE if bench else name],
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch"],
    }
    return {
        "apiVersion": "kproxy.io/v1alpha1",
        "kind": "UniversityPolicy",
        "metadata": {"name": name},
        "identities": [
            {
                "name": "scheduler",
                "issuer": "cluster",
                "serviceAccount": {"namespace": service_account_namespace(index)},
                "user": {"username": "{serviceAccountName}"},
            }
        ],
        "rules": [*near_misses, pods],
    }


def federation_section(universities: int, policy_directory: str) -> dict[str, Any]:
    return {
        "policyDirectory": policy_directory,
        "universities": {
            university_name(i): {
                "issuers": {"cluster": ISSUER_URL},
                "usernamePrefix": f"{university_name(i)}:",
                "groupPrefix": f"{university_name(i)}:",
            }
            for i in range(universities)
        },
    }


def authentication_section(jwks: dict[str, Any]) -> dict[str, Any]:
    return {
        "jwt": [
            {
                "issuer": {"url": ISSUER_URL, "audiences": [AUDIENCE]},
                "claimMappings": {"username": {"claim": "sub", "prefix": "cluster:"}},
                "jwks": {"keys": jwks["keys"]},
            }
        ]
    }


def new_issuer() -> IssuerStandin:
    """An issuer that signs but never listens: its keys go into the configuration."""
    key = SigningKey.generate("RS256")
    issuer = IssuerStandin(algorithms=("RS256",), keys=[key], published=[key])
    issuer.url = ISSUER_URL
    return issuer


def mint(issuer: IssuerStandin, *, universities: int, name: str = "scheduler") -> str:
    """A service-account token of the bench university, valid for an hour."""
    return issuer.mint_service_account(
        audience=AUDIENCE,
        namespace=service_account_namespace(bench_university(universities)),
        name=name,
        lifetime=3600,
    )


def write_policies(directory: Path, *, universities: int, rules: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(universities):
        document = policy_document(
            index, rules=rules, bench=index == bench_university(universities)
        )
        text = yaml.safe_dump(document, sort_keys=False)
        (directory / f"{university_name(index)}.yaml").write_text(text)


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    ca_file: Path
    cert_file: Path
    key_file: Path


def write_upstream_tls(directory: Path) -> UpstreamTLS:
    """A throw-away CA and the upstream's serving certificate for 127.0.0.1."""
    authority = CertificateAuthority("kproxy-bench-ca")
    pair = authority.issue_server(("127.0.0.1", "localhost"))
    tls = UpstreamTLS(
        directory / "ca.pem", directory / "upstream.pem", directory / "upstream-key.pem"
    )
    tls.ca_file.write_bytes(authority.cert_pem)
    tls.cert_file.write_bytes(pair.cert_pem)
    tls.key_file.write_bytes(pair.key_pem)
    return tls


def write_kubeconfig(path: Path, *, server: str, ca_file: Path) -> Path:
    """The kubeconfig both proxies use to reach the upstream, with one token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "bench",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": "kproxy", "user": {"token": UPSTREAM_TOKEN}}],
        "contexts": [
            {"name": "bench", "context": {"cluster": "bench", "user": "kproxy"}}
        ],
        "current-context": "bench",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def write_kproxy_configuration(
    directory: Path,
    *,
    kubeconfig: Path,
    issuer: IssuerStandin,
    universities: int,
    rules: int,
    port: int,
    workers: int = 1,
    audit: bool = True,
) -> Path:
    """kproxy's ``ProxyConfiguration``: plain HTTP on loopback, TLS to the upstream."""
    write_policies(directory / "policies", universities=universities, rules=rules)
    configuration = {
        "apiVersion": "kproxy.io/v1alpha1",
        "kind": "ProxyConfiguration",
        "serving": {
            "address": "127.0.0.1",
            "port": port,
            "plainHTTP": True,
            "workers": workers,
            "probes": {"address": "127.0.0.1", "port": 0},
        },
        # The default pool (512) would queue every watch past the 512th: a watch
        # holds its upstream connection, so the pool must exceed the watches held.
        "upstream": {"kubeconfig": str(kubeconfig), "poolSize": UPSTREAM_POOL},
        "authentication": authentication_section(issuer.jwks()),
        "federation": federation_section(universities, "policies"),
        "audit": {
            "enabled": audit,
            "path": str(directory / "audit.log"),
            "level": "Metadata",
        },
        # Rate and concurrency limits off: the benchmark measures the request path's
        # capacity, and one identity holds every connection of the load generator.
        "limits": dict.fromkeys(UNLIMITED, 0),
        "logging": {"level": "warning"},
    }
    path = directory / "kproxy.yaml"
    path.write_text(json.dumps(configuration, indent=1))
    return path
