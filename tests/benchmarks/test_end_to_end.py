"""benchmarks/end_to_end.py: the two commands of a pair alternate their order from one repeat to the next."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import load_script


def test_gmp_runs_first_when_asked_and_each_time_goes_to_its_method(monkeypatch, tmp_path: Path) -> None:
    script = load_script("end_to_end")
    order: list[str] = []

    def timed(argv: list[str], check: bool = True) -> float:
        method = "gmp" if "gmp" in argv else "default"
        order.append(method)
        return {"gmp": 2.0, "default": 3.0}[method]

    monkeypatch.setattr(script, "_timed", timed)
    for gmp_first in (False, True):
        name, ours, gmp, copy = script._pair("digits", "cnn2d", 0, tmp_path, [], False, gmp_first)
        assert (name, ours, gmp, copy) == ("cnn2d (digits)", 3.0, 2.0, None)
    assert order == ["default", "gmp", "gmp", "default"]


def test_crossover_runs_both_commands_on_both_cores_and_cancels_a_fixed_core_speed(monkeypatch, tmp_path: Path) -> None:
    script = load_script("end_to_end")
    calls: list[tuple[str, int]] = []
    slowdown = {3: 1.0, 5: 1.5}  # core 5 runs everything half as slow again

    def timed(argv: list[str], check: bool = True, cpu: int | None = None) -> float:
        method = "gmp" if "gmp" in argv else "default"
        calls.append((method, cpu))
        return {"gmp": 2.0, "default": 2.2}[method] * slowdown[cpu]

    monkeypatch.setattr(script, "_timed", timed)
    name, halves, ratio = script._crossover("digits", "cnn2d", 0, tmp_path, [], (3, 5))
    assert name == "cnn2d (digits)"
    assert sorted(calls) == [("default", 3), ("default", 5), ("gmp", 3), ("gmp", 5)]
    assert halves == [(2.2, 3.0), (pytest.approx(3.3), 2.0)]
    assert abs(ratio - 1.1) < 1e-12  # either half alone reads 0.73 or 1.65


def test_timed_pins_the_command_to_the_core_given(tmp_path: Path) -> None:
    import os
    import sys

    script = load_script("end_to_end")
    core = min(os.sched_getaffinity(0))
    out = tmp_path / "affinity.txt"
    code = f"import os; open({str(out)!r}, 'w').write(str(sorted(os.sched_getaffinity(0))))"
    script._timed([sys.executable, "-c", code], cpu=core)
    assert out.read_text() == str([core])


def test_the_copy_operator_crossover_runs_the_bound_without_checking_its_status(monkeypatch, tmp_path: Path) -> None:
    script = load_script("end_to_end")
    calls: list[tuple[bool, bool, bool]] = []

    def timed(argv: list[str], check: bool = True, cpu: int | None = None) -> float:
        calls.append((script._COPY_OPERATOR in argv, "gmp" in argv, check))
        return 1.0

    monkeypatch.setattr(script, "_timed", timed)
    script._crossover("digits", "cnn2d", 0, tmp_path, [], (0, 1), copy_operator=True)
    # Nothing is pruned by a copy, so its run ends with status 1: only the bound's time counts, GMP's is checked.
    assert sorted(calls) == [(False, True, True), (False, True, True), (True, False, False), (True, False, False)]
