"""Model presets: `preset: agentflow-planner` fills in what the planner needs; the entry's own fields win."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.settings import ConfigError, Settings, load_settings

GGUF = "/models/AgentFlow_agentflow-planner-7b-Q4_K_M.gguf"


def _load(tmp_path: Path, entry: dict[str, object]) -> Settings:
    config = tmp_path / "tiergate.yaml"
    config.write_text(yaml.safe_dump({"local_models": [entry]}))
    return load_settings(config)


def test_the_planner_preset_sets_chatml_context_and_its_verifier(tmp_path: Path) -> None:
    model = _load(tmp_path, {"preset": "agentflow-planner", "path": GGUF}).local_models[0]
    assert model.chat_format == "chatml"
    assert model.context_tokens == 8192
    assert model.name == "agentflow-planner"
    assert model.verifiers == ("agentflow_planner",)
    assert model.path == Path(GGUF)


def test_fields_set_in_the_entry_win_over_the_preset(tmp_path: Path) -> None:
    entry = {"preset": "agentflow-planner", "path": GGUF, "name": "planner-7b", "context_tokens": 4096}
    model = _load(tmp_path, entry).local_models[0]
    assert (model.name, model.context_tokens, model.chat_format) == ("planner-7b", 4096, "chatml")


def test_without_a_preset_nothing_changes(tmp_path: Path) -> None:
    model = _load(tmp_path, {"name": "plain", "path": GGUF}).local_models[0]
    assert (model.chat_format, model.verifiers, model.preset) == ("gemma", (), None)


def test_an_unknown_preset_is_a_config_error_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"local_models\.0.*unknown preset 'agentflow-plannr'; known: agentflow-planner"
    ):
        _load(tmp_path, {"preset": "agentflow-plannr", "path": GGUF})


def test_a_preset_still_needs_the_gguf_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs `path`"):
        _load(tmp_path, {"preset": "agentflow-planner"})


def test_unknown_per_model_verifiers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown verifiers psychic"):
        _load(tmp_path, {"name": "plain", "path": GGUF, "verifiers": ["psychic"]})
