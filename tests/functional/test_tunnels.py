"""Port-forward through kproxy with the ``kubernetes`` Python client.

kubectl 1.32 carries port-forward as SPDY inside a WebSocket, which the API server
stand-in does not speak, so port-forward is shown with the Python client's WebSocket
port-forward, the protocol the kubelet serves. kproxy carries either the same way: it
tunnels the bytes of whatever the API server accepted with a 101.
"""

from __future__ import annotations

import asyncio
import time

from kubernetes import client, stream
from kubernetes.client.rest import ApiException

from kproxy.standins.federation import LocalFederation

from .clients import python_client
from .conftest import WORKSHOP, pod


def forward_once(core: client.CoreV1Api, name: str, payload: bytes) -> bytes:
    forward = stream.portforward(
        core.connect_get_namespaced_pod_portforward, name, WORKSHOP, ports="8080"
    )
    try:
        socket = forward.socket(8080)
        socket.settimeout(20)
        socket.sendall(payload)
        received = b""
        while len(received) < len(payload):
            received += socket.recv(len(payload) - len(received))
        socket.close()
    finally:
        forward.close()
        # The client's own thread closes the WebSocket; wait for it, boundedly.
        for _ in range(400):
            if not forward.connected:
                break
            time.sleep(0.05)
    return received


async def test_port_forward_is_tunnelled_both_ways_as_the_mapped_user(
    workshop: LocalFederation,
) -> None:
    workshop.apiserver.create(pod("server", WORKSHOP))
    token = workshop.scheduler_token(WORKSHOP)

    with python_client(workshop, token, name="delta") as api:
        core = client.CoreV1Api(api)
        echoed = await asyncio.to_thread(forward_once, core, "server", b"ping-pong")

    assert echoed == b"ping-pong"
    upgrade = next(
        r for r in workshop.apiserver.requests if r.path.endswith("/portforward")
    )
    assert upgrade.user is not None
    assert upgrade.user.username == "delta:multicluster-scheduler"
    assert token not in " ".join(value for _, value in upgrade.headers)


async def test_port_forward_to_another_namespace_is_refused_before_any_tunnel(
    workshop: LocalFederation,
) -> None:
    workshop.apiserver.create(pod("server", "other"))
    token = workshop.scheduler_token(WORKSHOP)

    with python_client(workshop, token, name="delta") as api:
        core = client.CoreV1Api(api)

        def attempt() -> str:
            try:
                stream.portforward(
                    core.connect_get_namespaced_pod_portforward,
                    "server",
                    "other",
                    ports="8080",
                )
            except ApiException as exc:
                # The client reports a refused WebSocket handshake in the reason.
                return str(exc.reason)
            return "opened"

        outcome = await asyncio.to_thread(attempt)

    assert outcome.startswith("Handshake status 403 Forbidden")
    assert not any(r.path.endswith("/portforward") for r in workshop.apiserver.requests)
