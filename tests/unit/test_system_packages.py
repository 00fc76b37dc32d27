"""The Debian package check `make run` and `make test` start with (scripts/system-packages.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "system-packages.sh"
MISSING = "kestrel-no-such-package"

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not Debian")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _installed(pkg: str) -> bool:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
    )
    return out.stdout == "install ok installed"


def _run(*args: str, env: dict | None = None, user: str | None = None):
    cmd = ["sh", str(SCRIPT), *args]
    if user:
        cmd = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups", *cmd]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KESTREL_SYSTEM")}
    full_env.pop("KESTREL_SKIP_SYSTEM_PACKAGES", None)
    full_env.update(env or {})
    return subprocess.run(
        cmd, capture_output=True, text=True, env=full_env, timeout=60, check=False
    )


def _fake_apt(tmp_path: Path) -> Path:
    """An apt-get stand-in that records its arguments and DEBIAN_FRONTEND."""
    log = tmp_path / "apt.log"
    fake = tmp_path / "apt-get"
    fake.write_text(f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {log}\n')
    fake.chmod(0o755)
    return fake


@needs_dpkg
def test_nothing_missing_is_silent_success():
    pkg = next((p for p in ("dpkg", "coreutils", "python3-venv") if _installed(p)), None)
    if pkg is None:
        pytest.skip("no known package installed")
    out = _run(pkg)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""


@needs_dpkg
@needs_root
def test_not_root_stops_with_the_exact_command():
    """As another user, a missing package stops the target with the sudo command to run."""
    out = _run("dpkg", env={"KESTREL_SYSTEM_PACKAGES_EXTRA": MISSING}, user="65534")
    assert out.returncode == 1
    assert (
        f"sudo apt-get update && sudo apt-get install -y --no-install-recommends {MISSING}"
        in out.stderr
    )
    assert "dpkg " not in out.stderr.split("sudo", 1)[1]  # only the missing one is named


@needs_dpkg
@needs_root
def test_root_installs_only_what_is_missing(tmp_path):
    fake = _fake_apt(tmp_path)
    out = _run("dpkg", env={"KESTREL_SYSTEM_PACKAGES_EXTRA": MISSING, "APT_GET": str(fake)})
    assert out.returncode == 0, out.stderr
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert calls == [
        "noninteractive update",
        f"noninteractive install -y --no-install-recommends {MISSING}",
    ]


@needs_dpkg
@needs_root
def test_root_install_failure_fails(tmp_path):
    out = _run(MISSING, env={"APT_GET": "false"})
    assert out.returncode != 0


def test_skip_switch(tmp_path):
    out = _run(MISSING, env={"KESTREL_SKIP_SYSTEM_PACKAGES": "1"})
    assert out.returncode == 0


# --------------------------------------------------------------------------- Makefile


def _fake_venv(tmp_path: Path, pytest_rc: int) -> tuple[Path, Path]:
    """A stand-in .venv whose ruff passes and whose python (pytest) exits ``pytest_rc``."""
    venv = tmp_path / "venv"
    bin_dir = venv / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    for name, rc in (("ruff", 0), ("python", pytest_rc)):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexit {rc}\n')
        tool.chmod(0o755)
    (venv / ".runtime").touch()
    (venv / ".dev").touch()
    return venv, log


def _make(target: str, venv: Path, env: dict):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KESTREL_SYSTEM")}
    full_env.update(env)
    return subprocess.run(
        ["make", "-C", str(ROOT), target, f"VENV={venv}", "PYTEST_ARGS=-k nothing"],
        capture_output=True, text=True, env=full_env, timeout=60, check=False,
    )  # fmt: skip


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


@needs_make
@pytest.mark.parametrize(("pytest_rc", "make_ok"), [(0, True), (5, False), (1, False)])
def test_make_test_fails_when_pytest_collects_nothing(tmp_path, pytest_rc, make_ok):
    venv, log = _fake_venv(tmp_path, pytest_rc)
    out = _make("test", venv, {"KESTREL_SKIP_SYSTEM_PACKAGES": "1"})
    assert (out.returncode == 0) == make_ok, out.stderr
    assert "python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -k nothing" in (
        log.read_text()
    )
    if pytest_rc == 5:
        assert "collected no tests" in out.stderr


@needs_make
@needs_dpkg
@needs_root
def test_make_test_checks_packages_before_anything_else(tmp_path):
    venv, log = _fake_venv(tmp_path, 0)
    out = _make("test", venv, {"KESTREL_SYSTEM_PACKAGES_EXTRA": MISSING, "APT_GET": "false"})
    assert out.returncode != 0
    assert not log.exists()  # neither ruff nor pytest ran


@needs_make
@pytest.mark.parametrize(
    ("target", "packages"),
    [
        ("system-run", ["python3-venv"]),
        (
            "system",
            ["python3-venv", "chromium", "fonts-dejavu-core", "dataset-fashion-mnist", "nodejs"]
            + ([] if shutil.which("npm") else ["npm"])  # NodeSource's nodejs brings its own npm
            + ["postgresql"],
        ),
    ],
)
def test_targets_name_their_packages(target, packages):
    out = subprocess.run(
        ["make", "-C", str(ROOT), "-n", target], capture_output=True, text=True, check=True
    )
    line = next(li for li in out.stdout.splitlines() if "system-packages.sh" in li)
    assert line.split("system-packages.sh", 1)[1].split() == packages


@needs_make
@pytest.mark.parametrize(("target", "check"), [("run", "system-run"), ("test", "system")])
def test_run_and_test_start_with_the_check(target, check):
    out = subprocess.run(
        ["make", "-C", str(ROOT), "-n", target], capture_output=True, text=True, check=True
    )
    first = next(line for line in out.stdout.splitlines() if not line.startswith("make"))
    assert "scripts/system-packages.sh" in first
    expected = subprocess.run(
        ["make", "-C", str(ROOT), "-n", check], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert any(line == first for line in expected)


def test_ci_only_calls_make_test():
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "make test"]
