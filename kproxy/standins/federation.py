"""A whole federation on loopback: source-cluster issuers, a target API server, kproxy.

The demo and the functional tests need the same picture a real federation has: each
university's cluster issues projected service-account tokens, an identity federation
issues people's tokens, and kproxy stands in front of the target's API server with the
universities' policy files. Everything here speaks real TLS under one throw-away
certificate authority, and kproxy is the real ``Proxy`` reading a real configuration
file, so nothing between a client and the API server stand-in is simulated.

The API server enforces the RBAC that ``kproxy policy rbac`` renders from the same
policy files, and kproxy may impersonate only what that rendering allows: a request
kproxy lets through must also pass the target's own authorization.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from kproxy.config import load_configuration
from kproxy.configfile import load_document
from kproxy.errors import ConfigError
from kproxy.policy.loading import federation_settings, load_policy_models
from kproxy.policy.rbac import render_rbac
from kproxy.running import Proxy
from kproxy.standins.apiserver import (
    ApiServer,
    Binding,
    CertificateAuthority,
    PolicyRule,
)
from kproxy.standins.issuer import IssuerStandin

AUDIENCE: Final = "https://target.kproxy.test"
KPROXY_SERVICE_ACCOUNT: Final = ("kproxy-system", "kproxy")
PEOPLE_ISSUER: Final = "cilogon"

# The operator's guardrails for the example universities in ``policies/``. Issuer URLs
# are filled in once the stand-ins listen.
DEFAULT_UNIVERSITIES: Final[Mapping[str, Sequence[str]]] = {
    "alpha": ("cluster", PEOPLE_ISSUER),
    "beta": ("cluster", PEOPLE_ISSUER),
    "gamma": ("cluster",),
}


@dataclass
class LocalFederation:
    """Start with ``await start()``; everything lives under ``workdir``.

    ``external_issuers`` are issuers the federation trusts but does not run, such as a
    real identity provider: a short name (which ``universities`` may list) mapped to
    its ``authentication.jwt`` entry, written as in the configuration file.
    ``extra_settings`` are merged into the configuration one level deep: a mapping
    updates the section of the same name, anything else replaces it.
    """

    workdir: Path
    policy_dir: Path
    universities: Mapping[str, Sequence[str]] = field(
        default_factory=lambda: dict(DEFAULT_UNIVERSITIES)
    )
    namespaces: Iterable[str] = ("alpha", "beta", "gamma", "shared")
    grants_enabled: bool = True
    extra_settings: Mapping[str, Any] = field(default_factory=dict)
    external_issuers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    ca: CertificateAuthority = field(init=False)
    apiserver: ApiServer = field(init=False)
    issuers: dict[str, IssuerStandin] = field(init=False, default_factory=dict)
    proxy: Proxy = field(init=False)
    config_file: Path = field(init=False)
    ca_file: Path = field(init=False)

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.apiserver = ApiServer()
        self.ca = self.apiserver.ca
        self.ca_file = self.workdir / "ca.crt"
        self.ca_file.write_bytes(self.ca.cert_pem)
        await self.apiserver.start()
        for namespace in self.namespaces:
            self.apiserver.create(_namespace(namespace))
        await self._start_issuers()
        self.config_file = self._write_configuration()
        self._enforce_rendered_rbac()
        self.proxy = Proxy(load_configuration(self.config_file))
        await self.proxy.start()

    async def stop(self) -> None:
        await self.proxy.stop()
        for issuer in self.issuers.values():
            await issuer.stop()
        await self.apiserver.stop()

    @property
    def url(self) -> str:
        return self.proxy.addresses[0]

    def issuer_url(self, university: str, short_name: str = "cluster") -> str:
        """The URL of one of the university's issuers, run here or external."""
        external = self.external_issuers.get(short_name)
        if external is not None:
            return str(external["issuer"]["url"])
        return self.issuer(university, short_name).url

    def issuer(self, university: str, short_name: str = "cluster") -> IssuerStandin:
        key = (
            short_name if short_name == PEOPLE_ISSUER else f"{university}-{short_name}"
        )
        return self.issuers[key]

    def scheduler_token(
        self,
        university: str,
        *,
        namespace: str = "admiralty",
        name: str = "multicluster-scheduler",
        **claims: Any,
    ) -> str:
        """A projected token of the university's scheduler, for kproxy's audience."""
        issuer = self.issuer(university)
        return issuer.mint_service_account(
            audience=AUDIENCE, namespace=namespace, name=name, **claims
        )

    def person_token(self, email: str, *, idp: str, **claims: Any) -> str:
        """A person's ID token from the identity federation."""
        issuer = self.issuers[PEOPLE_ISSUER]
        return issuer.mint_person(audience=AUDIENCE, email=email, idp=idp, **claims)

    def kubeconfig(
        self, token: str, *, name: str = "kproxy", namespace: str = ""
    ) -> Path:
        """Write a kubeconfig reaching the target through kproxy with ``token``."""
        token_file = self.workdir / f"{name}.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        context: dict[str, str] = {"cluster": "target", "user": name}
        if namespace:
            context["namespace"] = namespace
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "target",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": name, "user": {"tokenFile": str(token_file)}}],
            "contexts": [{"name": name, "context": context}],
            "current-context": name,
        }
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        path.chmod(0o600)
        return path

    async def _start_issuers(self) -> None:
        names = {PEOPLE_ISSUER} if self._has_people() else set()
        for university, short_names in self.universities.items():
            names.update(
                f"{university}-{short}"
                for short in short_names
                if short != PEOPLE_ISSUER and short not in self.external_issuers
            )
        for name in sorted(names):
            issuer = IssuerStandin(ssl_context=self._server_tls(name))
            await issuer.start()
            self.issuers[name] = issuer

    def _has_people(self) -> bool:
        return any(PEOPLE_ISSUER in names for names in self.universities.values())

    def _server_tls(self, name: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self._server_pair(name))
        return context

    def _server_pair(self, name: str) -> tuple[Path, Path]:
        pair = self.ca.issue_server()
        cert_file = self.workdir / f"{name}.crt"
        key_file = self.workdir / f"{name}.key"
        cert_file.write_bytes(pair.cert_pem)
        key_file.write_bytes(pair.key_pem)
        key_file.chmod(0o600)
        return cert_file, key_file

    def _federation(self) -> dict[str, Any]:
        universities = {
            university: {
                "issuers": {
                    short: self.issuer_url(university, short) for short in short_names
                },
                "usernamePrefix": f"{university}:",
                "groupPrefix": f"{university}:",
            }
            for university, short_names in self.universities.items()
        }
        return {
            "policyDirectory": str(self.policy_dir.resolve()),
            "universities": universities,
            "forbiddenUsers": ["system:*"],
            "forbiddenGroups": ["system:*"],
            "reservedNamespaces": ["kube-*", "kproxy-system"],
            "namespaceGrants": {"enabled": self.grants_enabled},
        }

    def _authentication(self) -> dict[str, Any]:
        entries = [
            _jwt_entry(name, issuer.url, self.ca.cert_pem.decode())
            for name, issuer in sorted(self.issuers.items())
        ]
        return {"jwt": [*entries, *self.external_issuers.values()]}

    def _write_configuration(self) -> Path:
        cert_file, key_file = self._server_pair("kproxy")
        upstream = self.workdir / "upstream.kubeconfig"
        upstream.write_text(
            yaml.safe_dump(
                self.apiserver.kubeconfig(
                    self.apiserver.proxy_credentials, use_certificate=True
                )
            )
        )
        upstream.chmod(0o600)
        settings: dict[str, Any] = {
            "apiVersion": "kproxy.io/v1alpha1",
            "kind": "ProxyConfiguration",
            "serving": {
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"certFile": cert_file.name, "keyFile": key_file.name},
                "probes": {"address": "127.0.0.1", "port": 0},
                "shutdownGracePeriodSeconds": 2,
            },
            "upstream": {"kubeconfig": upstream.name},
            "authentication": self._authentication(),
            "federation": self._federation(),
            "audit": {"path": "audit.log"},
            "logging": {"level": "warning"},
        }
        for key, value in self.extra_settings.items():
            section = settings.get(key)
            if isinstance(section, dict) and isinstance(value, Mapping):
                settings[key] = {**section, **value}
            else:
                settings[key] = value
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        return path

    def _enforce_rendered_rbac(self) -> None:
        """Give the API server exactly the RBAC ``kproxy policy rbac`` renders."""
        document = load_document(self.config_file)
        settings = federation_settings(document)
        policies, problems = load_policy_models(self.policy_dir, settings)
        if problems:
            raise ConfigError(problems)
        rendering = render_rbac(
            settings, policies, service_account=KPROXY_SERVICE_ACCOUNT
        )
        self.apply_rbac(rendering.objects)

    def apply_rbac(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Do what ``kubectl apply`` of rendered RBAC objects does at the API server.

        The stand-in serves no RBAC API, so the objects become its bindings here.
        kproxy's impersonation rights are replaced by the ones ``objects`` grant, as
        applying a new rendering replaces its ClusterRole; other bindings are added.
        """
        proxy_user = self.apiserver.proxy_credentials.username
        bindings = list(bindings_from_rbac(objects, service_account_user=proxy_user))
        if not any(proxy_user in binding.users for binding in bindings):
            self.apiserver.grant(*bindings)
            return
        # kproxy's own reads: the namespace grants it watches, and the version it
        # checks for readiness.
        bindings.append(
            Binding(
                rules=(
                    PolicyRule(
                        verbs=("get", "list", "watch"),
                        api_groups=("kproxy.io",),
                        resources=("namespacegrants",),
                    ),
                    PolicyRule(verbs=("get",), non_resource_urls=("/version",)),
                ),
                users=(proxy_user,),
            )
        )
        self.apiserver.bindings = (*_without_proxy_rights(self.apiserver), *bindings)


def bindings_from_rbac(
    objects: Iterable[Mapping[str, Any]], *, service_account_user: str
) -> Iterable[Binding]:
    """Translate rendered RBAC objects into the stand-in's bindings.

    The rendered ClusterRoleBinding names kproxy's service account; in the stand-in
    kproxy authenticates as ``service_account_user``.
    """
    roles: dict[tuple[str, str | None], tuple[PolicyRule, ...]] = {}
    for obj in objects:
        if obj["kind"] in ("Role", "ClusterRole"):
            key = (obj["metadata"]["name"], obj["metadata"].get("namespace"))
            roles[key] = tuple(_policy_rule(rule) for rule in obj["rules"])
    for obj in objects:
        if obj["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        namespace = obj["metadata"].get("namespace")
        role_namespace = namespace if obj["roleRef"]["kind"] == "Role" else None
        rules = roles[(obj["roleRef"]["name"], role_namespace)]
        groups = tuple(s["name"] for s in obj["subjects"] if s["kind"] == "Group")
        users = tuple(
            service_account_user
            for s in obj["subjects"]
            if s["kind"] == "ServiceAccount"
        )
        yield Binding(rules=rules, users=users, groups=groups, namespace=namespace)


def _policy_rule(rule: Mapping[str, Any]) -> PolicyRule:
    return PolicyRule(
        verbs=tuple(rule["verbs"]),
        api_groups=tuple(rule.get("apiGroups", ())),
        resources=tuple(rule.get("resources", ())),
        resource_names=tuple(rule.get("resourceNames", ())),
        non_resource_urls=tuple(rule.get("nonResourceURLs", ())),
    )


def _without_proxy_rights(apiserver: ApiServer) -> tuple[Binding, ...]:
    proxy_user = apiserver.proxy_credentials.username
    return tuple(b for b in apiserver.bindings if proxy_user not in b.users)


def _jwt_entry(name: str, url: str, ca_pem: str) -> dict[str, Any]:
    groups = {"claim": "groups", "prefix": ""} if name == PEOPLE_ISSUER else None
    # A service account's subject is a "system:" name of the source cluster; the
    # prefix keeps it from ever reading as one of the target's own.
    prefix = "" if name == PEOPLE_ISSUER else f"{name}:"
    mappings: dict[str, Any] = {"username": {"claim": "sub", "prefix": prefix}}
    if groups is not None:
        mappings["groups"] = groups
    return {
        "issuer": {
            "url": url,
            "audiences": [AUDIENCE],
            "certificateAuthority": ca_pem,
        },
        "claimMappings": mappings,
    }


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
