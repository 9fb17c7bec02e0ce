"""Where dwsim keeps its state (issue 23, item 7): `.dwsim/` in a clone, as always; the user's
data folder when dwsim runs from an installed package, which has no checkout to write into."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import platformdirs
import pytest

from services.common.settings import (
    PROJECT_ROOT,
    Settings,
    default_home,
    is_clone,
    results_folder,
)


def _clone(tmp_path: Path, name: str = "dwsim") -> Path:
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n')
    return root


def test_this_checkout_is_a_clone_and_keeps_its_dwsim_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DWSIM_HOME", raising=False)
    assert is_clone()
    assert Settings().home == PROJECT_ROOT / ".dwsim"


def test_a_clone_keeps_dwsim_beside_its_pyproject(tmp_path: Path) -> None:
    root = _clone(tmp_path)
    assert default_home(root) == root / ".dwsim"
    assert results_folder("bench", default_home(root), root) == root / "bench" / "results"


def test_without_a_pyproject_the_home_is_the_user_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    site_packages = tmp_path / "site-packages"
    site_packages.mkdir()
    home = default_home(site_packages)
    assert home == platformdirs.user_data_path("dwsim", appauthor=False)
    if sys.platform.startswith("linux"):
        assert home == tmp_path / "data" / "dwsim"
    assert results_folder("bench", home, site_packages) == home / "bench" / "results"


def test_another_projects_pyproject_does_not_make_a_clone(tmp_path: Path) -> None:
    root = _clone(tmp_path, name="someone-elses-app")
    assert not is_clone(root)
    assert default_home(root) != root / ".dwsim"


def test_dwsim_home_still_wins_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWSIM_HOME", str(tmp_path / "elsewhere"))
    assert Settings().home == tmp_path / "elsewhere"


def test_an_installed_copy_of_the_package_keeps_its_state_in_the_user_data_folder(
    tmp_path: Path,
) -> None:
    """The package copied where pip would put it (no pyproject.toml beside it), imported by a
    fresh interpreter: its home is the user's data folder, never inside site-packages."""
    site_packages = tmp_path / "lib" / "site-packages"
    shutil.copytree(
        PROJECT_ROOT / "services",
        site_packages / "services",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWSIM_")}
    env.update(PYTHONPATH=str(site_packages), XDG_DATA_HOME=str(tmp_path / "data"))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import services.common.settings as s; print(s.__file__); print(s.Settings().home)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split("\n")
    assert Path(out[0]).is_relative_to(site_packages)  # the copy, not this checkout
    expected = (
        platformdirs.user_data_path("dwsim", appauthor=False)
        if not sys.platform.startswith("linux")
        else tmp_path / "data" / "dwsim"
    )
    assert Path(out[1]) == expected
