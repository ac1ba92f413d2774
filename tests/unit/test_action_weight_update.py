"""The action's `weight-update` input (action.yml) reaches `check --weight-update`."""
from __future__ import annotations

from pathlib import Path

import pytest

from gate.core.errors import BadInput
from gate.github.action_inputs import ActionSettings, check_argv

ENV = {"INPUT_SUITE": "parity/suite.yaml", "INPUT_GOLDEN": "parity/golden"}


def test_action__weight_update_input_becomes_the_check_flag():
    assert "--weight-update" not in check_argv(ActionSettings.from_env(ENV), Path("out"))
    assert ActionSettings.from_env(ENV).weight_update == "auto"
    off = ActionSettings.from_env(dict(ENV, INPUT_WEIGHT_UPDATE="off"))
    assert check_argv(off, Path("out"))[-2:] == ["--weight-update", "off"]


def test_action__weight_update_input_refuses_other_values():
    with pytest.raises(BadInput) as info:
        ActionSettings.from_env(dict(ENV, INPUT_WEIGHT_UPDATE="sometimes"))
    assert info.value.what == "INPUT_WEIGHT_UPDATE='sometimes': must be one of auto, off"


def test_action__weight_update_input_is_declared_and_passed_to_the_container():
    import yaml
    root = Path(__file__).resolve().parent.parent.parent
    action = yaml.safe_load((root / "action.yml").read_text())
    assert "weight-update" in action["inputs"]
    steps = {s["id"]: s for s in action["runs"]["steps"]}
    for step in ("pending", "gate", "publish"):  # each container parses the inputs
        assert steps[step]["env"]["INPUT_WEIGHT_UPDATE"] == "${{ inputs.weight-update }}", step
    # ... and passes every INPUT_* of its step's env into the container by name
    assert 'compgen -v INPUT_' in (root / "scripts" / "action-container.sh").read_text()
