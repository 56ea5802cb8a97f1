"""The base layer: user-facing errors, time units and intervals, exchange symbols, progress bars."""
