"""Property-based tests: the command-line parsers and the record reader take any input.

- Every parser of bench.config, given any text, returns a valid value or raises BadInput (a
  one-line error, exit 2), never another exception; what it accepts is plain ASCII decimal.
- The record loader, given any bytes, never raises and yields only dicts; latest_by_cell, given
  any list of dicts, never raises and keeps one record per cell identity.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.config import (
    MAX_SIDE,
    MODES,
    parse_batches,
    parse_float,
    parse_int,
    parse_models,
    parse_modes,
    parse_resolutions,
)
from bench.errors import BadInput
from bench.record import latest_by_cell, read_records_counted
from models import list_models

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ASCII_INT = re.compile(r"[0-9]+")
ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

# Text that looks like the options' values often enough to reach the accepting paths, and
# the look-alikes that must not pass: full-width and Arabic-Indic digits, "_", signs, nan/inf,
# unicode spaces, huge numbers.
TOKENS = [*"0123456789,:xX.+-_eE \n\r", "\u2028", "\x1c", "\u00a0", "\u2003", "\uff13", "\u0663", "nan", "inf", "auto",
          "9" * 30, "0" * 30]
NUMBERISH = st.lists(st.sampled_from(TOKENS), max_size=16).map("".join)
ANY_TEXT = st.one_of(st.text(max_size=60), NUMBERISH, st.just("1" * 5000), st.just("32:" + "9" * 400 + ":32"))


def _bad_input_or(fn, *args, **kwargs):
    """fn's result, or None when it raised BadInput (any other exception fails the test)."""
    try:
        return fn(*args, **kwargs)
    except BadInput as exc:
        assert len(exc.format_message().splitlines()) == 1, exc.format_message()  # one line
        return None


@FUZZ
@given(ANY_TEXT, st.integers(min_value=0, max_value=8), st.none() | st.integers(min_value=0, max_value=16))
def test_parse_int_any_text(text, minimum, maximum):
    value = _bad_input_or(parse_int, text, "--x", minimum=minimum, maximum=maximum)
    if value is not None:
        assert type(value) is int and value >= minimum and (maximum is None or value <= maximum)
        assert ASCII_INT.fullmatch(text.strip()) and int(text.strip()) == value


@FUZZ
@given(ANY_TEXT)
def test_parse_float_any_text(text):
    value = _bad_input_or(parse_float, text, "--budget", 0, min_open=True, maximum=86400)
    if value is not None:
        assert type(value) is float and math.isfinite(value) and 0 < value <= 86400
        assert ASCII_FLOAT.fullmatch(text.strip()) and float(text.strip()) == value


@FUZZ
@given(st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False), st.booleans(),
                 st.none(), st.lists(st.integers(), max_size=2), st.builds(lambda: 10 ** 5000)))
def test_parse_float_any_config_value(value):
    """Values of a --config file reach parse_float as they are (numbers, lists, null)."""
    number = _bad_input_or(parse_float, value, "--lr", 0, min_open=True, maximum=10)
    if number is not None:
        assert math.isfinite(number) and 0 < number <= 10 and not isinstance(value, bool)


@FUZZ
@given(ANY_TEXT)
def test_parse_resolutions_any_text(text):
    sizes = _bad_input_or(parse_resolutions, text)
    if sizes is not None:
        assert sizes and len(sizes) == len(set(sizes))
        for h, w in sizes:
            assert type(h) is int and type(w) is int
            assert 0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE and h % 32 == 0 and w % 32 == 0
        # everything between the commas was ASCII digits, "x" and ":" only
        assert re.fullmatch(r"[0-9xX:,\s]*", text), text


@FUZZ
@given(ANY_TEXT, st.booleans())
def test_parse_batches_any_text(text, allow_auto):
    batches = _bad_input_or(parse_batches, text, allow_auto=allow_auto)
    if batches is not None:
        assert batches and len(batches) == len(set(batches))
        for b in batches:
            assert (b == "auto" and allow_auto) or (type(b) is int and b > 0)
        for item in (t.strip() for t in text.split(",") if t.strip()):
            assert item == "auto" or ASCII_INT.fullmatch(item), item


NAMES = st.lists(st.sampled_from(list_models()), min_size=1, max_size=4)


@FUZZ
@given(st.one_of(ANY_TEXT, NAMES.map(",".join),
                 st.tuples(NAMES, st.text(max_size=5)).map(lambda t: ",".join(t[0]) + "," + t[1])))
def test_parse_models_any_text(text):
    names = _bad_input_or(parse_models, text)
    if names is not None:
        assert names and len(names) == len(set(names)) and set(names) <= set(list_models())


@FUZZ
@given(st.one_of(ANY_TEXT, st.lists(st.sampled_from([*MODES, " infer", "train ", ""]), max_size=4).map(",".join)))
def test_parse_modes_any_text(text):
    modes = _bad_input_or(parse_modes, text)
    if modes is not None:
        assert modes and set(modes) <= set(MODES) and len(modes) == len(set(modes))


# --------------------------------------------------------------------------------------------
# The record loader

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_subnormal=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
RECORD_KEYS = st.sampled_from(["cell_key", "config_id", "timestamp", "status", "batch", "model", "mode",
                               "schema_version", "dtype", "engine", "x"])
RECORDISH = st.dictionaries(RECORD_KEYS, JSON, max_size=6)
LINE = st.one_of(
    st.binary(max_size=80),                                           # anything at all
    JSON.map(lambda v: json.dumps(v).encode()),                       # JSON, often not an object
    RECORDISH.map(lambda r: json.dumps(r).encode()),                  # objects with odd field types
    st.just(b"[" * 5000 + b"]" * 5000),                               # deeper than json's recursion limit
    st.just(b"1" * 5000),                                             # beyond int()'s digit limit
    st.just(b'{"cell_key": "a", "x": "\xff\xfe"}'),                  # invalid UTF-8
    st.just(b"NaN"), st.just(b'{"a": Infinity}'),
)


@FUZZ
@given(st.lists(LINE, max_size=8), st.booleans())
def test_record_loader_never_raises(lines, trailing_newline):
    data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    try:
        os.write(fd, data)
        os.close(fd)
        records, bad = read_records_counted(path)
    finally:
        os.unlink(path)
    assert all(isinstance(r, dict) for r in records)
    nonblank = [line for line in data.split(b"\n") if line.strip()]
    assert len(records) + bad == len(nonblank) and bad >= 0


@FUZZ
@given(st.lists(RECORDISH, max_size=12))
def test_latest_by_cell_any_dicts(records):
    latest = latest_by_cell(records)
    assert all(any(r is x for x in records) for r in latest)  # only records it was given
    keyed = [(r["cell_key"], r.get("config_id")) for r in latest
             if isinstance(r.get("cell_key"), str) and r["cell_key"]
             and (r.get("config_id") is None or isinstance(r.get("config_id"), str))]
    assert len(keyed) == len(set(keyed))  # one record per cell identity
    for r in records:  # a record without a usable identity is never merged away
        if not (isinstance(r.get("cell_key"), str) and r["cell_key"]
                and (r.get("config_id") is None or isinstance(r.get("config_id"), str))):
            assert any(r is x for x in latest)


def test_latest_by_cell_keeps_the_latest_try():
    a1 = {"cell_key": "k", "config_id": "c", "timestamp": "2024-01-01T00:00:00.000001"}
    a2 = {"cell_key": "k", "config_id": "c", "timestamp": "2024-01-01T00:00:00.000002"}
    odd = {"cell_key": ["k"], "config_id": "c"}
    odd_id = {"cell_key": "k", "config_id": ["c"]}  # unhashable: stands alone, no TypeError
    assert latest_by_cell([a2, a1, odd, odd_id]) == [a2, odd, odd_id]


@pytest.mark.parametrize("text", ["１２８", "٣٢", "64_0", "+64", "0x40", "64.0", "6４"])
def test_lookalike_digits_are_bad_resolutions(text):
    with pytest.raises(BadInput):
        parse_resolutions(text)
