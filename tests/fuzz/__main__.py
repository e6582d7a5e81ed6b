"""``python -m tests.fuzz --seconds N``: fuzz kproxy's hostile-input parsers with atheris.

Each target of ``tests.fuzz.targets`` runs in a process of its own (libFuzzer exits
the process when it stops), for an equal share of ``--seconds``, with its corpus kept
under ``--workdir``. A crash leaves its input in ``<workdir>/<target>/crash-*`` and
makes the command exit 1; turn it into a named case in ``tests/security`` and fix it.

``python -m tests.fuzz --target NAME -- LIBFUZZER_ARGS`` runs one target in-process,
which is what the parent does for each target.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

TARGETS: Final = ("attributes", "headers", "tokens")
METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _attributes(data: bytes, atheris: Any) -> None:
    from tests.fuzz.targets import check_request_attributes

    provider = atheris.FuzzedDataProvider(data)
    method = METHODS[provider.ConsumeIntInRange(0, len(METHODS) - 1)]
    raw_path = "/" + provider.ConsumeUnicodeNoSurrogates(
        provider.ConsumeIntInRange(0, 200)
    )
    check_request_attributes(method, raw_path, provider.ConsumeUnicodeNoSurrogates(100))


def _headers(data: bytes, atheris: Any) -> None:
    from tests.fuzz.targets import check_header_sanitizer

    provider = atheris.FuzzedDataProvider(data)
    pairs = []
    for _ in range(provider.ConsumeIntInRange(0, 12)):
        name = provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(1, 24))
        value = provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 40))
        if name and "\r" not in name + value and "\n" not in name + value:
            pairs.append((name, value))
    check_header_sanitizer(pairs)


def _tokens(data: bytes, atheris: Any) -> None:
    from tests.fuzz.targets import check_token

    provider = atheris.FuzzedDataProvider(data)
    check_token(provider.ConsumeUnicodeNoSurrogates(len(data)))


RUNNERS: Final[dict[str, Callable[[bytes, Any], None]]] = {
    "attributes": _attributes,
    "headers": _headers,
    "tokens": _tokens,
}


def run_one(target: str, libfuzzer_args: list[str]) -> None:
    """Fuzz one target in this process; libFuzzer ends the process when done."""
    import atheris

    # Only kproxy is instrumented: tracing pydantic's schema building as well costs
    # minutes at start and finds nothing in kproxy.
    with atheris.instrument_imports(include=["kproxy"]):
        import kproxy.auth.verifying
        import kproxy.policy.attributes
        import kproxy.proxy.headers  # noqa: F401
    runner = RUNNERS[target]
    atheris.Setup([sys.argv[0], *libfuzzer_args], lambda data: runner(data, atheris))
    atheris.Fuzz()


def run_all(seconds: float, workdir: Path) -> int:
    share = max(1, int(seconds / len(TARGETS)))
    failed = []
    for target in TARGETS:
        corpus = workdir / target
        corpus.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "tests.fuzz",
            "--target",
            target,
            "--",
            f"-max_total_time={share}",
            f"-artifact_prefix={corpus}/",
            "-print_final_stats=1",
            str(corpus),
        ]
        print(f"fuzzing {target} for {share} s", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(target)
    if failed:
        print(f"crashes in: {', '.join(failed)} (inputs under {workdir})")
        return 1
    print("no crash found")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "kproxy-fuzz"
    )
    parser.add_argument("--target", choices=TARGETS)
    parser.add_argument("libfuzzer_args", nargs="*")
    args = parser.parse_args(argv)
    if args.target is not None:
        run_one(args.target, args.libfuzzer_args)
        return 0
    return run_all(args.seconds, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
