"""The ``filmless`` command as an operator types it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.security.keys import LocalIssuer


def _filmless(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
    env["FILMLESS_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_token_never_creates_a_key_the_server_does_not_use(tmp_path: Path):
    elsewhere = tmp_path / "not-the-servers"
    result = _filmless("token", "--hospital", "LOCAL", data_dir=elsewhere)
    assert result.returncode == 2 and result.stdout == ""
    assert "FILMLESS_DATA_DIR" in result.stderr
    assert not (elsewhere / "jwt-signing-key.pem").exists()


def test_token_signs_with_the_servers_key(tmp_path: Path):
    LocalIssuer(tmp_path / "jwt-signing-key.pem")  # as the server does when it starts
    result = _filmless("token", "--hospital", "LOCAL", "--role", "reader", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2


def test_hospital_add_list_and_remove(tmp_path: Path, clean_db: str):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
        env |= {"FILMLESS_DATA_DIR": str(tmp_path), "FILMLESS_DATABASE_URL": clean_db}
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "hospital", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert run("add", "CLINIC", "--name", "A clinic").returncode == 0
    assert "CLINIC\tA clinic" in run("list").stdout
    assert run("remove", "CLINIC").stdout == "removed CLINIC\n"
    assert "CLINIC" not in run("list").stdout
    assert run("remove", "CLINIC").returncode == 1
