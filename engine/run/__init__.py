"""The run: a plan, a fold of the windows over the books' state, and the result.

The plan holds the windows, winners, weights and price blocks; the result, artefact frames and metrics.

``plan = run_plan(cfg)``, ``w = walk(plan, rules)`` (the passes: each a :func:`fold` of
:func:`step` over a :class:`FoldState`), ``assemble(plan, w)``. A plain run, a grid and a
walk-forward optimisation are the same steps with different books (:func:`backtest_run`,
:func:`walk_chosen`).
"""

from engine.run.fold import books_new, fold, step
from engine.run.plan import RunPlan, WindowPlan, plan_from, run_plan
from engine.run.result import (
    Assembled,
    BacktestResult,
    ChosenWalk,
    Walk,
    assemble,
    backtest_run,
    walk,
    walk_chosen,
    window_returns,
)
from engine.run.state import Book, BookOutput, FoldState, Pass, PassSpec, Position, WindowOutput

__all__ = [
    "Assembled",
    "BacktestResult",
    "Book",
    "BookOutput",
    "ChosenWalk",
    "FoldState",
    "Pass",
    "PassSpec",
    "Position",
    "RunPlan",
    "Walk",
    "WindowOutput",
    "WindowPlan",
    "assemble",
    "backtest_run",
    "books_new",
    "fold",
    "plan_from",
    "run_plan",
    "step",
    "walk",
    "walk_chosen",
    "window_returns",
]
