"""The strategy: walk-forward windows, point-in-time ranking and weights, multi-timeframe signals."""
