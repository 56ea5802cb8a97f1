"""HRP's tree of the winners, numpy's and scipy's numbers restated in numba (docs/PORTFOLIO.md).

Hierarchical risk parity orders the winners by the leaves of the Ward tree of their Pearson
angular distances with optimal leaf ordering (skfolio's default), then bisects that order. In
numpy and scipy that is ``np.corrcoef``, ``scipy.cluster.hierarchy.linkage(method="ward")`` and
``optimal_leaf_ordering`` (Bar-Joseph et al. 2001); scipy's last one pays ~1 ms of Python around
its Cython core at 50 leaves (validation, ``leaves_list``, per-row relabelling loops, an O(n^2)
descendant matrix) and ``linkage`` ~30 us of array-API dispatch and checks, most of HRP's cost per
window. The kernels here give the same numbers:

- :func:`pearson_distance_nb`: the distances from the returns' Gram matrix, ``np.corrcoef``'s
  operations in its order (bit for bit);
- :func:`ward_children_nb`: scipy's nearest-neighbour chain for Ward's method, its tie rules and
  Lance-Williams arithmetic, the merges sorted stably by height and relabelled as scipy's;
- :func:`optimal_order_nb`: the same relabelling of the tree by its current leaf order and the
  same cluster ranges; ``identify_swaps`` with its arithmetic: the table ``M`` of best partial
  orderings in float32 (as scipy's, whose sums ``M[u, m] + M[w, k]`` are float32 and whose
  candidates ``M[u, m] + M[w, k] + D[m, k]`` are rounded to float32), the same early-termination
  bounds and the same median-of-three quicksort of each slice (the early breaks depend on that
  order); the swaps applied by their parity along the path from the root, then the leaves in
  pre-order (left child first), as ``leaves_list``;
- :func:`bisection_nb`: the recursive bisection.

So the leaf order is scipy's, ties included (tests/test_hrp_kernels.py compares each kernel with
numpy and scipy on random books and on tied and float32-near-tied distances).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_BIG = 1073741824.0  # scipy's "infinity" (2^30) for the running minima


@njit(cache=True)
def leaves_nb(children: np.ndarray, n: int) -> np.ndarray:  # pragma: no cover - numba
    """Return the leaves of a tree in pre-order, left child first (scipy's ``leaves_list``); ``children`` is (n-1, 2)."""
    out = np.empty(n, dtype=np.int64)
    stack = np.empty(n, dtype=np.int64)
    top = 0
    stack[0] = 2 * n - 2
    k = 0
    while top >= 0:
        v = stack[top]
        top -= 1
        if v < n:
            out[k] = v
            k += 1
        else:
            stack[top + 1] = children[v - n, 1]  # right below left: left is visited first
            stack[top + 2] = children[v - n, 0]
            top += 2
    return out


@njit(cache=True)
def _swap(vals: np.ndarray, idx: np.ndarray, i: int, j: int) -> None:  # pragma: no cover - numba
    t = vals[i]
    vals[i] = vals[j]
    vals[j] = t
    s = idx[i]
    idx[i] = idx[j]
    idx[j] = s


@njit(cache=True)
def simultaneous_sort_nb(vals: np.ndarray, idx: np.ndarray, size: int) -> None:  # pragma: no cover - numba
    """Sort ``vals[:size]`` and ``idx`` alike: scipy's (scikit-learn's) ``_simultaneous_sort``, a median-of-three quicksort.

    Recursion replaced by a stack of (offset, size): the parts are disjoint, so the order in which
    they are sorted does not change the result.
    """
    _sort_on_stack(vals, idx, size, np.empty((2 * size + 2, 2), dtype=np.int64))


@njit(cache=True)
def _sort_on_stack(vals: np.ndarray, idx: np.ndarray, size: int, stack: np.ndarray) -> None:  # pragma: no cover - numba
    """:func:`simultaneous_sort_nb` on a caller's stack of at least ``(2 * size + 2, 2)`` (one per kernel call)."""
    top = 0
    stack[0, 0] = 0
    stack[0, 1] = size
    while top >= 0:
        o = stack[top, 0]
        sz = stack[top, 1]
        top -= 1
        if sz <= 1:
            continue
        if sz == 2:
            if vals[o] > vals[o + 1]:
                _swap(vals, idx, o, o + 1)
            continue
        if sz == 3:
            if vals[o] > vals[o + 1]:
                _swap(vals, idx, o, o + 1)
            if vals[o + 1] > vals[o + 2]:
                _swap(vals, idx, o + 1, o + 2)
                if vals[o] > vals[o + 1]:
                    _swap(vals, idx, o, o + 1)
            continue
        pivot = sz // 2
        if vals[o] > vals[o + sz - 1]:
            _swap(vals, idx, o, o + sz - 1)
        if vals[o + sz - 1] > vals[o + pivot]:
            _swap(vals, idx, o + sz - 1, o + pivot)
            if vals[o] > vals[o + sz - 1]:
                _swap(vals, idx, o, o + sz - 1)
        pivot_val = vals[o + sz - 1]
        store = 0
        for i in range(sz - 1):
            if vals[o + i] < pivot_val:
                _swap(vals, idx, o + i, o + store)
                store += 1
        _swap(vals, idx, o + store, o + sz - 1)
        if store > 1:
            top += 1
            stack[top, 0] = o
            stack[top, 1] = store
        if store + 2 < sz:
            top += 1
            stack[top, 0] = o + store + 1
            stack[top, 1] = sz - store - 1


@njit(cache=True)
def _sorted_slice(
    m: np.ndarray, vals: np.ndarray, idx: np.ndarray, lo: int, hi: int, col: int, stack: np.ndarray
) -> None:  # pragma: no cover - numba
    for i in range(hi - lo):
        vals[i] = m[col, lo + i]  # = m[lo + i, col]: the table is symmetric (a row reads contiguously)
        idx[i] = lo + i
    _sort_on_stack(vals, idx, hi - lo, stack)


@njit(cache=True)
def identify_swaps_nb(sz: np.ndarray, d: np.ndarray, ranges: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Return per merge whether its children must be swapped: scipy's ``identify_swaps`` (its float32 table too)."""
    n = sz.shape[0] + 1
    big = np.float32(_BIG)
    m_tab = np.zeros((n, n), dtype=np.float32)
    status = np.zeros((n, n, 2), dtype=np.int8)
    must = np.zeros(sz.shape[0], dtype=np.int64)
    uc, mc, wc, kc = np.empty(2, np.int64), np.empty(2, np.int64), np.empty(2, np.int64), np.empty(2, np.int64)
    # per leaf of the merge, the leaves of its sibling cluster sorted by M[leaf, .], and those values
    order = np.empty((n, n), dtype=np.int64)
    vals = np.empty((n, n), dtype=np.float32)
    stack = np.empty((2 * n + 2, 2), dtype=np.int64)
    best_u = best_w = 0
    for i in range(sz.shape[0]):
        v_l, v_r = sz[i, 0], sz[i, 1]
        if v_l < n:
            n_u = 1
            uc[0] = v_l
            mc[0] = v_l
        else:
            n_u = 2
            uc[0], mc[0] = sz[v_l - n, 0], sz[v_l - n, 1]
            uc[1], mc[1] = sz[v_l - n, 1], sz[v_l - n, 0]
        if v_r < n:
            n_w = 1
            wc[0] = v_r
            kc[0] = v_r
        else:
            n_w = 2
            wc[0], wc[1] = sz[v_r - n, 1], sz[v_r - n, 0]
            kc[0], kc[1] = sz[v_r - n, 0], sz[v_r - n, 1]
        # scipy sorts row u's m slice for every (u, w) side pair, row w's k slice likewise; the rows read
        # (u, m both left; w, k both right) are never written in this merge (it writes M[u, w]), so each
        # row's slice is sorted once here, by the same quicksort: the same orders, ties included
        for sl in range(n_u):
            for u in range(ranges[uc[sl], 0], ranges[uc[sl], 1]):
                _sorted_slice(m_tab, vals[u], order[u], ranges[mc[sl], 0], ranges[mc[sl], 1], u, stack)
        for sr in range(n_w):
            for w in range(ranges[wc[sr], 0], ranges[wc[sr], 1]):
                _sorted_slice(m_tab, vals[w], order[w], ranges[kc[sr], 0], ranges[kc[sr], 1], w, stack)
        for sl in range(n_u):
            for sr in range(n_w):
                u_min, u_max = ranges[uc[sl], 0], ranges[uc[sl], 1]
                m_min, m_max = ranges[mc[sl], 0], ranges[mc[sl], 1]
                w_min, w_max = ranges[wc[sr], 0], ranges[wc[sr], 1]
                k_min, k_max = ranges[kc[sr], 0], ranges[kc[sr], 1]
                min_km = big
                for mm in range(m_min, m_max):
                    for kk in range(k_min, k_max):
                        if d[mm, kk] < np.float64(min_km):
                            min_km = np.float32(d[mm, kk])
                nk = k_max - k_min
                for u in range(u_min, u_max):
                    m_idx, m_vals = order[u], vals[u]  # the sorted values are read, not looked up again
                    for w in range(w_min, w_max):
                        k_idx, kv = order[w], vals[w]
                        cur = big
                        for mi in range(m_max - m_min):
                            mm = m_idx[mi]
                            a = m_vals[mi]  # M[u, mm]
                            if a + kv[0] + min_km >= cur:
                                break
                            for ki in range(nk):
                                b = kv[ki]  # M[w, k_idx[ki]]
                                if a + b + min_km >= cur:
                                    break
                                cand = np.float32((a + b) + d[mm, k_idx[ki]])
                                if cand < cur:
                                    cur = cand
                        m_tab[u, w] = cur
                        m_tab[w, u] = cur
                        status[u, w, 0] = sl
                        status[w, u, 0] = sl
                        status[u, w, 1] = sr
                        status[w, u, 1] = sr
        cur = big
        for u in range(ranges[v_l, 0], ranges[v_l, 1]):
            for w in range(ranges[v_r, 0], ranges[v_r, 1]):
                if m_tab[u, w] < cur:
                    cur = m_tab[u, w]
                    best_u, best_w = u, w
        if v_l >= n:
            must[v_l - n] = status[best_u, best_w, 0]
        if v_r >= n:
            must[v_r - n] = status[best_u, best_w, 1]
    return must


@njit(cache=True)
def pearson_distance_nb(gram: np.ndarray, ddof_n: int) -> np.ndarray:  # pragma: no cover - numba
    """Return the angular distances ``sqrt(0.5 (1 - rho))`` of the assets as a square matrix.

    ``gram`` is ``xc' xc`` of the centred returns and ``ddof_n`` their number of rows less one: the
    correlation is ``np.corrcoef``'s, operation for operation (the covariance ``gram * (1 / ddof_n)``,
    divided by the row's standard deviation, then by the column's, clipped to [-1, 1]), and the
    distance is ``np.sqrt(np.clip(0.5 * (1 - rho), 0, 1))`` of it, computed on the upper triangle
    and mirrored with a zero diagonal: ``squareform`` of scipy's condensed distances, bit for bit
    (tests/test_hrp_kernels.py).
    """
    p = gram.shape[0]
    f = 1.0 / ddof_n
    sd = np.empty(p)
    for i in range(p):
        sd[i] = np.sqrt(gram[i, i] * f)
    square = np.zeros((p, p))
    for i in range(p):
        for j in range(i + 1, p):
            rho = gram[i, j] * f / sd[i] / sd[j]
            if rho < -1.0:
                rho = -1.0
            elif rho > 1.0:
                rho = 1.0
            v = 0.5 * (1.0 - rho)
            if v < 0.0:
                v = 0.0
            elif v > 1.0:
                v = 1.0
            v = np.sqrt(v)
            square[i, j] = v
            square[j, i] = v
    return square


@njit(cache=True)
def ward_children_nb(dist: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Return the children of each merge of the Ward linkage of the square distances ``dist``: scipy's ``linkage(method="ward")[:, :2]``.

    The nearest-neighbour chain as scipy's ``nn_chain`` runs it on the condensed distances: the
    chain starts at the first live cluster, a cluster's nearest neighbour is the first live one at
    the strictly smallest distance (the chain's previous cluster preferred), a reciprocal pair merges
    into the slot of the larger index, and the distances to the merged cluster follow the
    Lance-Williams update of Ward's method with scipy's arithmetic, ``sqrt((n_i + n_x) t d_xi^2 +
    (n_i + n_y) t d_yi^2 - n_i t d_xy^2)``, ``t = 1 / (n_x + n_y + n_i)`` (kept in both triangles of
    a copy of ``dist``). The merges are then put in order of height by a stable sort and relabelled
    by union-find (the new cluster of merge ``k`` is ``n + k``, the smaller root first). The finite
    distances are the caller's to check (scipy raises on others).
    """
    n = dist.shape[0]
    d = dist.copy()
    size = np.ones(n, dtype=np.int64)
    chain = np.empty(n, dtype=np.int64)
    pairs = np.empty((n - 1, 2), dtype=np.int64)
    heights = np.empty(n - 1)
    length = 0
    y = 0
    for k in range(n - 1):
        if length == 0:
            length = 1
            for i in range(n):
                if size[i] > 0:
                    chain[0] = i
                    break
        while True:
            x = chain[length - 1]
            if length > 1:
                y = chain[length - 2]
                current = d[x, y]
            else:
                current = np.inf
            for i in range(n):
                if size[i] == 0 or i == x:
                    continue
                if d[x, i] < current:
                    current = d[x, i]
                    y = i
            if length > 1 and y == chain[length - 2]:
                break
            chain[length] = y
            length += 1
        length -= 2
        if x > y:
            x, y = y, x
        nx, ny = size[x], size[y]
        pairs[k, 0], pairs[k, 1] = x, y
        heights[k] = current
        size[x] = 0
        size[y] = nx + ny
        for i in range(n):
            ni = size[i]
            if ni == 0 or i == y:
                continue
            d_xi, d_yi = d[i, x], d[i, y]
            t = 1.0 / (nx + ny + ni)
            v = np.sqrt((ni + nx) * t * d_xi * d_xi + (ni + ny) * t * d_yi * d_yi - ni * t * current * current)
            d[i, y] = v
            d[y, i] = v
    order = np.empty(n - 1, dtype=np.int64)  # a stable insertion sort by height (numpy's mergesort order)
    for k in range(n - 1):
        j = k
        while j > 0 and heights[order[j - 1]] > heights[k]:
            order[j] = order[j - 1]
            j -= 1
        order[j] = k
    parent = np.arange(2 * n - 1)
    children = np.empty((n - 1, 2), dtype=np.int64)
    for k in range(n - 1):
        a, b = pairs[order[k], 0], pairs[order[k], 1]
        while parent[a] != a:
            a = parent[a]
        while parent[b] != b:
            b = parent[b]
        if a > b:
            a, b = b, a
        children[k, 0], children[k, 1] = a, b
        parent[a] = n + k
        parent[b] = n + k
    return children


@njit(cache=True)
def optimal_order_nb(children: np.ndarray, dist: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Return the leaves of ``children`` (a linkage's first two columns, as int64) after scipy's optimal leaf ordering.

    ``dist`` is the square distance matrix the linkage was built from.
    """
    n = children.shape[0] + 1
    leaves = leaves_nb(children, n)
    pos = np.empty(n, dtype=np.int64)
    for s in range(n):
        pos[leaves[s]] = s
    sz = np.empty((n - 1, 2), dtype=np.int64)  # the tree relabelled by the current leaf order
    ranges = np.zeros((2 * n - 1, 2), dtype=np.int64)
    for s in range(n):
        ranges[s, 0] = s
        ranges[s, 1] = s + 1
    for i in range(n - 1):
        for j in range(2):
            v = children[i, j]
            sz[i, j] = pos[v] if v < n else v
        ranges[i + n, 0] = ranges[sz[i, 0], 0]
        ranges[i + n, 1] = ranges[sz[i, 1], 1]
    d = np.empty((n, n), dtype=np.float64)
    for a in range(n):
        for b in range(n):
            d[a, b] = dist[leaves[a], leaves[b]]
    must = identify_swaps_nb(sz, d, ranges)
    parity = np.zeros(n - 1, dtype=np.int64)  # swaps along the path from the root, this merge's own included
    for i in range(n - 2, -1, -1):
        parity[i] = (parity[i] + must[i]) % 2
        for j in range(2):
            if children[i, j] >= n:
                parity[children[i, j] - n] = parity[i]
    swapped = children.copy()
    for i in range(n - 1):
        if parity[i]:
            swapped[i, 0], swapped[i, 1] = children[i, 1], children[i, 0]
    return leaves_nb(swapped, n)


@njit(cache=True)
def _ivp_variance(c: np.ndarray, inv: np.ndarray, lo: int, hi: int) -> float:  # pragma: no cover - numba
    """Return the variance ``w' C w`` of the inverse-variance book of the ordered range ``[lo, hi)``."""
    total = 0.0
    norm = 0.0
    for i in range(lo, hi):
        norm += inv[i]
        row = 0.0
        for j in range(lo, hi):
            row += c[i, j] * inv[j]
        total += inv[i] * row
    return total / (norm * norm)


@njit(cache=True)
def bisection_nb(cov: np.ndarray, order: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Return the weights (in input order) of hierarchical risk parity's recursive bisection over the ordered winners.

    Each range splits in halves (the left one ``n // 2`` long); the left half gets
    ``1 - v_l / (v_l + v_r)`` of the range's weight, ``v`` the variance of a half's
    inverse-variance book. A leaf's weight is the product of its factors from the root down.
    """
    n = order.size
    c = np.empty((n, n))
    for a in range(n):
        for b in range(n):
            c[a, b] = cov[order[a], order[b]]
    inv = np.empty(n)
    for a in range(n):
        inv[a] = 1.0 / c[a, a]
    w = np.ones(n)
    stack = np.empty((n + 1, 2), dtype=np.int64)
    top = 0
    stack[0, 0] = 0
    stack[0, 1] = n
    while top >= 0:
        lo, hi = stack[top, 0], stack[top, 1]
        top -= 1
        if hi - lo < 2:
            continue
        mid = lo + (hi - lo) // 2
        left = _ivp_variance(c, inv, lo, mid)
        right = _ivp_variance(c, inv, mid, hi)
        alpha = 1.0 - left / (left + right)
        for i in range(lo, mid):
            w[i] *= alpha
        for i in range(mid, hi):
            w[i] *= 1.0 - alpha
        stack[top + 1, 0], stack[top + 1, 1] = lo, mid
        stack[top + 2, 0], stack[top + 2, 1] = mid, hi
        top += 2
    out = np.empty(n)
    for a in range(n):
        out[order[a]] = w[a]
    return out
