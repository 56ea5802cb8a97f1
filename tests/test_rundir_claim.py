"""A run never touches a folder it did not write, nor one another live run is writing; a
read-only lakehouse is read without a write."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import engine_cli, small_config

from engine.core.errors import ConfigError, DataError
from engine.outputs.rundir import COMPLETE, MARKER, RunDirBusy, run_dir_check, run_dir_claim

SMALL = ["data.n_symbols=10", "data.start=2021-01-01", "data.end=2021-06-30", "quiet=true"]

# holds a run directory's claim until killed; says so on stdout
HOLDER = """
import sys, time
from pathlib import Path
from engine.outputs.rundir import run_dir_claim
with run_dir_claim(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``folder``: its bytes and modification time."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def _foreign(tmp_path: Path) -> Path:
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("config.yaml", "metrics.json", "report.html", "manifest.json", "error.txt", "notes.txt"):
        (mine / name).write_text(f"the user's own {name}\n")
    return mine


@pytest.mark.parametrize("key", ["paths.output_dir", "hydra.run.dir"])
def test_a_folder_no_run_wrote_is_refused_untouched(tmp_path: Path, key: str) -> None:
    mine = _foreign(tmp_path)
    before = _snapshot(mine)
    line = _one_line(engine_cli([*SMALL, f"{key}={mine}"], tmp_path))
    assert f"{key}={mine} is an existing folder that no engine run wrote" in line
    assert "config.yaml, error.txt, manifest.json and 3 more" in line
    assert _snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == sorted(before)
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made its run folder


def test_the_run_functions_refuse_a_foreign_folder(lakehouse_dir: Path, tmp_path: Path) -> None:
    from engine.tasks import grid_run, run_backtest, wfo_run

    mine = _foreign(tmp_path)
    before = _snapshot(mine)
    for run in (run_backtest, grid_run, wfo_run):
        with pytest.raises(ConfigError, match="no engine run wrote"):
            run(small_config(lakehouse_dir, mine, "task=grid", "grid.sl_stop=[0.05,0.1]"))
    assert _snapshot(mine) == before


def test_which_folders_are_run_directories(tmp_path: Path) -> None:
    run_dir_check(tmp_path / "new")  # not there yet
    (tmp_path / "empty").mkdir()
    run_dir_check(tmp_path / "empty")
    for mark in (MARKER, COMPLETE, "params.json"):  # params.json: a run of an engine before the marker
        old = tmp_path / f"old{mark}"
        old.mkdir()
        (old / mark).write_text("{}")
        (old / "metrics.json").write_text("{}")
        run_dir_check(old)
    (tmp_path / "hydra" / ".hydra").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"\(it holds \.hydra\)"):
        run_dir_check(tmp_path / "hydra")
    run_dir_check(tmp_path / "hydra", ignore=(".hydra",))


def test_a_claim_is_exclusive_reentrant_and_dies_with_its_holder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(RunDirBusy, match=r"is in use by another run .*: wait for it to finish"),
            run_dir_claim(out),
        ):
            pass
        # the second run into the same folder: one line, exit 2, nothing written there
        before = _snapshot(out)
        line = _one_line(engine_cli([*SMALL, f"paths.output_dir={out}", f"hydra.run.dir={tmp_path / 'h'}"], tmp_path))
        assert f"paths.output_dir={out} is in use by another run" in line
        assert _snapshot(out) == before == {MARKER: before[MARKER]}
        assert (tmp_path / "h" / "error.txt").read_text().startswith(f"paths.output_dir={out} is in use")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with run_dir_claim(out), run_dir_claim(out):  # the kernel dropped the dead holder's lock; nesting is fine
        pass


def test_a_live_runs_folder_is_refused_before_hydra_writes_there(tmp_path: Path) -> None:
    """paths.output_dir alone (Hydra's files would go there too): a folder another live run holds is
    refused up front, one line, exit 2, and nothing is written into it, not even Hydra's .hydra/."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = _snapshot(out)
        line = _one_line(engine_cli([*SMALL, f"paths.output_dir={out}"], tmp_path))
        assert f"paths.output_dir={out} is in use by another run" in line
        assert _snapshot(out) == before == {MARKER: before[MARKER]}
        assert sorted(p.name for p in out.iterdir()) == [MARKER]
        assert not (tmp_path / "outputs").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.mark.slow
def test_output_dir_empty_reused_and_failed_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()  # an empty folder may be used
    ok = engine_cli([*SMALL, f"paths.output_dir={out}", f"hydra.run.dir={tmp_path / 'h1'}"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (out / MARKER).is_file() and json.loads((out / COMPLETE).read_text())["status"] == "complete"
    assert MARKER not in json.loads((out / COMPLETE).read_text())["files"]
    # a failing run into it: its reason in error.txt there, no stale results
    bad = engine_cli(
        [*SMALL, "backtest.start=2030-01-01", f"paths.output_dir={out}", f"hydra.run.dir={tmp_path / 'h2'}"], tmp_path
    )
    line = _one_line(bad)
    assert (out / "error.txt").read_text().strip() == line.removeprefix("error: ")
    assert not (out / COMPLETE).exists() and not (out / "metrics.json").exists()
    assert (tmp_path / "h2" / "error.txt").is_file()
    again = engine_cli([*SMALL, f"paths.output_dir={out}", f"hydra.run.dir={tmp_path / 'h3'}"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert not (out / "error.txt").exists() and (out / COMPLETE).is_file()


def test_an_unwritable_lakehouse_is_not_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root can write anything: the check is probed with ``os.access`` saying no."""
    from engine.compose import output_folder_check

    shared = tmp_path / "shared"
    shared.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == shared else real(p, mode))
    output_folder_check([f"paths.lakehouse_dir={shared}"], multirun=False)
    with pytest.raises(ConfigError, match=r"\(paths.output_dir\) cannot be written"):
        output_folder_check([f"paths.output_dir={shared / 'run'}"], multirun=False)


def test_a_missing_partition_in_a_read_only_lakehouse_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.data.ingest import IngestionService
    from engine.data.lakehouse import Lakehouse
    from engine.data.sources.synthetic import SyntheticSource
    from engine.data.storage import LocalStorage

    def denied(self: LocalStorage, path: Path, payload: bytes) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(LocalStorage, "write_bytes", denied)
    src = SyntheticSource(5, 3, "2024-01-01", "2024-01-31")
    with pytest.raises(DataError) as info:
        IngestionService(Lakehouse(tmp_path / "lh"), src).fetch_universe(src.symbols(), src.start_ms, src.end_ms)
    first = src.symbols()[0]
    assert str(info.value).startswith(
        f"cannot write the partition {tmp_path / 'lh' / 'bars' / 'interval=1d'}/symbol={first.replace('/', '_')} "
        f"({first} 1d): it lacks 2024-01-01 00:00 to "
    )
    assert "read-only to this user (Permission denied:" in str(info.value)


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp folder every user can reach (pytest's own temp root is private to its user); removed after."""
    with tempfile.TemporaryDirectory(prefix="engine-test-") as name:
        folder = Path(name)
        folder.chmod(0o777)
        try:
            yield folder
        finally:
            subprocess.run(["chmod", "-R", "u+w", name], check=False)


@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to run as an unprivileged user"
)
def test_a_read_only_lakehouse_runs(shared_tmp: Path) -> None:
    """A complete lakehouse nobody may write: a run reads it, writes nothing into it, and matches."""
    tmp = shared_tmp
    # numba caches compiled code beside the sources, which this user cannot write in a root's checkout
    env = {**os.environ, "HOME": str(tmp), "CI": "1", "NUMBA_CACHE_DIR": str(tmp / "numba")}
    probe = subprocess.run([*NOBODY, "-c", "import engine"], cwd=tmp, env=env, capture_output=True, timeout=120)
    if probe.returncode != 0:  # e.g. a checkout or venv under a 0700 folder such as mktemp -d makes
        pytest.skip("user 65534 cannot import this install (a parent folder is not readable by others)")
    lh, gap = tmp / "lh", tmp / "gap"
    args = [*SMALL, "paths.ledger=null"]
    ref = engine_cli([*args, f"paths.lakehouse_dir={lh}", f"hydra.run.dir={tmp / 'ref'}"], tmp)
    assert ref.returncode == 0, ref.stderr  # as root: fills the lakehouse
    shutil.copytree(lh, gap)
    victim = sorted(gap.glob("*/bars/interval=*/symbol=*"))[0]
    shutil.rmtree(victim)  # one partition the lakehouse lacks
    subprocess.run(["chmod", "-R", "a-w", str(lh), str(gap)], check=True)
    before = {"lh": _snapshot(lh), "gap": _snapshot(gap)}

    def as_nobody(lakehouse: Path, run: str) -> subprocess.CompletedProcess[str]:
        cmd = [*NOBODY, "-m", "engine", *args, f"paths.lakehouse_dir={lakehouse}", f"hydra.run.dir={tmp / run}"]
        return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)

    ro = as_nobody(lh, "ro")
    assert ro.returncode == 0, ro.stderr
    assert (tmp / "ro" / "metrics.json").read_bytes() == (tmp / "ref" / "metrics.json").read_bytes()
    # a run that needs a partition the lakehouse lacks: one line naming it, nothing written
    line = _one_line(as_nobody(gap, "gapped"))
    assert f"cannot write the partition {victim} (" in line and "read-only to this user" in line
    assert {"lh": _snapshot(lh), "gap": _snapshot(gap)} == before
