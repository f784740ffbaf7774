"""Command lines and checks the command-line tests share."""

from __future__ import annotations

import pytest

from adasparse.app.cli import main


def train_digits_mlp(epochs: int, *options: str) -> list[str]:
    """``adasparse train`` of the MLP on digits for ``epochs`` epochs, then ``options``."""
    return ["train", "--dataset", "digits", "--model", "mlp", "--epochs", str(epochs), *options]


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    """``adasparse ARGV`` exits with status 2 and one line on stderr containing ``expected``, no traceback."""
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert expected in err, err
