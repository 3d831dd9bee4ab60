"""CLI argument checking: bad values are usage errors (exit 2, one line), never a stack trace."""

from __future__ import annotations

import pytest

from ray_jobs.cli import build_parser, main


@pytest.mark.parametrize("argv", [
    ["generate", "--out", "x", "--users", "0"],
    ["generate", "--out", "x", "--events", "-5"],
    ["generate", "--out", "x", "--bad-fraction", "1.5"],
    ["backfill", "in", "--table", "t", "--workers", "0"],
    ["score", "--requests", "r", "--model", "m:f", "--out", "o", "--table", "t", "--max-len", "zero"],
    ["create-table", "t", "--salt-buckets", "0"],
])
def test_out_of_range_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


def test_valid_values_parse() -> None:
    args = build_parser().parse_args(["generate", "--out", "x", "--users", "3", "--bad-fraction", "0.25"])
    assert args.users == 3 and args.bad_fraction == 0.25
