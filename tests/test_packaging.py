"""The wheel matches the layout: every folder of the package is listed, every data file ships."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
# Documentation beside the data, read in the repository, not by the running bus.
_NOT_SHIPPED = {"README.md"}


def _folders() -> dict[str, Path]:
    """Import name -> folder, for every folder under the mapped top-level folders."""
    found = {}
    for name, top in _SETUPTOOLS["package-dir"].items():
        for folder in [ROOT / top, *sorted((ROOT / top).rglob("*"))]:
            if folder.is_dir() and folder.name != "__pycache__":
                relative = folder.relative_to(ROOT / top).parts
                found[".".join((name, *relative))] = folder
    return found


def test_every_folder_is_a_listed_package() -> None:
    assert sorted(_SETUPTOOLS["packages"]) == sorted(_folders())


def test_every_data_file_matches_a_package_data_pattern() -> None:
    patterns = _SETUPTOOLS["package-data"]["*"]
    unshipped = [
        str(path.relative_to(ROOT))
        for folder in _folders().values()
        for path in folder.iterdir()
        if path.is_file()
        and path.suffix not in {".py", ".pyc"}
        and path.name not in _NOT_SHIPPED
        and not any(fnmatch.fnmatch(path.name, p) for p in patterns)
    ]
    assert unshipped == []
