"""The vLLM adapter's refusal of engine-arg values (gate/run/engine.py), without
vLLM: the errors are built as vLLM's config classes raise them."""
from __future__ import annotations

import pytest

from gate.run.engine import rejected_engine_args

LINES = {"dtype": "suite.yaml:3", "max_model_len": "suite.yaml:4", "seed": "--engine-arg seed"}
ARGS = {"dtype": "flaot32", "max_model_len": 99999, "seed": 0}


def _pydantic_error(**fields):
    """A pydantic ValidationError as vLLM's ModelConfig (a pydantic dataclass) raises it."""
    pydantic = pytest.importorskip("pydantic")
    model = pydantic.create_model("ModelConfig", **fields)
    with pytest.raises(pydantic.ValidationError) as exc:
        model(**{k: ARGS[k] for k in fields})
    return exc.value


def test_engine__value_typo_is_named_at_the_suite_line():
    from typing import Literal

    exc = _pydantic_error(dtype=(Literal["auto", "half", "float16", "bfloat16", "float", "float32"], ...))
    err = rejected_engine_args(exc, ARGS, LINES)
    assert err.exit_code == 2
    assert err.what == ("suite.yaml:3: engine arg dtype='flaot32' rejected by vLLM: Input should be 'auto', 'half', "
                        "'float16', 'bfloat16', 'float' or 'float32'")
    assert "\n" not in err.line() and "errors.pydantic.dev" not in err.line()


def test_engine__a_config_check_that_names_the_arg_in_words_points_at_it():
    exc = ValueError("User-specified max_model_len (99999) is greater than the derived max_model_len (1024)")
    err = rejected_engine_args(exc, ARGS, LINES)
    assert err.what.startswith("suite.yaml:4: engine arg max_model_len=99999 rejected by vLLM: User-specified")


def test_engine__an_arg_from_the_command_line_is_named_as_such():
    err = rejected_engine_args(ValueError("seed must be non-negative"), ARGS, LINES)
    assert err.what.startswith("--engine-arg seed: engine arg seed=0 rejected by vLLM")


def test_engine__a_complaint_naming_no_arg_keeps_the_old_shape():
    err = rejected_engine_args(RuntimeError("no\nplatform   detected"), ARGS, LINES)
    assert err.what == "engine args rejected by vLLM (RuntimeError): no platform detected"
    # a name inside a longer word is not a mention
    err = rejected_engine_args(ValueError("derived_max_model_len_x too small"), ARGS, LINES)
    assert err.what.startswith("engine args rejected by vLLM: ")
