"""benchmarks/end_to_end.py: the two commands of a pair alternate their order from one repeat to the next."""

from __future__ import annotations

from pathlib import Path

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
