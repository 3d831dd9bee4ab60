"""CLI argument checking: bad values are usage errors (exit 2, one line), never a stack trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_jobs.cli import build_parser, main
from ray_jobs.paths import check_writable_dir
from store.errors import SeqStoreError


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


# Every option an environment variable can set, with a value its flag would reject.
ENV_CASES = [
    ("SEQSTORE_WORKERS", "abc", ["backfill", "in", "--table", "t"], "--workers", "expected an integer"),
    ("SEQSTORE_WORKERS", "0", ["score", "--requests", "r", "--model", "m:f", "--out", "o", "--table", "t"],
     "--workers", "must be > 0"),
    ("SEQSTORE_WORKERS", "-1", ["export", "--labels", "l", "--out", "o", "--table", "t"], "--workers", "must be > 0"),
    ("SEQSTORE_SALT_BUCKETS", "0", ["create-table", "t"], "--salt-buckets", "must be > 0"),
    ("SEQSTORE_BUCKET_MS", "1.5", ["create-table", "t"], "--bucket-ms", "expected an integer"),
    ("SEQSTORE_TTL_DAYS", "x", ["create-table", "t"], "--ttl-days", "expected a number"),
    ("SEQSTORE_TTL_DAYS", "-3", ["create-table", "t"], "--ttl-days", "must be > 0"),
    ("SEQSTORE_MAX_EVENTS_PER_USER", "0", ["create-table", "t"], "--max-events-per-user", "must be > 0"),
    ("SEQSTORE_GEN_USERS", "ten", ["generate", "--out", "x"], "--users", "expected an integer"),
    ("SEQSTORE_GEN_EVENTS", "0", ["generate", "--out", "x"], "--events", "must be > 0"),
    ("SEQSTORE_GEN_SEED", "s", ["generate", "--out", "x"], "--seed", "expected an integer"),
    ("SEQSTORE_GEN_BAD_FRACTION", "1.5", ["generate", "--out", "x"], "--bad-fraction", "must be in [0, 1)"),
    ("SEQSTORE_GEN_BAD_FRACTION", "nan", ["generate", "--out", "x"], "--bad-fraction", "expected a finite number"),
    ("SEQSTORE_MAX_LEN", "zero", ["export", "--labels", "l", "--out", "o", "--table", "t"], "--max-len",
     "expected an integer"),
    ("SEQSTORE_HBASE_START_TIMEOUT", "soon", ["hbase", "start"], "--timeout", "expected a number"),
    ("SEQSTORE_HBASE_START_TIMEOUT", "0", ["hbase", "start"], "--timeout", "must be > 0"),
    ("SEQSTORE_HBASE_THRIFT_PORT", "http", ["hbase", "start"], "--thrift-port", "expected an integer"),
    ("SEQSTORE_HBASE_THRIFT2_PORT", "70000", ["hbase", "start"], "--thrift2-port", "must be a port in 1..65535"),
    ("SEQSTORE_JSON", "yes", ["hbase", "status"], "--json", "expected 1 or 0"),
]


@pytest.mark.parametrize(("var", "value", "argv", "flag", "reason"), ENV_CASES)
def test_a_bad_environment_value_is_the_flags_usage_error_naming_the_variable(
    var: str, value: str, argv: list[str], flag: str, reason: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    # argparse's shape for any bad argument: the usage, then exactly one error line.
    usage, error = err.split("\nseqstore ")
    assert usage.startswith("usage: seqstore ") and "Traceback" not in err
    assert error.endswith(f": error: argument {flag}: invalid value from {var}={value!r}: {reason}\n")
    assert error.count("\n") == 1


def test_a_flag_overrides_a_bad_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSTORE_WORKERS", "abc")
    monkeypatch.setenv("SEQSTORE_SALT_BUCKETS", "0")
    assert build_parser().parse_args(["backfill", "in", "--table", "t", "--workers", "3"]).workers == 3
    assert build_parser().parse_args(["create-table", "t", "--salt-buckets", "4"]).salt_buckets == 4


def test_environment_values_are_converted_like_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSTORE_WORKERS", "5")
    monkeypatch.setenv("SEQSTORE_REPORT_DIR", "/tmp/reports")
    monkeypatch.setenv("SEQSTORE_TABLE", "events")
    monkeypatch.setenv("SEQSTORE_JSON", "1")
    monkeypatch.setenv("SEQSTORE_TTL_DAYS", "7.5")
    monkeypatch.setenv("SEQSTORE_HBASE_DATA_DIR", "")  # empty: unset
    args = build_parser().parse_args(["backfill", "in"])
    assert (args.workers, args.report_dir, args.table, args.json) == (5, Path("/tmp/reports"), "events", True)
    assert type(args.table) is str
    assert build_parser().parse_args(["create-table", "t"]).ttl_days == 7.5
    assert build_parser().parse_args(["hbase", "status"]).data_dir is None
    monkeypatch.setenv("SEQSTORE_JSON", "0")
    assert build_parser().parse_args(["hbase", "status"]).json is False
    monkeypatch.setenv("SEQSTORE_WORKERS", "")
    assert build_parser().parse_args(["backfill", "in"]).workers == 2


def test_a_bad_variable_of_another_subcommand_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSTORE_SALT_BUCKETS", "0")
    assert build_parser().parse_args(["backfill", "in", "--table", "t"]).workers == 2


@pytest.mark.parametrize(("argv", "flag"), [
    (["generate", "--out", "{blocker}/out"], "--out"),
    (["generate", "--out", "{blocker}"], "--out"),
    (["backfill", "in", "--table", "t", "--report-dir", "{blocker}/reports"], "--report-dir"),
    (["score", "--requests", "r", "--model", "m:f", "--table", "t", "--out", "{blocker}/o"], "--out"),
    (["export", "--labels", "l", "--table", "t", "--out", "{blocker}/o"], "--out"),
])
def test_an_unwritable_output_directory_is_one_line_before_anything_runs(
    argv: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "a-file"  # a path under a regular file cannot be created, even by root
    blocker.write_text("")
    argv = [a.replace("{blocker}", str(blocker)) for a in argv]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"seqstore: error: cannot write to {flag} '{blocker}")
    assert line.endswith(("Not a directory", "it exists and is not a directory"))


def test_an_unwritable_output_directory_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SEQSTORE_GEN_OUT", str(tmp_path / "a-file" / "log"))
    assert main(["generate", "--users", "1", "--events", "1"]) == 2
    err = capsys.readouterr().err
    assert err == f"seqstore: error: cannot write to --out '{tmp_path}/a-file/log': Not a directory\n"


def test_check_writable_dir_creates_the_directory_and_leaves_it_empty(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    check_writable_dir(target, what="--out")
    assert target.is_dir() and not list(target.iterdir())
    check_writable_dir(target)  # existing and writable: fine
    with pytest.raises(SeqStoreError, match=r"cannot write to --out '/proc/seqstore-out': "):
        check_writable_dir(Path("/proc/seqstore-out"), what="--out")
