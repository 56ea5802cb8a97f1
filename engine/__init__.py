"""quant-engine: a dataframe-native walk-forward backtester (see the README)."""
