"""The best-index rule, defined once: which of several objective values is the best.

Higher is better. NaN is undefined (a combination that never traded, too few returns) and ranks
last, with -inf. +inf is a value like any other, the highest: an objective that divides by a
quantity that came out zero says so on purpose (a Calmar ratio with a gain and no drawdown is
+inf, better than any finite one), while an objective that cannot be told returns NaN. Ties go to
the lowest index; when every value is undefined, the first combination is returned.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def rank_key(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return float64 objective values with NaN (undefined) set to -inf, ready for ``argmax`` or ranking.

    >>> rank_key([1.0, float("nan"), float("inf")]).tolist()
    [1.0, -inf, inf]
    """
    v = np.array(values, dtype=np.float64)
    v[np.isnan(v)] = -np.inf
    return v


def best_index(values: npt.ArrayLike) -> int:
    """Index of the best objective value (see the module's rule).

    >>> best_index([float("nan"), 2.0, 2.0, 1.0])
    1
    >>> best_index([1.0, float("inf")])
    1
    >>> best_index([float("nan"), float("nan")])
    0
    """
    return int(np.argmax(rank_key(values)))


def best_indices(values: npt.ArrayLike, axis: int = -1) -> npt.NDArray[np.intp]:
    """Index of the best value along ``axis`` of a matrix, by the same rule as :func:`best_index`."""
    out: npt.NDArray[np.intp] = np.argmax(rank_key(values), axis=axis)
    return out
