"""Write constraints.txt: the exact versions installed here of diffmia's dependency closure (with the test and docs extras),
so that the README's two commands (`pip install ... -c constraints.txt`) give a newcomer the versions its figures came
from. Run after changing a dependency: python scripts/lock_constraints.py"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def closure(name: str, extras: tuple[str, ...] = ()) -> dict[str, str]:
    seen: dict[str, str] = {}
    todo = [(name, extras)]
    while todo:
        pkg, want = todo.pop()
        try:
            dist = metadata.distribution(pkg)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency not installed here
        key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if key in seen and not want:
            continue
        seen[key] = dist.version
        for req in dist.requires or []:
            spec, _, marker = req.partition(";")
            if "extra ==" in marker and not any(
                f'extra == "{e}"' in marker or f"extra == '{e}'" in marker for e in want
            ):
                continue
            match = re.match(r"\s*([A-Za-z0-9_.-]+)(?:\[([^\]]+)\])?", spec)
            todo.append((match.group(1), tuple(e.strip() for e in (match.group(2) or "").split(",") if e.strip())))
    return seen


def main() -> None:
    versions = closure("diffmia", ("test", "docs"))
    for build_only in ("diffmia", "setuptools", "pip", "wheel"):
        versions.pop(build_only, None)
    lines = [f"{name}=={version.split('+')[0]}" for name, version in sorted(versions.items())]
    text = (
        "# Exact versions behind the README's figures (python scripts/lock_constraints.py writes this file).\n"
        "# torch is the CPU build: `pip install torch==2.13.0` picks the local +cpu wheel here.\n"
        + "\n".join(lines)
        + "\n"
    )
    (ROOT / "constraints.txt").write_text(text)
    print(f"wrote {ROOT / 'constraints.txt'}: {len(lines)} packages")


if __name__ == "__main__":
    main()
