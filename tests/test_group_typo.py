"""A config group option that does not exist (``portfolio=foo``) is one line naming the group's options."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main


@pytest.mark.parametrize(
    ("override", "want"),
    [
        (
            "portfolio=foo",
            "Could not find 'portfolio/foo': portfolio is one of equal, erc, hrp, inverse_vol, min_variance",
        ),
        ("exit_rules=sl5", "Could not find 'exit_rules/sl5': exit_rules is one of none, sl5_tp15"),
        ("+profile=crypto_ratin", "Could not find 'profile/crypto_ratin': available profiles are crypto_rating, "),
    ],
)
def test_an_unknown_group_option_names_the_options(
    override: str, want: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([override, f"paths.output_dir={tmp_path / 'out'}"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and want in err
    assert not (tmp_path / "out").exists()
