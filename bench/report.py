"""``docs/benchmarks.md`` and its plots, regenerated from one results file.

Nothing in the page is typed by hand except ``bench/analysis.md``, which is copied in
after the figures: the reading of the numbers and what to change, kept beside the code
that produced them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

PEER: Final = "kubectl proxy"
GIB: Final = 1024**3
MIB: Final = 1024**2
CACHED_BUDGET_SECONDS: Final = 20e-6
ANALYSIS: Final = Path(__file__).with_name("analysis.md")


def _median(results: dict[str, Any], target: str, name: str) -> float:
    figures = results["targets"].get(target, {})
    return float(figures.get("median", {}).get(name, math.nan))


def kproxy_targets(results: dict[str, Any]) -> list[str]:
    return [
        name
        for name, figures in results["targets"].items()
        if name.startswith("kproxy") and "error" not in figures
    ]


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the brief, for each kproxy variant measured: pass or fail."""
    rows: list[dict[str, Any]] = []
    direct_p50 = _median(results, "direct", "latency_one_p50")
    peer_added = _median(results, PEER, "latency_one_p50") - direct_p50
    for name in kproxy_targets(results):
        rps, peer_rps = _median(results, name, "rps"), _median(results, PEER, "rps")
        rows.append(
            _ratio_row(
                name,
                "requests/s at 32 connections >= kubectl proxy's",
                rps,
                peer_rps,
                higher_is_better=True,
                unit="/s",
            )
        )
        added = _median(results, name, "latency_one_p50") - direct_p50
        rows.append(
            _ratio_row(
                name,
                "added p50 latency (1 connection) <= kubectl proxy's",
                added * 1e3,
                peer_added * 1e3,
                higher_is_better=False,
                unit=" ms",
            )
        )
        mbps = _median(results, name, "list_bytes_per_second") / MIB
        peer_mbps = _median(results, PEER, "list_bytes_per_second") / MIB
        rows.append(
            _ratio_row(
                name,
                "1 MiB list throughput >= kubectl proxy's",
                mbps,
                peer_mbps,
                higher_is_better=True,
                unit=" MiB/s",
            )
        )
        watches = results["targets"][name].get("idle_watches")
        if not watches:
            continue
        rss = watches["rss_bytes"] / MIB
        rows.append(
            _ratio_row(
                name,
                f"{watches.get('watches', 0):,} idle watches within 1 GiB",
                rss,
                GIB / MIB,
                higher_is_better=False,
                unit=" MiB",
            )
        )
    cached = results.get("decisions", {}).get("cached_request_seconds", math.nan)
    rows.append(
        _ratio_row(
            "kproxy (in-process)",
            "cached authentication + policy within 20 µs",
            cached * 1e6,
            CACHED_BUDGET_SECONDS * 1e6,
            higher_is_better=False,
            unit=" µs",
        )
    )
    return rows


def _ratio_row(
    target: str,
    goal: str,
    value: float,
    bound: float,
    *,
    higher_is_better: bool,
    unit: str,
) -> dict[str, Any]:
    if math.isnan(value) or math.isnan(bound):
        verdict = "not measured"
    elif (value >= bound) if higher_is_better else (value <= bound):
        verdict = "pass"
    else:
        verdict = "fail"
    ratio = value / bound if bound else math.nan
    return {
        "target": target,
        "goal": goal,
        "value": value,
        "bound": bound,
        "ratio": ratio,
        "verdict": verdict,
        "unit": unit,
    }


def _number(value: float, unit: str = "", digits: int = 1) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def _check_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| kproxy | target | measured | bound | ratio | result |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['target']} | {row['goal']} | {_number(row['value'], row['unit'])} "
            f"| {_number(row['bound'], row['unit'])} | {_number(row['ratio'], 'x', 2)} "
            f"| **{row['verdict']}** |"
        )
    return lines


FIGURES: Final[tuple[tuple[str, str, Callable[[float], float], str], ...]] = (
    ("latency_one_p50", "GET p50, 1 connection", lambda v: v * 1e3, " ms"),
    ("latency_one_p99", "GET p99, 1 connection", lambda v: v * 1e3, " ms"),
    ("latency_many_p50", "GET p50, 32 connections", lambda v: v * 1e3, " ms"),
    ("latency_many_p99", "GET p99, 32 connections", lambda v: v * 1e3, " ms"),
    ("rps", "GET requests/s, 32 connections", lambda v: v, ""),
    (
        "list_bytes_per_second",
        "1 MiB list, MiB/s (4 connections)",
        lambda v: v / MIB,
        "",
    ),
    ("event_p50", "watch event p50", lambda v: v * 1e3, " ms"),
    ("event_p99", "watch event p99", lambda v: v * 1e3, " ms"),
)


def _figure_table(results: dict[str, Any]) -> list[str]:
    names = [n for n, f in results["targets"].items() if "error" not in f]
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, label, convert, unit in FIGURES:
        peer = _median(results, PEER, key)
        cells = []
        for name in names:
            value = _median(results, name, key)
            cell = _number(convert(value), unit, 2 if unit == " ms" else 0)
            if name not in (PEER, "direct") and peer and not math.isnan(value):
                cell += f" ({value / peer:.2f}x)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        "| idle watches: RSS held | "
        + " | ".join(_watch_cell(results["targets"][name]) for name in names)
        + " |"
    )
    return lines


def _watch_cell(figures: dict[str, Any]) -> str:
    watches = figures.get("idle_watches")
    if not watches:
        return "n/a"
    return (
        f"{watches['rss_bytes'] / MIB:,.0f} MiB for {watches['reached_upstream']:,} "
        f"({watches['bytes_per_watch'] / 1024:,.1f} KiB each)"
    )


def _decision_lines(decisions: dict[str, Any]) -> list[str]:
    rows = (
        (
            "authenticate, cold (RS256 signature, claims, mapping)",
            "authenticate_cold_seconds",
        ),
        ("authenticate, cached token", "authenticate_cached_seconds"),
        ("parse request attributes", "parse_request_seconds"),
        ("decide, identity already mapped", "decide_seconds"),
        (
            "decide, every rule tried in file order (without the rule index)",
            "decide_unindexed_seconds",
        ),
        ("decide, first request of an identity", "decide_first_seconds"),
        ("cached authenticate + decide", "cached_request_seconds"),
    )
    lines = [
        f"{decisions['universities']} universities of {decisions['rules_per_university']} "
        f"rules, one shared issuer; the request is allowed by "
        f"`{decisions['decided_by']}`.",
        "",
        "| step | µs per call |",
        "|---|---:|",
    ]
    lines += [
        f"| {label} | {decisions[key] * 1e6:,.1f} |"
        for label, key in rows
        if key in decisions  # results written before a step was measured lack it
    ]
    profile = decisions.get("decide_profile") or []
    if profile:
        lines += [
            "",
            "Where `decide` spends its time (cProfile, own time per decision):",
            "",
            "| function | calls per decision | own µs | cumulative µs |",
            "|---|---:|---:|---:|",
        ]
        calls = decisions.get("rules_per_university", 1)
        del calls
        for name, ncalls, own, cumulative in profile:
            lines.append(
                f"| `{name}` | {ncalls} | {own * 1e6:.2f} | {cumulative * 1e6:.2f} |"
            )
    return lines


def _profile_lines(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, figures in results["targets"].items():
        profile = figures.get("profile") if isinstance(figures, dict) else None
        if not profile:
            continue
        if "error" in profile:
            lines += [f"{name}: py-spy failed: `{profile['error']}`", ""]
            continue
        lines += [
            f"**{name}**, {profile['samples']:,} py-spy samples under wrk load:",
            "",
            "| own time | share | | inclusive (kproxy, aiohttp) | share |",
            "|---|---:|---|---|---:|",
        ]
        own, inclusive = profile["own"], profile["inclusive"]
        for index in range(max(len(own), len(inclusive))):
            left = own[index] if index < len(own) else ("", math.nan)
            right = inclusive[index] if index < len(inclusive) else ("", math.nan)
            lines.append(
                f"| `{left[0]}` | {_number(left[1] * 100, '%')} | "
                f"| `{right[0]}` | {_number(right[1] * 100, '%')} |"
            )
        lines.append("")
    return lines


def _errors(results: dict[str, Any]) -> list[str]:
    return [
        f"- **{name}** could not be measured: `{figures['error']}`"
        for name, figures in results["targets"].items()
        if "error" in figures
    ]


def plots(results: dict[str, Any], directory: Path) -> list[Path]:
    """Bar charts of the main figures, one PNG per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    names = [n for n, f in results["targets"].items() if "error" not in f]
    # The upstream alone serves many times what either proxy does; beside the proxies
    # its throughput bar would flatten theirs, so it stays in the table only.
    proxies = [n for n in names if n != "direct"]
    groups = (
        (
            "throughput.png",
            proxies,
            (
                ("rps", "GET requests/s (32 conn.)", 1.0),
                ("list_bytes_per_second", "1 MiB list MiB/s", 1 / MIB),
            ),
        ),
        (
            "latency.png",
            names,
            (
                ("latency_one_p50", "p50 ms, 1 conn.", 1e3),
                ("latency_one_p99", "p99 ms, 1 conn.", 1e3),
                ("latency_many_p50", "p50 ms, 32 conn.", 1e3),
                ("latency_many_p99", "p99 ms, 32 conn.", 1e3),
                ("event_p50", "watch event p50 ms", 1e3),
            ),
        ),
    )
    written = []
    for filename, shown, figures in groups:
        fig, axes = plt.subplots(1, len(figures), figsize=(3.2 * len(figures), 3.6))
        for axis, (key, title, factor) in zip(axes, figures, strict=True):
            values = [_median(results, name, key) * factor for name in shown]
            axis.bar(range(len(shown)), values, color="#4477aa")
            if PEER in shown:
                # The peer's figure across the chart, so each bar reads as its ratio.
                peer = _median(results, PEER, key) * factor
                axis.axhline(peer, color="#aa3333", linestyle="--", linewidth=0.8)
            axis.set_xticks(
                range(len(shown)), shown, rotation=35, ha="right", fontsize=7
            )
            axis.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(directory / filename, dpi=110)
        plt.close(fig)
        written.append(directory / filename)
    watch_names = [n for n in names if results["targets"][n].get("idle_watches")]
    if watch_names:
        fig, axis = plt.subplots(figsize=(5, 3.6))
        values = [
            results["targets"][n]["idle_watches"]["rss_bytes"] / MIB
            for n in watch_names
        ]
        axis.bar(range(len(watch_names)), values, color="#aa7744")
        axis.axhline(1024, color="red", linestyle="--", label="1 GiB budget")
        axis.set_xticks(
            range(len(watch_names)), watch_names, rotation=35, ha="right", fontsize=7
        )
        axis.set_title("RSS holding idle watches (MiB)", fontsize=9)
        axis.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(directory / "watches.png", dpi=110)
        plt.close(fig)
        written.append(directory / "watches.png")
    return written


def render(results: dict[str, Any], images: list[Path]) -> str:
    machine = results["machine"]
    scale = results["scale"]
    upstream = results.get("upstream_tls", {})
    generator = next(
        (f.get("generator") for f in results["targets"].values() if f.get("generator")),
        "n/a",
    )
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench` from one results file; edit "
        "`bench/analysis.md` or `bench/report.py`, not this page.",
        "",
        f"Run of {results['started']} ({results['seconds']:.0f} s): "
        f"`{results['command']}`. Every figure is the median of {scale['runs']} runs; "
        "ratios are to `kubectl proxy`, the peer.",
        "",
        "## Targets",
        "",
        *_check_table(checks(results)),
        "",
        *_errors(results),
        "",
        "## Figures",
        "",
        "`direct` is the upstream's plain-HTTP port (the floor). Both proxies reach the "
        "upstream's TLS port with the same kubeconfig; clients reach the proxies over "
        "loopback HTTP. kproxy verifies a service-account token (RS256, static key set), "
        f"decides under {scale['universities']} universities of {scale['rules']} rules "
        "and impersonates. `aiohttp relay` (`bench/relay.py`) is kproxy's HTTP stack "
        "alone: the same aiohttp server, uvloop, upstream pool and header filters, with "
        "no token check, policy, impersonation, audit or metrics; what a proxy built "
        "on these libraries costs before it does anything of its own.",
        "",
        *_figure_table(results),
        "",
        f"Upstream's TLS port alone: {_number(upstream.get('rps', math.nan), '', 0)} GET/s, "
        f"{_number(upstream.get('list_bytes_per_second', math.nan) / MIB, ' MiB/s', 0)} "
        "of 1 MiB lists (client TLS included), the ceiling for both proxies.",
        "",
        *(
            [
                "In the charts the dashed line is `kubectl proxy`'s figure; `direct` is "
                "left out of the throughput chart, where it would dwarf the proxies.",
                "",
            ]
            if images
            else []
        ),
        *[f"![{p.stem}](bench/{p.name})" for p in images],
        "",
        "## Per-request steps, in process",
        "",
        *_decision_lines(results["decisions"]),
        "",
        "## Profiles",
        "",
        *(_profile_lines(results) or ["No profile was taken in this run."]),
        "## How it was measured",
        "",
        f"- Load generator: `{generator}` (one thread) for requests/s and list "
        "throughput; latency percentiles from a Python client on raw asyncio streams, "
        f"every request timed ({scale['requests_one']:,} requests on 1 connection, "
        f"{scale['requests_many']:,} over 32).",
        "- Upstream: a bare HTTP/1.1 server on uvloop with precomputed bodies "
        "(`bench/upstream.py`): a 1.5 KB Pod, a 1 MiB PodList, watches that emit "
        "on demand.",
        f"- Idle watches: {scale['watches']:,} watches on raw asyncio streams, counted "
        "at the upstream before the proxy's RSS (all its processes) is read.",
        "- Watch event latency: from asking the upstream to emit to the event's arrival "
        "through the target.",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}, {machine['cpus']} cores; memory "
        f"{machine['memory_bytes'] / GIB:.1f} GiB; Linux {machine['kernel']}",
        f"- Python {machine['python']}, aiohttp {machine['aiohttp']}, uvloop "
        f"{machine['uvloop']}; {machine['kubectl']}; {machine['wrk']}",
        "- Everything (load generator, proxy, upstream) shares those cores over loopback.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench      # under ten minutes; writes bench/results/*.json and this page",
        "python -m bench --report-only bench/results/FILE.json   # the page from a file",
        "```",
        "",
    ]
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().rstrip(), ""]
    return "\n".join(lines)


def write(results: dict[str, Any], *, docs: Path, with_plots: bool = True) -> Path:
    images = plots(results, docs / "bench") if with_plots else []
    page = docs / "benchmarks.md"
    page.write_text(render(results, images))
    return page
