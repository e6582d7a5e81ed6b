"""``kproxy demo``: a federation on loopback, one request allowed and one refused.

The demo starts what a real deployment has, over real TLS: each example university's
cluster as a service-account issuer, an identity federation for people, the target's
API server (a stand-in, since none can be installed here) and kproxy itself, reading
the policy files in ``policies/``. It then acts as Alpha's multi-cluster scheduler:
it delegates a pod into Alpha's namespace, which the policy allows, and tries the same
in Beta's, which it refuses, printing for each what kproxy decided and why. It leaves a
kubeconfig behind and keeps serving so that kubectl can be tried by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import aiohttp

from kproxy.policy.attributes import parse_request
from kproxy.standins.federation import LocalFederation

PODCHAPERONS: Final = (
    "/apis/multicluster.admiralty.io/v1alpha1/namespaces/{}/podchaperons"
)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo", help="run a local demo federation: issuers, an API server, kproxy"
    )
    parser.add_argument(
        "--policies",
        type=Path,
        default=Path("policies"),
        help="directory of university policy files (default: ./policies)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(".demo"),
        help="where the demo writes its configuration, certificates and kubeconfig",
    )
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument(
        "--keep-running",
        dest="keep_running",
        action="store_true",
        default=None,
        help="keep serving after the demonstration (default when run in a terminal)",
    )
    keep.add_argument(
        "--no-keep-running",
        dest="keep_running",
        action="store_false",
        help="stop after the demonstration",
    )
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    if not args.policies.is_dir():
        print(
            f"error: policy directory {str(args.policies)!r} not found", file=sys.stderr
        )
        return 2
    keep_running = (
        sys.stdin.isatty() if args.keep_running is None else args.keep_running
    )
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    federation = LocalFederation(args.workdir.resolve(), policy_dir=args.policies)
    return asyncio.run(_run(federation, keep_running=keep_running))


async def _run(federation: LocalFederation, *, keep_running: bool) -> int:
    await federation.start()
    try:
        ok = await _demonstrate(federation)
        if keep_running and ok:
            await _serve_until_interrupted()
    finally:
        await federation.stop()
    return 0 if ok else 1


async def _demonstrate(federation: LocalFederation) -> bool:
    print(f"kproxy is serving at {federation.url}, in front of the API server stand-in")
    print(
        f"at {federation.apiserver.url}; issuers: "
        + ", ".join(sorted(federation.issuers))
    )
    token = federation.scheduler_token("alpha")
    print(
        "\nActing as Alpha's multi-cluster scheduler, with a projected service-account"
        "\ntoken from Alpha's cluster (system:serviceaccount:admiralty:"
        "multicluster-scheduler):\n"
    )
    allowed = await _delegate(federation, token, namespace="alpha", expect=201)
    refused = await _delegate(federation, token, namespace="beta", expect=403)
    kubeconfig = federation.kubeconfig(token, name="alpha-scheduler", namespace="alpha")
    ran = await _try_kubectl(kubeconfig)
    print(f"\nkubeconfig for Alpha's scheduler: {kubeconfig}")
    print(f"  kubectl --kubeconfig {kubeconfig} get podchaperons")
    print(f"  kubectl --kubeconfig {kubeconfig} get podchaperons -n beta   # refused")
    print(f"audit trail: {federation.workdir / 'audit.log'}")
    return allowed and refused and ran


async def _delegate(
    federation: LocalFederation, token: str, *, namespace: str, expect: int
) -> bool:
    path = PODCHAPERONS.format(namespace)
    body = _podchaperon(namespace)
    context = ssl.create_default_context(cafile=str(federation.ca_file))
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            federation.url + path, json=body, headers=headers, ssl=context
        ) as resp,
    ):
        answer = await resp.json(content_type=None)

    decision = await _decision(federation, token, path)
    outcome = "allowed" if resp.status < 300 else "refused"
    print(f"POST {path}")
    print(f"  -> {resp.status} {outcome}, decided by {decision}")
    if resp.status >= 300:
        print(f"     {answer.get('message', '')}")
    else:
        impersonated = federation.apiserver.requests[-1].user
        if impersonated is not None:
            print(f"     the API server saw user {impersonated.username!r}, groups")
            print(f"     {list(impersonated.groups)}")
    return resp.status == expect


async def _decision(federation: LocalFederation, token: str, path: str) -> str:
    # Ask the running proxy's own components what they decided, as they did for the
    # request just made: the same verified identity, attributes and policy snapshot.
    components = federation.proxy.components
    identity = await components.authenticator.authenticate(token)
    info = parse_request("POST", path, "")
    return components.policies.current.decide(identity, info).decided_by


async def _try_kubectl(kubeconfig: Path) -> bool:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("\n(kubectl is not on the PATH: skipping the kubectl check)")
        return True
    command = [
        kubectl,
        "--kubeconfig",
        str(kubeconfig),
        "get",
        "podchaperons",
        "-o",
        "name",
    ]
    print(f"\n$ kubectl --kubeconfig {kubeconfig} get podchaperons -o name")
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    print(output.decode().rstrip())
    return process.returncode == 0


async def _serve_until_interrupted() -> None:
    print("\nThe federation keeps running; press Ctrl-C to stop it.")
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


def _podchaperon(namespace: str) -> dict[str, Any]:
    pod_spec = {
        "containers": [
            {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}
        ]
    }
    return {
        "apiVersion": "multicluster.admiralty.io/v1alpha1",
        "kind": "PodChaperon",
        "metadata": {
            "name": "analysis-0",
            "namespace": namespace,
            "labels": {"multicluster.admiralty.io/parent-uid": "demo"},
            "annotations": {"multicluster.admiralty.io/elect": ""},
        },
        "spec": pod_spec,
    }
