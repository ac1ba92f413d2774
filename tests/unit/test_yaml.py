"""The project's YAML loader (gate/core/yamlio.py): floats as YAML 1.2 writes
them, and everything it refused before still refused, at its line."""
from __future__ import annotations

import pytest
import yaml

from gate.core.errors import BadInput
from gate.core.yamlio import load_yaml


def _load(tmp_path, text):
    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    return load_yaml(path)


@pytest.mark.parametrize("text,value", [
    ("1e-4", 1e-4), ("1E-4", 1e-4), ("-1e-4", -1e-4), ("+2.5e3", 2500.0), ("1e4", 1e4), (".5e-3", 5e-4),
    ("1.0e4", 1e4), ("1.e5", 1e5), ("1.0e-4", 1e-4),  # YAML 1.1's own form still reads
])
def test_yaml__exponent_floats_in_yaml_1_2_form_are_floats(tmp_path, text, value):
    got = _load(tmp_path, f"atol: {text}\n")["atol"]
    assert type(got) is float and got == value


@pytest.mark.parametrize("text,value", [
    ("10", 10), ("0x1f", 31), ("1_000", 1000), ("1.5", 1.5), ("'1e-4'", "1e-4"), ('"1e-4"', "1e-4"),
    ("1e", "1e"), ("e4", "e4"), ("1e-4x", "1e-4x"), ("v1e4", "v1e4"),
])
def test_yaml__other_scalars_resolve_as_before(tmp_path, text, value):
    got = _load(tmp_path, f"k: {text}\n")["k"]
    assert type(got) is type(value) and got == value


def test_yaml__plain_safe_load_is_untouched():
    """The loader's resolver table is its own: yaml.safe_load elsewhere keeps YAML 1.1."""
    assert yaml.safe_load("a: 1e-4") == {"a": "1e-4"}


def test_yaml__duplicate_keys_and_lines_still_hold_next_to_floats(tmp_path):
    data = _load(tmp_path, "policy:\n  atol: 1e-4\n  rtol: 0\n")
    assert data["policy"].lines == {"atol": 2, "rtol": 3}
    with pytest.raises(BadInput, match=r"x\.yaml:3: malformed YAML: duplicate key 'atol' \(first at line 2\)"):
        _load(tmp_path, "policy:\n  atol: 1e-4\n  atol: 2e-4\n")
