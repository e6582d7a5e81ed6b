"""A Kubernetes-shaped upstream fast enough never to be what a benchmark measures.

A proxy benchmark is only as good as its upstream is fast: if the upstream saturates
first, every proxy looks the same. So this is not the API server stand-in of the tests
but a bare HTTP/1.1 server on asyncio streams' protocol layer (on uvloop when present),
whose every answer is a byte string computed at start:

- ``GET /api/v1/namespaces/bench/pods/web-0``: a small Pod object (1.5 KB);
- ``GET /api/v1/namespaces/bench/pods``: a PodList of 1 MiB;
- ``GET /api/v1/namespaces/bench/pods?watch=true``: a chunked watch stream that stays
  idle until ``POST /bench/emit`` writes one ``MODIFIED`` event to every open watch;
- ``GET /bench/watches``: how many watches are open, so the harness knows when all of
  its watches really reached the upstream.

It speaks keep-alive HTTP/1.1 with ``Content-Length`` as kube-apiserver does, and
understands only what the benchmark sends: requests without bodies except the emit.
Run it as ``python -m bench.upstream``; it prints ``listening PORT [TLS_PORT]`` once
ready, the TLS port only when given a certificate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from typing import Any, Final, cast

NAMESPACE: Final = "bench"
POD_PATH: Final = f"/api/v1/namespaces/{NAMESPACE}/pods/web-0"
LIST_PATH: Final = f"/api/v1/namespaces/{NAMESPACE}/pods"
WATCH_PATH: Final = f"{LIST_PATH}?watch=true"
EMIT_PATH: Final = "/bench/emit"
WATCHES_PATH: Final = "/bench/watches"
LIST_BYTES: Final = 1024 * 1024
MAX_REQUEST_HEAD: Final = 64 * 1024


def pod(name: str, index: int = 0) -> dict[str, Any]:
    """A Pod as the API server returns it, with the fields controllers read."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"5e1c0b7a-0000-4000-8000-{index:012d}",
            "resourceVersion": str(1000 + index),
            "creationTimestamp": "2024-05-01T12:00:00Z",
            "labels": {"app": "web", "multicluster.admiralty.io/parent": "web"},
            "annotations": {"kubectl.kubernetes.io/default-container": "web"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d9f8c6b5",
                    "uid": "2f4e7c1a-0000-4000-8000-000000000001",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.edu/web:1.4.2",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "256Mi"},
                        "limits": {"cpu": "1", "memory": "512Mi"},
                    },
                    "volumeMounts": [
                        {
                            "name": "kube-api-access",
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                            "readOnly": True,
                        }
                    ],
                    "terminationMessagePath": "/dev/termination-log",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "restartPolicy": "Always",
            "serviceAccountName": "default",
            "nodeName": "node-1",
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            ],
        },
        "status": {
            "phase": "Running",
            "hostIP": "10.0.0.11",
            "podIP": f"10.244.1.{index % 250 + 2}",
            "startTime": "2024-05-01T12:00:01Z",
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                {
                    "name": "web",
                    "ready": True,
                    "restartCount": 0,
                    "image": "registry.example.edu/web:1.4.2",
                    "started": True,
                }
            ],
        },
    }


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def pod_list(target_bytes: int = LIST_BYTES) -> bytes:
    """A PodList body of exactly ``target_bytes``, padded in the list metadata."""
    shell = {
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": "99999", "continue": ""},
        "items": [],
    }
    items: list[bytes] = []
    size = len(_json(shell))
    while size < target_bytes - 4096:
        items.append(_json(pod(f"web-{len(items)}", len(items))))
        size += len(items[-1]) + 1
    pods = [json.loads(item) for item in items]
    body = _json({**shell, "items": pods})
    padding = target_bytes - len(body)
    shell["metadata"]["continue"] = "x" * max(padding, 0)
    body = _json({**shell, "items": pods})
    return body[:target_bytes] if len(body) > target_bytes else body


def response(body: bytes, *, status: str = "200 OK") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: application/json\r\n"
        "Audit-Id: 00000000-0000-4000-8000-000000000000\r\n"
        "Cache-Control: no-cache, private\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


WATCH_HEAD: Final = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Cache-Control: no-cache, private\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


class Bodies:
    """Every answer, computed once."""

    def __init__(self, list_bytes: int = LIST_BYTES) -> None:
        self.pod = response(_json(pod("web-0")))
        self.pod_list = response(pod_list(list_bytes))
        self.event = chunk(_json({"type": "MODIFIED", "object": pod("web-0")}) + b"\n")
        self.not_found = response(
            _json({"kind": "Status", "status": "Failure", "code": 404}),
            status="404 Not Found",
        )


class Upstream(asyncio.Protocol):
    """One client connection: parse request heads, write precomputed answers."""

    def __init__(self, bodies: Bodies, watches: set[asyncio.Transport]) -> None:
        self.bodies = bodies
        self.watches = watches
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.watches.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_REQUEST_HEAD:
                    self.transport.close()
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            self.answer(head)

    def answer(self, head: bytes) -> None:
        assert self.transport is not None
        target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
        if target == POD_PATH:
            self.transport.write(self.bodies.pod)
        elif target == LIST_PATH:
            self.transport.write(self.bodies.pod_list)
        elif target.startswith(LIST_PATH + "?") and "watch=true" in target:
            self.transport.write(WATCH_HEAD)
            self.watches.add(self.transport)
        elif target == EMIT_PATH:
            self.emit()
        elif target == WATCHES_PATH:
            self.transport.write(response(b"%d" % len(self.watches)))
        else:
            self.transport.write(self.bodies.not_found)

    def emit(self) -> None:
        assert self.transport is not None
        for watch in tuple(self.watches):
            watch.write(self.bodies.event)
        self.transport.write(response(b"%d" % len(self.watches)))


async def serve(host: str, list_bytes: int, tls: ssl.SSLContext | None) -> None:
    """Listen in plain HTTP (direct runs, control) and, given a context, in TLS.

    Proxies reach an API server over TLS, so they are pointed at the TLS port; the
    plain port is the floor every proxy is compared with.
    """
    bodies = Bodies(list_bytes)
    watches: set[asyncio.Transport] = set()
    loop = asyncio.get_running_loop()
    contexts = [None] if tls is None else [None, tls]
    servers = [
        await loop.create_server(
            lambda: Upstream(bodies, watches), host, 0, backlog=4096, ssl=context
        )
        for context in contexts
    ]
    ports = [str(server.sockets[0].getsockname()[1]) for server in servers]
    print("listening", *ports, flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--list-bytes", type=int, default=LIST_BYTES)
    arguments = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the "fast" extra
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        tls = None
        if arguments.tls_cert:
            tls = tls_context(arguments.tls_cert, arguments.tls_key)
        runner(serve(arguments.host, arguments.list_bytes, tls))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
