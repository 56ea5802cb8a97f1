"""vectorbt's enums and record dtypes restated (:mod:`engine.simulation.vbt_enums`), and a default run without vectorbt.

The restatement must stay equal to vectorbt 1.2's own, value by value and field by field (names,
formats, offsets, size, alignment); ``call_seq_default`` equal to ``build_call_seq``. A default
run (``backtest.vbt_engine=rust``) in a fresh interpreter imports ``vectorbt_rust`` and never
``vectorbt`` (issue 23, item 5: ``import vectorbt`` costs ~350 MB and ~2.5 s); afterwards a real
``import vectorbt`` still gets the whole package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import vectorbt as vbt
from helpers import TINY_RANKING
from vectorbt.portfolio import enums as vbt_enums
from vectorbt.portfolio import nb as portfolio_nb

from engine.simulation import vbt_enums as ours


@pytest.mark.parametrize("name", ["SizeType", "Direction", "CallSeqType"])
def test_enums_equal_vectorbt_s(name: str) -> None:
    theirs, mine = getattr(vbt_enums, name), getattr(ours, name)
    assert mine._fields == theirs._fields
    assert tuple(mine) == tuple(theirs)
    for field in theirs._fields:
        assert getattr(mine, field) == getattr(theirs, field), (name, field)


@pytest.mark.parametrize("name", ["order_dt", "log_dt"])
def test_record_dtypes_equal_vectorbt_s_field_by_field(name: str) -> None:
    theirs, mine = getattr(vbt_enums, name), getattr(ours, name)
    assert mine.names == theirs.names
    for field in theirs.names:
        assert mine.fields[field] == theirs.fields[field], (name, field)  # (dtype, offset)
    assert (mine.itemsize, mine.alignment, mine.isalignedstruct) == (theirs.itemsize, theirs.alignment, True)
    assert mine == theirs


@pytest.mark.parametrize("group_lens", [[1], [3], [2, 3], [4, 1, 2], [1, 1, 1]])
def test_call_seq_default_equals_build_call_seq(group_lens: list[int]) -> None:
    lens = np.asarray(group_lens, dtype=np.int64)
    shape = (5, int(lens.sum()))
    mine = ours.call_seq_default(shape, lens)
    theirs = portfolio_nb.build_call_seq(shape, lens, call_seq_type=vbt_enums.CallSeqType.Default)
    np.testing.assert_array_equal(mine, theirs)
    assert mine.dtype == theirs.dtype == np.int64
    assert mine.flags.f_contiguous and mine.flags.writeable and mine.flags.owndata
    assert mine[0].tolist() == [j for n in group_lens for j in range(n)]  # hand-computed


def test_rust_enums_leaves_a_real_vectorbt_alone() -> None:
    """With vectorbt imported (as here), the context changes nothing."""
    before = sys.modules["vectorbt"], sys.modules["vectorbt.portfolio.enums"]
    with ours.rust_enums():
        assert sys.modules["vectorbt"] is vbt
        assert sys.modules["vectorbt.portfolio.enums"] is vbt_enums
    assert (sys.modules["vectorbt"], sys.modules["vectorbt.portfolio.enums"]) == before


DEFAULT_RUN = """
import json, runpy, sys
sys.argv = ["engine", *json.loads(sys.argv[1])]
try:
    runpy.run_module("engine", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exc:
    code = exc.code
seen = {"exit": code, "vectorbt": "vectorbt" in sys.modules, "vectorbt_rust": "vectorbt_rust" in sys.modules,
        "stand_in": "vectorbt.portfolio.enums" in sys.modules, "nb": "vectorbt.portfolio.nb" in sys.modules,
        "ccxt": "ccxt" in sys.modules}
import vectorbt
from vectorbt.portfolio.enums import order_dt
from engine.simulation.vbt_enums import order_dt as ours
seen["real_after"] = hasattr(vectorbt, "Portfolio") and order_dt == ours
seen["nb_after"] = hasattr(vectorbt.portfolio, "nb") and vectorbt.portfolio.nb is sys.modules["vectorbt.portfolio.nb"]
print("SEEN " + json.dumps(seen))
"""


def _run_fresh(tmp_path: Path, *overrides: str) -> tuple[dict[str, object], bytes]:
    """A tiny default run in a fresh interpreter: what it had imported, and its metrics.json."""
    out = tmp_path / "out"
    args = [
        "+profile=crypto_rating",
        "data.n_symbols=12",
        "data.start=2021-01-01",
        "data.end=2021-06-30",
        *TINY_RANKING,
        "quiet=true",
        f"paths.lakehouse_dir={tmp_path.parent / 'lake'}",
        f"paths.output_dir={out}",
        *overrides,
    ]
    proc = subprocess.run(
        [sys.executable, "-c", DEFAULT_RUN, json.dumps(args)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CI": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("SEEN "))[5:])
    return seen, (out / "metrics.json").read_bytes()


def test_a_default_run_never_imports_vectorbt(tmp_path: Path) -> None:
    """A default run (vbt_engine=rust) in a fresh interpreter: vectorbt_rust simulates, vectorbt is
    never imported; the numba engine imports vectorbt's numba functions (vectorbt.portfolio.nb), on
    demand, without the whole package, and fills the same orders; a later ``import vectorbt`` gets
    the whole package either way (the numba engine leaves no vectorbt module in ``sys.modules``)."""
    (tmp_path / "rust").mkdir()
    (tmp_path / "numba").mkdir()
    seen, metrics = _run_fresh(tmp_path / "rust")
    assert json.loads(metrics)["n_orders"] > 0  # the rust simulation ran and filled orders
    assert seen == {
        "exit": 0, "vectorbt": False, "vectorbt_rust": True, "stand_in": False, "nb": False, "ccxt": False,
        "real_after": True, "nb_after": True,
    }  # fmt: skip
    seen_numba, metrics_numba = _run_fresh(tmp_path / "numba", "backtest.vbt_engine=numba")
    assert seen_numba == {
        "exit": 0, "vectorbt": False, "vectorbt_rust": False, "stand_in": False, "nb": False, "ccxt": False,
        "real_after": True, "nb_after": True,
    }  # fmt: skip  # vectorbt's numba functions only, where they are used, their modules forgotten after
    assert metrics_numba == metrics  # the same store and fills on both engines
