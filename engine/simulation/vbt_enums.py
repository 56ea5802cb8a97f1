"""vectorbt's enums, order record dtype and default call sequence, restated without importing vectorbt.

The simulation hands vectorbt-rust's ``simulate_from_orders_rs`` its arrays directly and builds
order records of vectorbt's layout itself; it needs a few of vectorbt's enum values, its
``order_dt`` and ``build_call_seq``'s default order, and nothing else of the package. ``import
vectorbt`` costs ~350 MB and ~2.5 s (it loads pandas, numba's compilation of its modules, plotting
helpers): a default run (``backtest.vbt_engine=rust``) imports only ``vectorbt_rust``, the numba
engine only ``vectorbt.portfolio.nb`` and what it imports (:func:`vectorbt_nb_modules`), and the paths
that use the package (a result's ``vbt.Portfolio``) import it inside the function that does.
``tests/test_vbt_enums.py`` holds every value here equal to vectorbt 1.2's own
(``vectorbt.portfolio.enums``, ``vectorbt.portfolio.nb.build_call_seq``), field by field.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np


class SizeTypeT(NamedTuple):
    """vectorbt's ``SizeType``: how an order's size is read."""

    Amount: int = 0
    Value: int = 1
    Percent: int = 2
    TargetAmount: int = 3
    TargetValue: int = 4
    TargetPercent: int = 5


class DirectionT(NamedTuple):
    """vectorbt's ``Direction``: which positions an order may open."""

    LongOnly: int = 0
    ShortOnly: int = 1
    Both: int = 2


class CallSeqTypeT(NamedTuple):
    """vectorbt's ``CallSeqType``: the order in which a group's columns are called within a row."""

    Default: int = 0
    Reversed: int = 1
    Random: int = 2
    Auto: int = 3


SizeType = SizeTypeT()
Direction = DirectionT()
CallSeqType = CallSeqTypeT()

order_dt = np.dtype(
    [
        ("id", np.int64),
        ("col", np.int64),
        ("idx", np.int64),
        ("size", np.float64),
        ("price", np.float64),
        ("fees", np.float64),
        ("side", np.int64),
    ],
    align=True,
)
"""vectorbt's order record (``vectorbt.portfolio.enums.order_dt``): id, column, row, size, price, fees, side (0 buy, 1 sell)."""


_LOG_FIELDS = [
    ("id", np.int64),
    ("group", np.int64),
    ("col", np.int64),
    ("idx", np.int64),
    ("cash", np.float64),
    ("position", np.float64),
    ("debt", np.float64),
    ("free_cash", np.float64),
    ("val_price", np.float64),
    ("value", np.float64),
    ("req_size", np.float64),
    ("req_price", np.float64),
    ("req_size_type", np.int64),
    ("req_direction", np.int64),
    ("req_fees", np.float64),
    ("req_fixed_fees", np.float64),
    ("req_slippage", np.float64),
    ("req_min_size", np.float64),
    ("req_max_size", np.float64),
    ("req_size_granularity", np.float64),
    ("req_reject_prob", np.float64),
    ("req_lock_cash", np.bool_),
    ("req_allow_partial", np.bool_),
    ("req_raise_reject", np.bool_),
    ("req_log", np.bool_),
    ("new_cash", np.float64),
    ("new_position", np.float64),
    ("new_debt", np.float64),
    ("new_free_cash", np.float64),
    ("new_val_price", np.float64),
    ("new_value", np.float64),
    ("res_size", np.float64),
    ("res_price", np.float64),
    ("res_fees", np.float64),
    ("res_side", np.int64),
    ("res_status", np.int64),
    ("res_status_info", np.int64),
    ("order_id", np.int64),
]

log_dt = np.dtype(_LOG_FIELDS, align=True)
"""vectorbt's log record (``vectorbt.portfolio.enums.log_dt``): vectorbt-rust allocates its logs with it."""


def call_seq_default(shape: tuple[int, int], group_lens: np.ndarray) -> np.ndarray:
    """``vectorbt.portfolio.nb.build_call_seq(shape, group_lens, CallSeqType.Default)``, restated.

    Each row calls a group's columns left to right: column ``j`` of a group gets ``j`` minus the
    group's first column. Returned as vectorbt returns it: int64, Fortran order, writeable, owning
    its data.
    """
    lens = np.asarray(group_lens, dtype=np.int64)
    seq = np.full(shape[1], 1, dtype=np.int64)
    seq[np.cumsum(lens[:-1])] -= lens[:-1]
    seq = np.cumsum(seq) - 1
    return np.require(np.broadcast_to(seq, shape), dtype=np.int64, requirements=["A", "O", "W", "F"])


_IMPORT_LOCK = threading.RLock()
"""Held while the stand-in modules of :func:`rust_enums` or :func:`vectorbt_nb_modules` are in
``sys.modules`` and while the engine imports vectorbt (:func:`vectorbt_import`): no engine thread
sees a stand-in for the real package."""


@contextlib.contextmanager
def rust_enums() -> Iterator[None]:
    """Let a vectorbt-rust simulation read vectorbt's record dtypes without importing vectorbt.

    ``simulate_from_orders_rs`` imports ``vectorbt.portfolio.enums`` on every call, for
    ``order_dt`` and ``log_dt`` only, and importing that module runs vectorbt's ``__init__``
    (the whole package). Within this context, when vectorbt is not imported yet, ``sys.modules``
    holds two stand-ins instead: an empty ``vectorbt`` package and a ``vectorbt.portfolio.enums``
    holding this module's ``order_dt`` and ``log_dt`` (equal to vectorbt's own, field by field:
    ``tests/test_vbt_enums.py``). They are removed on leaving, so a later ``import vectorbt``
    imports the real package. When vectorbt is already imported, nothing is changed.
    """
    with _IMPORT_LOCK:
        if "vectorbt" in sys.modules:
            yield
            return
        package = types.ModuleType("vectorbt", "stand-in while vectorbt-rust reads the record dtypes")
        package.__path__ = []
        enums = types.ModuleType("vectorbt.portfolio.enums")
        enums.order_dt = order_dt  # type: ignore[attr-defined]
        enums.log_dt = log_dt  # type: ignore[attr-defined]
        sys.modules["vectorbt"], sys.modules["vectorbt.portfolio.enums"] = package, enums
        try:
            yield
        finally:
            for name, module in (("vectorbt", package), ("vectorbt.portfolio.enums", enums)):
                if sys.modules.get(name) is module:
                    del sys.modules[name]


def vectorbt_import() -> types.ModuleType:
    """Import vectorbt itself (~350 MB, ~2.5 s), never while a :func:`rust_enums` stand-in is in place.

    Only the paths that use the package call this: a result's ``vbt.Portfolio`` (the simulator's and
    the native grid's); the numba engine imports ``vectorbt.portfolio.nb`` only (:func:`vectorbt_nb_modules`).
    """
    with _IMPORT_LOCK:
        import vectorbt  # noqa: F401 (imported for sys.modules)

        return sys.modules["vectorbt"]


_NB_PACKAGES = ("vectorbt", "vectorbt.portfolio", "vectorbt.generic", "vectorbt.returns")
"""The packages whose ``__init__`` :func:`vectorbt_nb_modules` skips: the top package (it imports
every subpackage: the data sources with ccxt, the indicators, plotting) and those of the modules
``vectorbt.portfolio.nb`` imports (their ``__init__`` imports the accessors and ``Portfolio``)."""


@contextlib.contextmanager
def vectorbt_nb_modules() -> Iterator[None]:
    """Let the numba engine import ``vectorbt.portfolio.nb`` without importing the whole package.

    ``import vectorbt`` runs the package's ``__init__``, which imports every subpackage (~2.3 s of
    CPU, ccxt and the plotting helpers included); the numba functions of ``vectorbt.portfolio.nb``
    and the modules it imports need ~1 s of it. Within this context, when vectorbt is not imported
    yet, the packages of :data:`_NB_PACKAGES` are empty stand-ins (their real directories as
    ``__path__``), so ``vectorbt.portfolio.nb`` and the modules it imports are imported from their
    own files. On leaving, every vectorbt module imported within is removed from ``sys.modules``
    again (they live on in what was imported from them), so a later ``import vectorbt`` imports
    the whole package afresh. When vectorbt is already imported, nothing is changed.
    """
    with _IMPORT_LOCK:
        spec = None if "vectorbt" in sys.modules else importlib.util.find_spec("vectorbt")
        if spec is None or not spec.submodule_search_locations:  # imported (or missing: the import raises)
            yield
            return
        root = next(iter(spec.submodule_search_locations))
        before = set(sys.modules)
        for name in _NB_PACKAGES:
            package = types.ModuleType(name, "stand-in while vectorbt.portfolio.nb is imported")
            package.__path__ = [os.path.join(root, *name.split(".")[1:])]
            sys.modules[name] = package
        try:
            yield
        finally:
            for name in [n for n in sys.modules if n.split(".")[0] == "vectorbt" and n not in before]:
                del sys.modules[name]
