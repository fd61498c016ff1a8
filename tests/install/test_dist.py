"""``python -m build`` makes a wheel and an sdist, with the SPDX licence of PEP 639 and no deprecation warning, and
the wheel installs on its own in a fresh virtual environment (what ``pipx install`` does) and runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

from sisdaemon import __version__

ROOT = Path(__file__).resolve().parents[2]
LEFT_OUT = shutil.ignore_patterns(".venv", ".git", "dist", "build", "*.egg-info", "__pycache__", "sisdaemon-demo")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build from a copy of the tree, so the build leaves nothing in the work tree."""
    pytest.importorskip("build", reason="the build package is a test extra: ./dev test installs it")
    source = tmp_path_factory.mktemp("source") / "sisdaemon"
    shutil.copytree(ROOT, source, ignore=LEFT_OUT)
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deprecated" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    return out


@pytest.mark.slow
def test_python_m_build_makes_a_wheel_and_an_sdist_with_the_spdx_licence(dist: Path) -> None:
    wheel = dist / f"sisdaemon-{__version__}-py3-none-any.whl"
    sdist = dist / f"sisdaemon-{__version__}.tar.gz"
    assert sorted(path.name for path in dist.iterdir()) == sorted([wheel.name, sdist.name])
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"sisdaemon-{__version__}.dist-info/METADATA").decode()
        entry_points = archive.read(f"sisdaemon-{__version__}.dist-info/entry_points.txt").decode()
    assert "License-Expression: AGPL-3.0-or-later" in metadata.splitlines()
    assert "sisdaemon = sisdaemon.cli:entry_point" in entry_points
    assert {"sisdaemon/py.typed", "sisdaemon/cli.py", "sisdaemon/sandbox/app.py"} <= set(names)
    assert not any(name.startswith("tests/") for name in names)
    with tarfile.open(sdist) as archive:
        members = {Path(name).relative_to(f"sisdaemon-{__version__}").as_posix() for name in archive.getnames()[1:]}
    assert {"pyproject.toml", "README.md", "sisdaemon/cli.py"} <= members


@pytest.mark.slow
def test_the_wheel_installs_alone_in_a_fresh_virtualenv_and_runs(dist: Path, tmp_path: Path) -> None:
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)], check=True, capture_output=True)
    result = subprocess.run([tmp_path / "venv" / "bin" / "sisdaemon", "--version"], capture_output=True, text=True)
    assert result.stdout.strip() == f"sisdaemon {__version__}"
