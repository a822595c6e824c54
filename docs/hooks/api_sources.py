"""mkdocs hook: lay the package out as it installs, for mkdocstrings to read statically.

`pyproject.toml` installs the top-level folders attacks/, defenses/, targets/ and evaluate/ as diffmia.attacks, ...
(`[tool.setuptools.package-dir]`). griffe reads source folders, not install maps, so this hook builds
`.api-src/diffmia/`: a copy of the Python files of diffmia/ with each mapped subpackage's folder inside it.
Nothing is imported.
"""

from __future__ import annotations

import shutil
from pathlib import Path

try:  # Python 3.11+
    import tomllib
except ImportError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".api-src"


def lay_out() -> None:
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    if OUT.exists():
        shutil.rmtree(OUT)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name, folder in sorted(package_dir.items()):  # "diffmia" first, then its subpackages inside it
        shutil.copytree(ROOT / folder, OUT.joinpath(*name.split(".")), ignore=skip, dirs_exist_ok=True)


lay_out()  # when mkdocs loads this hook, before mkdocstrings resolves its search paths (a fresh clone has none)
