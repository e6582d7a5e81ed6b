"""The soak run for a few seconds, so that ``python -m bench.soak`` cannot rot.

It asserts what the soak exists to report, not a rate: every kind of client was
answered, kproxy produced no error, and the heap report names source lines.
"""

from __future__ import annotations

import tracemalloc

from bench import soak


async def test_a_short_soak_answers_every_kind_without_a_kproxy_error() -> None:
    result = await soak.soak(3.0, workers=4, warmup=1.0, trace_memory=True)

    kinds = {answer.split()[0] for answer in result["answers"]}
    assert kinds == set(soak.EXPECTED)
    assert result["kproxy_errors"] == {}
    assert result["unhandled_task_exceptions"] == {}
    assert result["served"] > 0  # after the warm-up, where the figures come from
    growth = result["python_heap_growth_by_line"]
    assert growth
    assert all(".py:" in line and "KiB in" in line for line in growth)
    assert not tracemalloc.is_tracing()
