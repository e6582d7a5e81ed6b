"""An in-process stand-in for kube-apiserver, for kproxy's tests, demo and benchmark.

No kube-apiserver can run where kproxy is tested, so this package imitates the parts
of it that kproxy and its clients (kubectl 1.32, the ``kubernetes`` Python client)
touch, each module naming the kube-apiserver source it follows: client-certificate and
token authentication, the impersonation filter, RBAC-like authorization, in-memory
resources with watches, discovery and OpenAPI, logs, and exec, attach and
port-forward over WebSocket channels. Fault switches make it misbehave on demand.

Start it with ``async with running_apiserver() as apiserver:`` (or ``ApiServer()``
and ``await start()``/``await stop()``); ``apiserver.url``, ``apiserver.ca_pem`` and
``apiserver.proxy_credentials`` are what kproxy's upstream configuration needs.
"""

from .certificates import CertificateAuthority, KeyPair
from .faults import Faults
from .rbac import Binding, PolicyRule
from .server import ApiServer, Credentials, RecordedRequest, running_apiserver

__all__ = [
    "ApiServer",
    "Binding",
    "CertificateAuthority",
    "Credentials",
    "Faults",
    "KeyPair",
    "PolicyRule",
    "RecordedRequest",
    "running_apiserver",
]
