"""trace_format.loads reads a line exactly as json.loads with the trace's
constants does: the same objects (floats bit for bit), the same errors."""
from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.core.trace_format import loads, reject_constant


def _json(raw: bytes):
    return json.loads(raw, parse_constant=reject_constant)


def _outcome(read, raw: bytes):
    try:
        return "ok", read(raw)
    except RecursionError:
        return "recursion", None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return type(exc).__name__, str(exc)


def _same(x, y) -> bool:
    """Equal, of the same types all the way down, floats bit for bit (NaN != NaN, -0.0 != 0.0 otherwise)."""
    if type(x) is not type(y):
        return False
    if type(x) is float:
        return struct.pack("<d", x) == struct.pack("<d", y)
    if type(x) is list:
        return len(x) == len(y) and all(map(_same, x, y))
    if type(x) is dict:
        return list(x) == list(y) and all(_same(x[k], y[k]) for k in x)
    return x == y


def _assert_like_json(raw: bytes) -> None:
    want, got = _outcome(_json, raw), _outcome(loads, raw)
    assert want[0] == got[0] and (want[0] != "ok" and want[1] == got[1] or _same(want[1], got[1])), raw[:80]


@pytest.mark.parametrize("raw", [
    b"NaN", b"-NaN", b"[NaN]", b"Infinity", b"[Infinity]", b"+Infinity", b"[-Infinity,Infinity]", b"-Infinity",
    b'[-Infinity,"Infinity"]', b'["NaN"]', b"Inf", b"-inf", b"nan", b"[- Infinity]", b"[-Infinityx]",
    b"+1", b".5", b"1.", b"01", b"-01", b"-", b"1e", b"1.0e+", b"0x10", b"00", b"123abc", b"1.e5",
    b"1E+2", b"1e05", b"0e0", b"-0e-0", b"-0", b"-0.0", b"1e400", b"-1e400", b"1e-400", b"4.9e-324", b"2.4e-324",
    b"1.7976931348623159e308", b"12345678901234567890123456789", b"-9223372036854775809", b"9" * 500,
    b"[1,]", b"{,}", b'{"a":1,}', b'{"a" 1}', b"{1:2}", b"[1 2]", b"[1] [2]", b"[1]x", b"'a'", b"//c\n1",
    b"", b"\n", b" ", b"\r\n[1]\r\n", b"[1]\r", b"\t[]", b"\x0c1", b"1\x0c", b"\x00", b"[1]\x00",
    b"true", b"True", b"NULL", b"nul", b"[tru]", b'"abc', b'{"a":1', b'{"a":1,"a":2}', b'{"a":null}',
    b'"a\x01b"', b'"a\tb"', b'"\\x"', b'"\\/"', b'"\\u00e9"', b'"\\ud800"', b'"\\udc00x"', b'"\\ud83d\\ude00"',
    b'"\\ud83d\\u0041"', b'"\xed\xa0\x80"', b'"\xff"', b'"\xc2\x80"', b'"\x7f"', b'["\xe2\x80\xa8"]',
    b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"[" * 300 + b"]" * 300, b"[" * 5000 + b"]" * 5000,
    b'{"config":"a","logprobs":[null,-Infinity,-1,2.5,-0.0,1e-310]}',
])
def test_loads__reads_what_json_reads_and_refuses_what_it_refuses(raw):
    _assert_like_json(raw)


def test_loads__floats_bit_for_bit():
    rng = np.random.default_rng(0)
    doubles = rng.integers(0, 2 ** 64, 100_000, dtype=np.uint64).view(np.float64)
    singles = rng.integers(0, 2 ** 32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = [x for x in doubles.tolist() + singles.tolist() if math.isfinite(x)]  # float32 -> float64: exact
    texts = [repr(x) for x in values] + ["%.17g" % x for x in values[:20_000]] + ["%.25e" % x for x in values[:20_000]]
    digits = rng.integers(0, 10, (20_000, 30))
    exps = rng.integers(-350, 330, 20_000)
    texts += [f"{d[0]}.{''.join(map(str, d[1:]))}e{e}" for d, e in zip(digits.tolist(), exps.tolist())]
    texts += ["2.4703282292062327e-324", "2.4703282292062328e-324", "1.79769313486231580793728971405301e308",
              "0.1000000000000000055511151231257827021181583404541015625", "9007199254740993.0", "1" * 400 + ".0",
              "0." + "0" * 400 + "1"]
    raw = ("[" + ",".join(texts) + "]").encode()
    assert _same(loads(raw), _json(raw))


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.just(-math.inf) | st.text(),
                    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=5), kids, max_size=5),
                    max_leaves=30))
def test_loads__any_json_value_reads_the_same(value):
    raw = json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")
    _assert_like_json(raw)
    _assert_like_json(json.dumps(value, allow_nan=True).encode())  # \u escapes, lone surrogates among them
