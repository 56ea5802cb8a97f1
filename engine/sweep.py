"""``python -m engine.sweep SWEEP_DIR [--metric sharpe] [--ascending]``: the sweep summary task.

The task itself is :func:`engine.tasks.sweep.sweep_summarize`; this module is only its command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.core.errors import EngineError


def main(argv: list[str] | None = None) -> None:
    """Summarise a sweep directory and print its top rows; a user error is one line and exit code 2."""
    from engine.tasks.multirun import summary_print
    from engine.tasks.sweep import sweep_summarize

    parser = argparse.ArgumentParser(prog="python -m engine.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="directory of a multirun (outputs/sweeps/DATE/TIME)")
    parser.add_argument("--metric", default="sharpe", help="numeric key of metrics.json to rank by (default sharpe)")
    parser.add_argument("--ascending", action="store_true", help="rank the lowest value first")
    args = parser.parse_args(argv)
    try:
        summary = sweep_summarize(args.sweep_dir, args.metric, descending=not args.ascending)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    summary_print(summary)


if __name__ == "__main__":
    main()
