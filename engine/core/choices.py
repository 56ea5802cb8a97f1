"""Closed sets of the configuration, each defined once as a ``Literal`` type and its tuple of values."""

from __future__ import annotations

from typing import Literal, get_args

Objective = Literal["sharpe", "sortino", "calmar", "total_return"]
"""What the walk-forward optimisation maximises over a combination's per-window returns."""
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)

VbtEngine = Literal["rust", "numba"]
"""vectorbt's simulation engine."""
VBT_ENGINES: tuple[VbtEngine, ...] = get_args(VbtEngine)

Implausible = Literal["error", "drop"]
"""What reading files does with a bar priced far off its neighbours: refuse the file, or drop the bar."""
