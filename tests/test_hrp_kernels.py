"""HRP's numba kernels (engine/strategy/hrp_nb.py) against numpy, scipy and by hand: the distances are
np.corrcoef's bit for bit, the Ward merges and the optimal leaf order are scipy's (ties and float32
near-ties included), the recursive bisection is López de Prado's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from engine.strategy.covariance import hrp_order, hrp_weights, ledoit_wolf, moments
from engine.strategy.hrp_nb import (
    bisection_nb,
    leaves_nb,
    optimal_order_nb,
    pearson_distance_nb,
    simultaneous_sort_nb,
    ward_children_nb,
)


def _scipy_order(condensed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    link = hierarchy.linkage(condensed, method="ward", optimal_ordering=False)
    return hierarchy.leaves_list(hierarchy.optimal_leaf_ordering(link, condensed)), link


def _condensed(rng: np.random.Generator, kind: str, p: int) -> np.ndarray:
    m = p * (p - 1) // 2
    if kind == "pearson":
        x = rng.normal(size=(int(rng.integers(3, 40)), p))
        return squareform(np.sqrt(np.clip(0.5 * (1 - np.corrcoef(x, rowvar=False)), 0, 1)), checks=False)
    if kind == "ties":  # many exactly equal distances: the order then rests on the tie rules
        return rng.integers(1, 4, size=m).astype(float)
    if kind == "near_ties":  # differences below float32's resolution: scipy's float32 table decides
        return 0.5 + rng.integers(0, 3, size=m) * 1e-8 + rng.normal(size=m) * 1e-9
    return rng.uniform(0, 1, size=m)


@pytest.mark.parametrize("kind", ["pearson", "ties", "near_ties", "uniform"])
def test_optimal_order_equals_scipy(kind: str) -> None:
    rng = np.random.default_rng({"pearson": 1, "ties": 2, "near_ties": 3, "uniform": 4}[kind])
    for _ in range(150):
        p = int(rng.integers(2, 60))
        condensed = _condensed(rng, kind, p)
        want, link = _scipy_order(condensed)
        got = optimal_order_nb(link[:, :2].astype(np.int64), squareform(condensed))
        np.testing.assert_array_equal(got, want)


def test_hrp_order_is_scipys_on_returns() -> None:
    rng = np.random.default_rng(9)
    for p in (2, 3, 10, 50):
        x = rng.normal(size=(30, p))
        condensed = squareform(np.sqrt(np.clip(0.5 * (1 - np.corrcoef(x, rowvar=False)), 0, 1)), checks=False)
        np.testing.assert_array_equal(hrp_order(x), _scipy_order(condensed)[0])


def test_leaves_in_pre_order_left_first() -> None:
    # ((0, 1), (2, 3)) built as merges 4 = (3, 2), 5 = (1, 0), 6 = (5, 4): leaves 1 0 3 2
    children = np.array([[3, 2], [1, 0], [5, 4]], dtype=np.int64)
    np.testing.assert_array_equal(leaves_nb(children, 4), [1, 0, 3, 2])


def test_simultaneous_sort_sorts_both_arrays() -> None:
    rng = np.random.default_rng(5)
    for size in (0, 1, 2, 3, 4, 7, 50):
        vals = rng.integers(0, 5, size).astype(np.float32)  # ties included
        idx = np.arange(size, dtype=np.int64)
        orig = vals.copy()
        simultaneous_sort_nb(vals, idx, size)
        assert (np.diff(vals) >= 0).all()
        np.testing.assert_array_equal(orig[idx], vals)
        assert sorted(idx.tolist()) == list(range(size))


def test_bisection_by_hand() -> None:
    """Five assets in a given order: left halves of n // 2, inverse-variance books, products down the tree."""
    rng = np.random.default_rng(11)
    cov = ledoit_wolf(rng.normal(0, 0.02, (40, 5)))[0]
    order = np.array([3, 0, 4, 1, 2])

    def var(c: list[int]) -> float:
        sub = cov[np.ix_(c, c)]
        ivp = 1 / np.diag(sub) / (1 / np.diag(sub)).sum()
        return float(ivp @ sub @ ivp)

    def split(c: list[int], weight: float, out: dict[int, float]) -> None:
        if len(c) == 1:
            out[c[0]] = weight
            return
        left, right = c[: len(c) // 2], c[len(c) // 2 :]
        alpha = 1 - var(left) / (var(left) + var(right))
        split(left, weight * alpha, out)
        split(right, weight * (1 - alpha), out)

    hand: dict[int, float] = {}
    split(order.tolist(), 1.0, hand)
    got = bisection_nb(cov, order)
    np.testing.assert_allclose(got, [hand[i] for i in range(5)], rtol=1e-13)
    assert got.sum() == pytest.approx(1.0, abs=1e-14)


def test_hrp_weights_one_and_two_assets() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 0.02, (30, 2)) * [1.0, 2.0]
    cov = ledoit_wolf(x)[0]
    inv = 1 / np.diag(cov)
    np.testing.assert_allclose(hrp_weights(x, cov), inv / inv.sum(), rtol=1e-13)  # two assets: inverse variance


def test_pearson_distance_is_numpys_bit_for_bit() -> None:
    """The kernel's distances from the Gram matrix equal np.corrcoef -> clip -> sqrt -> squareform exactly."""
    rng = np.random.default_rng(13)
    for _ in range(300):
        n, p = int(rng.integers(2, 90)), int(rng.integers(2, 60))
        x = rng.normal(0, rng.uniform(1e-4, 0.2), (n, p)) * rng.uniform(0.1, 10, p)
        if rng.random() < 0.2:  # perfectly (anti-)correlated columns: correlations at the clip
            x[:, 1] = -3 * x[:, 0]
        want = squareform(np.sqrt(np.clip(0.5 * (1.0 - np.corrcoef(x, rowvar=False)), 0.0, 1.0)), checks=False)
        square = pearson_distance_nb(moments(x).gram, n - 1)
        np.testing.assert_array_equal(square, squareform(want))


@pytest.mark.parametrize("kind", ["pearson", "ties", "near_ties", "uniform"])
def test_ward_children_equal_scipys_linkage(kind: str) -> None:
    rng = np.random.default_rng({"pearson": 21, "ties": 22, "near_ties": 23, "uniform": 24}[kind])
    for _ in range(150):
        p = int(rng.integers(2, 60))
        condensed = _condensed(rng, kind, p)
        want = hierarchy.linkage(condensed, method="ward")[:, :2].astype(np.int64)
        np.testing.assert_array_equal(ward_children_nb(squareform(condensed)), want)
    zeros = np.zeros(6 * 5 // 2)  # every distance 0: the ties rules alone
    np.testing.assert_array_equal(ward_children_nb(squareform(zeros)), hierarchy.linkage(zeros, method="ward")[:, :2])


def test_moments_give_numpys_variance_and_the_same_estimates() -> None:
    """The shared moments: the variance is x.var(axis=0) bit for bit; estimates with and without them are equal."""
    rng = np.random.default_rng(17)
    for _ in range(100):
        x = rng.normal(0, 0.03, (int(rng.integers(2, 60)), int(rng.integers(2, 50))))
        m = moments(x)
        np.testing.assert_array_equal(m.var, x.var(axis=0))
        np.testing.assert_array_equal(m.gram * np.true_divide(1, x.shape[0] - 1), np.cov(x, rowvar=False, ddof=1))
        cov = ledoit_wolf(x)[0]
        np.testing.assert_array_equal(ledoit_wolf(x, m)[0], cov)
        np.testing.assert_array_equal(hrp_weights(x, cov, m), hrp_weights(x, cov))
