"""The shared input checks of ``jaxfactor._validate``: integers (never ``bool``), finite numbers in
a range, probabilities and choices; each failure is a one-line ``ValueError`` naming the argument."""

import numpy as np
import pytest

from jaxfactor._validate import (
    check_choice,
    check_int,
    check_n_components,
    check_nonnegative_float,
    check_number,
    check_positive_int,
    check_probability,
)


@pytest.mark.parametrize("value", [0, 3, np.int8(3), np.int32(3), np.int64(3), np.uint16(3)])
def test_check_int_accepts_python_and_numpy_integers(value):
    out = check_int(value, "n", 0)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [True, False, np.True_, 2.0, np.float32(2), "2", None, [2], np.array(2)])
def test_check_int_refuses_non_integers(value):
    with pytest.raises(ValueError, match=r"^n must be an integer, got ") as err:
        check_int(value, "n")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs,value,message", [
    ({"minimum": 1}, 0, "n must be an integer >= 1, got 0"),
    ({"minimum": 0}, -1, "n must be an integer >= 0, got -1"),
    ({"maximum": 5}, 6, "n must be an integer <= 5, got 6"),
    ({"minimum": 1, "maximum": 5}, 6, "n must be an integer with 1 <= n <= 5, got 6"),
    ({"minimum": 1, "allow_none": True}, 0, "n must be None or an integer >= 1, got 0"),
])
def test_check_int_bounds(kwargs, value, message):
    with pytest.raises(ValueError) as err:
        check_int(value, "n", **kwargs)
    assert str(err.value) == message


def test_check_int_bounds_are_inclusive_and_none_passes_when_allowed():
    assert check_int(1, "n", 1, 1) == 1
    assert check_int(None, "n", 1, allow_none=True) is None
    with pytest.raises(ValueError, match="n must be an integer >= 1, got None"):
        check_int(None, "n", 1)


@pytest.mark.parametrize("value", [0, 1, 0.5, np.float32(0.25), np.float64(0.75), np.int64(1)])
def test_check_number_accepts_ints_and_floats(value):
    out = check_number(value, "x", 0, 1)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value,message", [
    (True, "x must be a number >= 0, got True"),
    (np.bool_(False), "x must be a number >= 0, got "),
    ("1", "x must be a number >= 0, got '1'"),
    (None, "x must be a number >= 0, got None"),
    (1 + 0j, "x must be a number >= 0, got "),
    (float("nan"), "x must be a finite number >= 0, got nan"),
    (np.inf, "x must be a finite number >= 0, got inf"),
    (-np.inf, "x must be a finite number >= 0, got -inf"),
    (-0.5, "x must be a finite number >= 0, got -0.5"),
])
def test_check_number_refuses_bools_strings_and_non_finite(value, message):
    with pytest.raises(ValueError) as err:
        check_number(value, "x", 0)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs,value,interval", [
    ({"low": 0, "high": 1}, 1.5, "in [0, 1]"),
    ({"low": 0, "high": 1, "low_open": True}, 0.0, "in (0, 1]"),
    ({"low": 0, "high": 1, "high_open": True}, 1.0, "in [0, 1)"),
    ({"low": 0, "high": 0.5, "low_open": True, "high_open": True}, 0.5, "in (0, 0.5)"),
    ({"low": 0, "low_open": True}, 0, "> 0"),
    ({"high": 1e-6}, 1.0, "<= 1e-06"),
])
def test_check_number_bounds(kwargs, value, interval):
    with pytest.raises(ValueError) as err:
        check_number(value, "x", **kwargs)
    assert str(err.value) == f"x must be a finite number {interval}, got {value!r}"


def test_check_number_what_names_the_quantity():
    with pytest.raises(ValueError) as err:
        check_number(101, "min_maf", 0, 100, what="a percentage of cells")
    assert str(err.value) == "min_maf is a percentage of cells and must be a finite number in [0, 100], got 101"
    assert check_number(np.int64(100), "min_maf", 0, 100, what="a percentage of cells") == 100.0


@pytest.mark.parametrize("value,kwargs,ok", [
    (0.0, {}, True), (1.0, {}, True), (0.0, {"low_open": True}, False), (1.0, {"high_open": True}, False),
    (0.5, {"low_open": True, "high_open": True}, True), (-0.1, {}, False), (1.1, {}, False), (np.nan, {}, False),
])
def test_check_probability(value, kwargs, ok):
    if ok:
        assert check_probability(value, "p", **kwargs) == value
    else:
        with pytest.raises(ValueError, match=r"^p must be a finite number in [\[(]0, 1[\])], got "):
            check_probability(value, "p", **kwargs)


def test_check_choice():
    assert check_choice("em", "method", ("em", "vb")) == "em"
    with pytest.raises(ValueError) as err:
        check_choice("gibbs", "method", ("em", "vb"))
    assert str(err.value) == "unknown method 'gibbs'; choose one of 'em', 'vb'"
    with pytest.raises(ValueError) as err:
        check_choice("x", "init", ["a", "b"], hint="or pass means_init")
    assert str(err.value) == "unknown init 'x'; choose one of 'a', 'b' or pass means_init"
    # non-strings never match string choices, and an array is refused, not compared elementwise
    for value in (None, 1, np.array(["em", "vb"]), ["em"]):
        with pytest.raises(ValueError, match="unknown method"):
            check_choice(value, "method", ("em", "vb"))
    # mixed choices compare with ==, as `in` does
    assert check_choice(True, "sparse", ("auto", True, False)) is True
    with pytest.raises(ValueError, match=r"unknown sparse 'yes'; choose one of 'auto', True, False"):
        check_choice("yes", "sparse", ("auto", True, False))


def test_existing_checks_keep_their_messages():
    with pytest.raises(ValueError, match=r"^max_iter must be an integer >= 1, got 0$"):
        check_positive_int(0, "max_iter")
    with pytest.raises(ValueError, match=r"^seed must be an integer >= 0, got True$"):
        check_positive_int(True, "seed", minimum=0)
    assert check_positive_int(np.int64(0), "seed", minimum=0) == 0
    with pytest.raises(ValueError, match=r"^noise must be a finite number >= 0, got -1.0$"):
        check_nonnegative_float(-1.0, "noise")
    with pytest.raises(ValueError, match=r"^tol must be a number"):
        check_nonnegative_float("1e-4", "tol")
    assert check_nonnegative_float(np.float32(0.5), "tol") == 0.5
    with pytest.raises(ValueError, match=r"^n_components must be an integer, got 2.0$"):
        check_n_components(2.0, (5, 4))
    with pytest.raises(ValueError, match=r"n_components=5 is out of range for data of shape \(5, 4\)"):
        check_n_components(5, (5, 4))
    assert check_n_components(np.int32(4), (5, 4)) == 4


def test_validate_imports_only_numpy():
    import ast
    import pathlib

    import jaxfactor._validate as v

    tree = ast.parse(pathlib.Path(v.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"numpy", "__future__"}, imported
