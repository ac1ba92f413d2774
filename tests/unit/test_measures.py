"""The measure registry (gate/core/measures.py): every measure a verdict reports
is named there once, with its unit and which direction is better, and the
shared helpers keep the semantics their callers relied on."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gate.core.measures import (
    CHANNEL_MEASURES,
    MEASURES,
    as_float_array,
    first_divergence,
    higher_is_better,
    measure,
    report_number,
    short,
)
from gate.core.thresholds import CHECKS


def test_every_check_measures_a_registered_measure_in_its_direction():
    for spec in CHECKS:
        assert spec.measure in MEASURES, spec.id
        assert spec.op == {"lower": "<=", "higher": ">="}[MEASURES[spec.measure].direction], spec.id


def test_directions_and_units_are_declared():
    for m in MEASURES.values():
        assert m.direction in ("lower", "higher", None), m.name
        assert m.unit and m.label, m.name
    assert higher_is_better("forced.top1_agreement") and higher_is_better("free_run.exact_match_rate")
    assert not higher_is_better("forced.max_abs_diff") and not higher_is_better("forced.tokens")
    assert not higher_is_better("no_such_measure")
    assert measure("sampler.k3_kl").label == "k3 KL"
    assert [m.name for m in CHANNEL_MEASURES][:2] == ["tokens", "mismatched"]


@pytest.mark.parametrize("x, want", [(None, "n/a"), (0.0, "0"), (0.5, "0.5"), (1.23456e-7, "1.23e-07"),
                                     (12345.0, "1.23e+04"), (math.inf, "inf")])
def test_short(x, want):
    assert short(x) == want


@pytest.mark.parametrize("x, want", [(None, "n/a"), (True, "yes"), (1234567, "1,234,567"), (10 ** 400, "inf"),
                                     ("-Infinity", "-inf"), ("NaN", "NaN"), (2.5e-7, "2.5e-07"), (0.25, "0.25"),
                                     ("text", "text")])
def test_report_number(x, want):
    assert report_number(x) == want


def test_null_is_nan_and_first_divergence():
    a = as_float_array([-0.5, None, -1.0])
    assert a.dtype == np.float64 and math.isnan(a[1]) and a[2] == -1.0
    assert as_float_array(x for x in [-1.0]).tolist() == [-1.0]
    assert first_divergence([1, 2, 3], [1, 2, 4]) == 2
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    assert first_divergence([], [5]) == 0
