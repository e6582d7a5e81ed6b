"""The ``kubernetes`` Python client against the stand-in: list, create, watch, exec."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, stream, watch
from kubernetes.client.rest import ApiException

from kproxy.standins.apiserver import ApiServer, Credentials

from .conftest import pod


@pytest.fixture
def core(
    apiserver: ApiServer, admin: Credentials, tmp_path: Path
) -> Iterator[client.CoreV1Api]:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(apiserver.ca_pem)
    configuration = client.Configuration()
    configuration.host = apiserver.url
    configuration.ssl_ca_cert = str(ca)
    configuration.api_key = {"authorization": admin.token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(configuration) as api_client:
        yield client.CoreV1Api(api_client)


async def test_create_then_list(core: client.CoreV1Api) -> None:
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="settings"), data={"a": "1"}
    )

    created = await asyncio.to_thread(
        core.create_namespaced_config_map, "default", body
    )
    listed = await asyncio.to_thread(core.list_namespaced_config_map, "default")

    assert created.metadata.uid
    assert [item.data for item in listed.items] == [{"a": "1"}]
    assert int(listed.metadata.resource_version) >= int(
        created.metadata.resource_version
    )


async def test_create_twice_is_a_conflict(core: client.CoreV1Api) -> None:
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="twice"))
    await asyncio.to_thread(core.create_namespaced_config_map, "default", body)

    with pytest.raises(ApiException) as caught:
        await asyncio.to_thread(core.create_namespaced_config_map, "default", body)

    assert caught.value.status == 409
    assert '"reason": "AlreadyExists"' in caught.value.body.replace('":"', '": "')


async def test_watch_from_a_list_version_sees_later_changes(
    apiserver: ApiServer, core: client.CoreV1Api
) -> None:
    listed = await asyncio.to_thread(core.list_namespaced_pod, "default")
    apiserver.create(pod("later"))

    def first_event() -> tuple[str, str]:
        events = watch.Watch().stream(
            core.list_namespaced_pod,
            "default",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=20,
        )
        try:
            event = next(events)
        finally:
            events.close()
        return event["type"], event["object"].metadata.name

    assert await asyncio.to_thread(first_event) == ("ADDED", "later")


async def test_watch_from_a_compacted_version_raises_gone(
    apiserver: ApiServer, core: client.CoreV1Api
) -> None:
    listed = await asyncio.to_thread(core.list_namespaced_pod, "default")
    apiserver.create(pod("churn"))
    apiserver.store.compact()

    def watch_from_old() -> None:
        for _ in watch.Watch().stream(
            core.list_namespaced_pod,
            "default",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=20,
        ):
            pass

    with pytest.raises(ApiException) as caught:
        await asyncio.to_thread(watch_from_old)

    assert caught.value.status == 410


async def test_exec_over_the_v4_channel_protocol(
    apiserver: ApiServer, core: client.CoreV1Api
) -> None:
    apiserver.create(pod("shell"))

    def run() -> str:
        # websocket-client's close() leaves its socket open when the server closed
        # first, as kubelet and this stand-in do after the status; close it here.
        session = stream.stream(
            core.connect_get_namespaced_pod_exec,
            "shell",
            "default",
            command=["echo", "from", "python"],
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            _preload_content=False,
        )
        raw_socket = session.sock.sock
        try:
            session.run_forever(timeout=20)
            return str(session.read_stdout())
        finally:
            session.close()
            raw_socket.close()

    output = await asyncio.to_thread(run)

    assert output == "from python\n"
    protocols = apiserver.requests[-1].header_values("Sec-WebSocket-Protocol")
    assert "v4.channel.k8s.io" in protocols[0]


async def test_port_forward_echoes_bytes(
    apiserver: ApiServer, core: client.CoreV1Api
) -> None:
    apiserver.create(pod("server"))

    def round_trip() -> bytes:
        forward = stream.portforward(
            core.connect_get_namespaced_pod_portforward,
            "server",
            "default",
            ports="8080",
        )
        socket = forward.socket(8080)
        socket.settimeout(20)
        socket.sendall(b"ping")
        received = b""
        while len(received) < 4:
            received += socket.recv(4 - len(received))
        socket.close()
        forward.close()
        # The client's proxy thread closes the WebSocket on its own; wait for it.
        for _ in range(400):
            if not forward.connected:
                break
            time.sleep(0.05)
        return received

    assert await asyncio.to_thread(round_trip) == b"ping"
