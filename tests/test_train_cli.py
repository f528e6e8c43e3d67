"""`edge train`: help, clear refusals, and the missing-extra message (no model is loaded here)."""
from __future__ import annotations

import sys

from click.testing import CliRunner

from edge.commands.train import train
from edge.errors import MissingExtraError


def test_help_lists_both_agents():
    result = CliRunner().invoke(train, ["--help"])
    assert result.exit_code == 0
    assert "manager" in result.output and "answer" in result.output
    sub = CliRunner().invoke(train, ["manager", "--help"])
    assert "--config" in sub.output and "--steps" in sub.output and "--out" in sub.output


def test_a_config_for_the_other_agent_is_refused():
    result = CliRunner().invoke(train, ["answer", "--config", "smollm2-135m-manager"])
    assert result.exit_code == 2
    assert "edge train manager" in result.output


def test_an_unknown_config_names_the_shipped_ones():
    result = CliRunner().invoke(train, ["manager", "--config", "no-such-config"])
    assert result.exit_code != 0
    assert "smollm2-135m-manager" in str(result.exception)


def test_missing_training_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # importing trl now fails as if it were not installed
    result = CliRunner().invoke(train, ["manager", "--config", "smollm2-135m-manager"])
    assert isinstance(result.exception, MissingExtraError)
    assert "edge-memory[train]" in str(result.exception)
