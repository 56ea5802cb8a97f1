"""Benchmark suite of the engine: ``python -m benchmarks [--quick]`` (see docs/PERFORMANCE.md).

One module per figure (``fig1_e2e`` ... ``fig6_peer``); ``common`` holds the result rows, timers,
machine info and the fresh-subprocess runner; ``run`` prints the table and writes
``benchmarks/results/latest.json``.
"""
