"""Benchmark suite of the engine: ``python -m benchmarks [--quick]`` (see docs/PERFORMANCE.md).

One module per figure (``fig1_e2e`` ... ``fig7_sweeps``); ``common`` holds the result rows, timers,
verdicts, machine info and the fresh-subprocess runner; ``run`` prints the table and writes
``benchmarks/results/latest.json``.
"""
