"""Config composition, validation and the command line's handling of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import engine_cli

from engine.compose import CONF_DIR, config_compose, overrides_expand
from engine.core.errors import ConfigError

PROFILES = sorted(p.stem for p in (CONF_DIR / "profile").glob("*.yaml"))


def test_profiles_exist() -> None:
    assert {"crypto_rating", "crypto_rating_baseline"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_composes_and_validates(profile: str) -> None:
    cfg, _ = config_compose([f"+profile={profile}"])
    assert cfg.task == "backtest"
    first_line = (CONF_DIR / "profile" / f"{profile}.yaml").read_text().splitlines()[1]
    assert first_line == f"# python -m engine +profile={profile}"


def test_crypto_rating_carries_sl5_tp15_and_baseline_none() -> None:
    cfg, _ = config_compose(["+profile=crypto_rating"])
    assert cfg.exit_rules is not None
    assert (cfg.exit_rules.sl_stop, cfg.exit_rules.tp_stop) == (0.05, 0.15)
    base, _ = config_compose(["+profile=crypto_rating_baseline"])
    assert base.exit_rules is None


def test_override_reaches_validated_model() -> None:
    cfg, _ = config_compose(["+profile=crypto_rating", "exit_rules.sl_stop=0.07", "ranking.top_n=3"])
    assert cfg.exit_rules is not None
    assert cfg.exit_rules.sl_stop == 0.07
    assert cfg.ranking.top_n == 3


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("ranking.top_nn=5", "top_nn"),
        ("ranking.top_n=0", "ranking.top_n"),
        ("exit_rules.sl_stop=-0.1", "exit_rules.sl_stop"),
        ("exit_rules.sl_stop=1.5", "exit_rules.sl_stop"),
        ("exit_rules.tp_stop=0", "exit_rules.tp_stop"),
        ("exit_rules.sl_stpo=0.05", "sl_stpo"),
        ("exit_rules.sl_stop=abc", "exit_rules.sl_stop"),
        ("+profile=nope", "nope"),
        ("portfolio.weighting=foo", "portfolio.weighting"),
        ("backtest.timeframes=[1x]", "1x"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_compose(["+profile=crypto_rating", override])
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_range_message_names_valid_range() -> None:
    with pytest.raises(ConfigError, match=r"> 0.0 and < 1.0"):
        config_compose(["exit_rules.sl_stop=1.5"])


def test_sweep_expansion_and_empty_grid() -> None:
    combos = overrides_expand(["+profile=crypto_rating", "exit_rules.sl_stop=0.02,0.05", "exit_rules.tp_stop=0.1,0.2"])
    assert len(combos) == 4
    assert ["+profile=crypto_rating", "exit_rules.sl_stop=0.05", "exit_rules.tp_stop=0.2"] in combos


@pytest.mark.parametrize(
    "override",
    [
        "exit_rules.sl_stop=-0.1",
        "exit_rules.sl_stop=1.5",
        "exit_rules.tp_stop=0",
        "exit_rules.sl_stpo=0.05",
        "exit_rules.sl_stop=abc",
        "ranking.top_nn=5",
        "+profile=unknown_profile",
    ],
)
def test_cli_bad_input_exit_2_one_line_no_artefacts(override: str, tmp_path: Path) -> None:
    proc = engine_cli(["+profile=crypto_rating", override, f"paths.lakehouse_dir={tmp_path / 'lh'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()
    assert not (tmp_path / "lh").exists()


def test_cli_sweep_with_all_invalid_values_fails_before_running(tmp_path: Path) -> None:
    proc = engine_cli(["-m", "+profile=crypto_rating", "exit_rules.sl_stop=1.0,1.5"], tmp_path)
    assert proc.returncode == 2
    assert "all 2 sweep values checked are invalid" in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_cli_malformed_override_is_one_line(tmp_path: Path) -> None:
    proc = engine_cli(["+profile=crypto_rating", "exit_rules.sl_stop=%(x)"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "malformed override 'exit_rules.sl_stop=%(x)'" in proc.stderr


def test_cli_empty_sweep_value_list(tmp_path: Path) -> None:
    proc = engine_cli(["-m", "+profile=crypto_rating", "ranking.top_n=range(1,1)"], tmp_path)
    assert proc.returncode == 2
    assert "sweep ranking.top_n has an empty value list" in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from engine.core import progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(progress.sys, "stderr", Tty())
    assert progress.progress_enabled()
    assert not progress.progress_enabled(quiet=True)
    monkeypatch.setenv("CI", "true")
    assert not progress.progress_enabled()
    monkeypatch.delenv("CI")
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())
    assert not progress.progress_enabled()
    assert list(progress.progress_iter([1, 2, 3], "x")) == [1, 2, 3]
