"""Atomic file and folder writes, JSON/YAML helpers and JSON-lines logs.

Every file diffmia writes goes through here: it is written under a temporary name in the same folder and then
renamed into place, so a run killed mid-write never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, private: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`. `private`: the file holds member
    data (images, or what was derived from them) and stays owner-only (0600) whatever the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600: a private file keeps it; others respect the umask, so others can read the report
        os.chmod(tmp_path, 0o600 if private else _mode(0o666))
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _mode(base: int) -> int:
    """`base` less the process umask (read without changing it for long)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return base & ~mask


def write_text(path: str | os.PathLike, text: str, private: bool = False) -> None:
    with atomic_path(path, private) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes, private: bool = False) -> None:
    with atomic_path(path, private) as tmp:
        tmp.write_bytes(data)


def private_dir(path: str | os.PathLike) -> Path:
    """A folder only its owner can enter (0700), created if missing: for member data and models trained on it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would read as a formula (it starts with = + - @ tab or CR) gets a leading
    apostrophe (OWASP's CSV-injection advice); anything else is returned as it is."""
    if isinstance(value, str) and value.startswith(SPREADSHEET_TRIGGERS):
        return "'" + value
    return value


def csv_text(frame) -> str:
    """A pandas frame as CSV text with every text cell made spreadsheet_safe."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or str(safe[column].dtype).startswith("str"):
            safe[column] = safe[column].map(spreadsheet_safe)
    return safe.to_csv(index=False)


def write_json(path: str | os.PathLike, obj: Any, private: bool = False) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", private)


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (the old one is removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, _mode(0o777))  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


class JsonLinesLog:
    """Append-only JSON-lines log (one record per line, flushed on every write)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")

    def truncate_after(self, key: str, value: float) -> None:
        """Drop records whose `key` exceeds `value` (used on resume, so replayed steps are not logged twice)."""
        if not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get(key, -1) <= value
        ]
        write_text(self.path, "".join(line + "\n" for line in kept))
