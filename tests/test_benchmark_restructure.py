"""The restructure benchmark's plumbing (benchmarks/restructure.py): the skip when the old commit is not
at hand, and the artefact digests its correctness rows compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import restructure
from benchmarks.common import exit_code


def test_a_missing_commit_or_git_is_a_stated_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restructure, "COMMIT", "0" * 40)
    root, why = restructure.old_tree(tmp_path)
    assert root is None and "is not in this repository" in why
    monkeypatch.setattr(restructure.shutil, "which", lambda _: None)
    rows, detail = restructure.run(True, tmp_path)
    assert detail["skipped"] == "git is not installed"
    assert [r.note for r in rows] == ["skipped: git is not installed"] and rows[0].status == ""
    assert exit_code(rows, []) == 0  # a skip is no failure


def _run_dir(root: Path, metrics: dict[str, object], combo: dict[str, object]) -> Path:
    run = root / "outputs" / "runs" / "2026-01-01" / root.name
    (run / "combos" / "000").mkdir(parents=True)
    (run / "params.json").write_text("{}")
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run / "combos" / "000" / "metrics.json").write_text(json.dumps(combo))
    return root


def test_digests_from_the_run_directory_without_the_blocks_added_since(tmp_path: Path) -> None:
    old = _run_dir(tmp_path / "a", {"total_return": 0.1, "sharpe": 1.5}, {"total_return": 0.2})
    new = _run_dir(
        tmp_path / "b", {"sharpe": 1.5, "total_return": 0.1, "survivorship": {"inflation": 0.3}}, {"total_return": 0.2}
    )
    d_old, d_new = restructure.digests(old), restructure.digests(new)
    assert sorted(d_old) == ["combos/000/metrics.json", "metrics.json"]  # paths from the run directory
    assert d_old == d_new  # key order and the survivorship block aside, the same numbers
    changed = _run_dir(tmp_path / "c", {"total_return": 0.1, "sharpe": 1.5000000000000002}, {"total_return": 0.2})
    assert restructure.digests(changed) != d_old  # one ulp is a difference
