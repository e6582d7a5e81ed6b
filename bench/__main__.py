"""``python -m bench``: measure, write ``bench/results/*.json``, regenerate the docs."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from bench import measuring, report
from bench.targets import ROOT
from bench.tools import ensure_tools


def _stop(signum: int, frame: object) -> None:
    # Turn SIGTERM into an exception so every started process is ended on the way out.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tiny run, for checks")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--report-only", type=Path, help="regenerate the docs from this results file"
    )
    arguments = parser.parse_args(argv)
    if arguments.report_only is not None:
        results = json.loads(arguments.report_only.read_text())
    else:
        ensure_tools()
        scale = measuring.QUICK if arguments.quick else measuring.FULL
        command = "make bench" if not arguments.quick else "python -m bench --quick"
        results = measuring.run(scale, command=command, profile=not arguments.quick)
        arguments.results.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = arguments.results / f"bench-{stamp}.json"
        path.write_text(json.dumps(results, indent=1))
        print(f"results: {path}")
    written = report.write(results, docs=arguments.docs)
    print(f"report: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
