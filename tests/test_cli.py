"""The ``pywatt`` command: arguments, env files, target loading, and every kind of target."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_e2e_asyncio import ROOT, Running

from pywatt_asyncio._apprunner import load_target
from pywatt_asyncio._cli import main
from pywatt_asyncio._config import parse_env_file


def test_parse_env_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\n\nA=1\nexport B = two words \nC=\"quoted = x\"\nD='single'\nE=\n")
    assert parse_env_file(str(env)) == {
        "A": "1",
        "B": "two words",
        "C": "quoted = x",
        "D": "single",
        "E": "",
    }
    (tmp_path / "bad").write_text("novalue\n")
    with pytest.raises(ValueError, match="bad:1"):
        parse_env_file(str(tmp_path / "bad"))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "x.py", "--http", "nohost"],
        ["run", "x.py", "--secret", "novalue"],
        ["serve", "x.py"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().out == ""


def test_missing_env_file_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "x.py", "--env-file", "/nonexistent/.env"]) == 2
    assert "nonexistent" in capsys.readouterr().err


def test_load_target_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg_target_mod.py").write_text("app = 'A'\nother = 'B'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_target(str(tmp_path / "pkg_target_mod.py")) == "A"
    assert load_target(str(tmp_path / "pkg_target_mod.py") + ":other") == "B"
    assert load_target("pkg_target_mod:other") == "B"
    (tmp_path / "none.py").write_text("x = 1\n")
    with pytest.raises(LookupError):
        load_target(str(tmp_path / "none.py"))


def test_unloadable_target_exits_1_with_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom at import')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pywatt_asyncio._cli", "run", str(bad), "--http", "127.0.0.1:0"],
        capture_output=True,
        timeout=30,
        cwd=str(ROOT),
    )
    assert proc.returncode == 1
    assert b"boom at import" in proc.stderr
    assert b"failed to start" in proc.stderr
    assert proc.stdout == b""


def test_apprunner_usage() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pywatt_asyncio._apprunner"], capture_output=True, timeout=30
    )
    assert proc.returncode == 2 and b"usage" in proc.stderr


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("examples/blocking.py", "/hello"),  # pywatt_sync.Module
        ("examples/fastapi_app.py", "/hello"),  # unchanged ASGI app
        ("examples/flask_app.py", "/hello"),  # unchanged WSGI app
        ("examples.flask_app:app", "/hello"),  # package.module:app form
    ],
)
def test_every_kind_of_target_serves_http(target: str, path: str) -> None:
    module, _, _attr = target.partition(":")
    file = ROOT / (module if module.endswith(".py") else module.replace(".", "/") + ".py")
    if not file.exists():
        pytest.skip(f"{file} not present")
    run = Running(target)
    try:
        r = httpx.get(run.url + path, timeout=10)
        assert r.status_code == 200, run.stderr
    finally:
        assert run.stop() == 0, run.stderr
    assert re.search(r"module stopped \(status 0\)", run.stderr)


def test_reload_dir_is_watched_as_well_as_the_default(tmp_path: Path) -> None:
    """``--reload-dir DIR``: "watch DIR too", for a target and for a command line alike (a
    command's own files were dropped from the watch list)."""
    from pywatt_asyncio._cli import _parser, _specs

    script = tmp_path / "tool.py"
    script.write_text("")
    extra = str(tmp_path / "extra")
    args = _parser().parse_args(["run", "--reload-dir", extra, str(script)])
    (target,) = _specs(args, None, [])
    assert target.watch == (str(tmp_path), extra)
    args = _parser().parse_args(["run", "--reload-dir", extra])
    (command,) = _specs(args, ["python3", str(script)], [])
    assert command.watch == (str(script), extra)
