"""The ``gr2-sim`` command's help: what a newcomer types first must print, not crash."""

from __future__ import annotations

import pytest

from gr2_sim import cli


def test_top_level_help_lists_every_command(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    assert "95% CI" in out  # argparse %-formats help text; a bare % in a command's help once crashed it


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_prints_its_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"gr2-sim {name}" in capsys.readouterr().out
