"""kproxy's performance measurement, outside the test suite: ``python -m bench``.

One run starts a fast Kubernetes-shaped upstream, measures it directly, through
``kubectl proxy`` (the peer) and through kproxy, writes ``bench/results/*.json`` and
regenerates ``docs/benchmarks.md`` with its plots from that file.
"""
