"""`proglog --help`, `--version` and `serve`'s refusals, run as subprocesses.

What is checked is what a user sees in a narrow terminal or a pipe.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from pyproglog.cli import app
from pyproglog.config import Settings
from tests.cli.test_cli import assert_one_line_error, proglog

COMMANDS = [
    [],
    ["serve"],
    ["produce"],
    ["consume"],
    ["servers"],
    ["info"],
    ["certs"],
    ["certs", "init"],
    ["certs", "client"],
    ["certs", "cluster-key"],
]


def flag_names(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "proglog")
@pytest.mark.parametrize("columns", ["40", "60", "200"])
def test_help_shows_every_flag_whole_at_any_width(command: list[str], columns: str) -> None:
    # stdout is a pipe here, as with `proglog serve --help | less`.
    proc = proglog(*command, "--help", env={"COLUMNS": columns})
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    assert declared_flags(command) <= flag_names(proc.stdout)


def declared_flags(command: list[str]) -> set[str]:
    """Every long flag the command declares, as its click command knows them."""
    # Duck-typed: typer ships its own copy of click.
    cmd: Any = typer.main.get_command(app)
    for name in command:
        cmd = cmd.get_command(None, name)
        assert cmd is not None, name
    names = {"--help"}
    for param in cmd.params:
        if getattr(param, "param_type_name", "") == "option" and not param.hidden:
            names |= {o for o in [*param.opts, *param.secondary_opts] if o.startswith("--")}
    return names


def test_serve_help_names_every_setting_with_its_default() -> None:
    text = proglog("serve", "--help", env={"COLUMNS": "60"}).stdout
    # Every setting is a flag, each whole, and each says what it is when not given.
    expected = {"--" + name.replace("_", "-") for name in Settings.model_fields}
    assert expected - {"--bootstrap", "--metrics"} <= flag_names(text)
    assert "--no-bootstrap" in text and "--no-metrics" in text
    options = text.split("Options:", 1)[1]
    entries = re.split(r"\n  (?=--)", options)[1:]
    assert len(entries) == len(Settings.model_fields) + 2  # and --config-file, --help
    for entry in entries:
        if not entry.startswith(("--help", "--config-file")):
            assert "[default: " in " ".join(entry.split()), entry
    flat = " ".join(text.split()).replace("- ", "-")  # click also wraps after a hyphen
    for shown in ["default: ./proglog-data", "default: 8400", "default: interval", "1 MiB"]:
        assert shown in flat


def test_client_help_shows_defaults() -> None:
    flat = " ".join(proglog("consume", "--help", env={"COLUMNS": "60"}).stdout.split())
    for shown in ["default: 127.0.0.1:8400", "default: 5.0", "default: 0", "default: no limit"]:
        assert shown in flat


def test_version() -> None:
    from importlib.metadata import version

    proc = proglog("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"proglog {version('pyproglog')}\n"


def test_empty_data_dir_is_refused(tmp_path: Path) -> None:
    ports = ["--rpc-port", "0", "--http-addr", ""]
    for args, env in [(["--data-dir", ""], {}), ([], {"PROGLOG_DATA_DIR": ""})]:
        proc = proglog("serve", *args, *ports, env=env, cwd=tmp_path)
        line = assert_one_line_error(proc, code=2)
        assert line.startswith("proglog: --data-dir must not be empty"), line
    assert list(tmp_path.iterdir()) == []  # nothing written in the current directory


def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_bytes(b"keep me")
    line = assert_one_line_error(proglog("serve", "--data-dir", str(afile)), code=2)
    assert line == f"proglog: --data-dir {afile} is not a directory"
    line = assert_one_line_error(proglog("serve", "--data-dir", str(afile / "sub")), code=2)
    assert line == f"proglog: --data-dir {afile / 'sub'}: {afile} is not a directory"
    assert afile.read_bytes() == b"keep me"
