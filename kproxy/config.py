"""The operator's configuration file: one YAML document, validated whole at start.

Each section's schema lives with the code that uses it (authentication in
``kproxy.auth``, guardrails in ``kproxy.policy``, the API server in ``kproxy.proxy``,
the audit trail in ``kproxy.observe``); this module composes them, adds the settings
that belong to the process itself (serving, limits, logging) and reports every problem
at once with file, line and field.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from kproxy.auth.config import AuthenticationSettings
from kproxy.configfile import Document, Model, load_document, validate
from kproxy.errors import ConfigError
from kproxy.observe.audit import AuditSettings
from kproxy.policy.settings import FederationSettings
from kproxy.proxy.upstream import UpstreamSettings


class TLSSettings(Model):
    cert_file: str
    key_file: str
    # How often the files are checked for a rotated pair; two stat calls each time.
    reload_interval_seconds: float = Field(default=10.0, gt=0, le=3600)


class ProbeSettings(Model):
    address: str = "0.0.0.0"  # noqa: S104  probes are meant to be reached by kubelet
    port: int = Field(default=8081, ge=0, le=65535)


class ServingSettings(Model):
    """Where kproxy listens. HTTPS unless plain HTTP is asked for on loopback."""

    address: str = "0.0.0.0"  # noqa: S104  a proxy in a pod listens on its pod IP
    port: int = Field(default=8443, ge=0, le=65535)
    tls: TLSSettings | None = None
    plain_http: bool = Field(default=False, alias="plainHTTP")
    probes: ProbeSettings = ProbeSettings()
    shutdown_grace_period_seconds: float = Field(default=30.0, ge=0)
    workers: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _tls_or_local_plain_http(self) -> ServingSettings:
        if self.plain_http and self.tls is not None:
            raise ValueError("set either tls or plainHTTP, not both")
        if self.plain_http and not _is_loopback(self.address):
            raise ValueError(
                "plainHTTP is for local use only: the address must be a loopback "
                f"address, not {self.address!r}"
            )
        if not self.plain_http and self.tls is None:
            raise ValueError("tls (certFile and keyFile) is required unless plainHTTP")
        return self


class ImpersonationSettings(Model):
    """What kproxy adds to the identity it impersonates, beyond the policy's mapping."""

    provenance: bool = True


class LimitSettings(Model):
    """Bounds on what one client may hold; the defaults suit a shared control plane.

    docs/limits.md explains each; 0 switches a rate or concurrency bound off.
    """

    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    # The API server's own bound on a request body (3 MiB), refused here earlier.
    max_body_bytes: int = Field(default=3 * 1024 * 1024, ge=1024)
    # From accepting a connection, or from the last answer on it, until a whole
    # request head has arrived: bounds idle keep-alive and slowly sent heads alike.
    client_idle_timeout_seconds: float = Field(default=90.0, gt=0)
    requests_per_second_per_university: float = Field(default=100.0, ge=0)
    burst_per_university: int = Field(default=200, ge=0)
    max_in_flight_per_identity: int = Field(default=200, ge=0)
    max_in_flight_per_university: int = Field(default=400, ge=0)
    max_long_running_per_identity: int = Field(default=100, ge=0)
    max_long_running_per_university: int = Field(default=200, ge=0)


class LoggingSettings(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class ProxyConfiguration(Model):
    """The whole file, as ``kproxy serve --config FILE`` reads it."""

    api_version: Literal["kproxy.io/v1alpha1"]
    kind: Literal["ProxyConfiguration"]
    serving: ServingSettings
    upstream: UpstreamSettings
    authentication: AuthenticationSettings
    federation: FederationSettings
    impersonation: ImpersonationSettings = ImpersonationSettings()
    limits: LimitSettings = LimitSettings()
    audit: AuditSettings = AuditSettings()
    logging: LoggingSettings = LoggingSettings()


@dataclass(frozen=True, slots=True)
class LoadedConfiguration:
    """A validated configuration and the directory its relative paths start from."""

    settings: ProxyConfiguration
    base_dir: Path
    document: Document

    def path(self, value: str) -> Path:
        # Symlinks are kept, not resolved: a Secret volume's files point through
        # ``..data``, which the kubelet swaps on rotation; a resolved path would stay
        # pinned to the directory it named at start, which is then deleted.
        return Path(os.path.normpath(self.base_dir / value))


def load_configuration(path: str | Path) -> LoadedConfiguration:
    """Read and validate the operator's file; raise ``ConfigError`` naming each problem."""
    document = load_document(path)
    if not isinstance(document.data, dict):
        raise ConfigError([document.problem((), "expected a mapping at the top level")])
    settings = validate(document, ProxyConfiguration)
    return LoadedConfiguration(
        settings=settings,
        # The file's own directory, even when the file is a ConfigMap's symlink.
        base_dir=Path(os.path.normpath(Path(path).absolute())).parent,
        document=document,
    )


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
