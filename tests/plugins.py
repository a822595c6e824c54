"""Install a small plugin package for one test: its modules and a dist-info folder with entry points, on sys.path.

importlib.metadata finds a distribution through any `NAME-VERSION.dist-info` folder on sys.path, exactly as it finds
one pip installed, so the registries see the plugin's entry points as they would after `pip install`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def install_plugin(
    root: Path, monkeypatch, dist: str, modules: dict[str, str], entry_points: dict[str, dict[str, str]]
):
    """Write `modules` ({"pkg/mod.py": source}) and `entry_points` ({group: {name: "pkg.mod:Obj"}}) under `root`,
    put `root` on sys.path (monkeypatch undoes it) and make every registry look for plugins again."""
    from diffmia.core.registries import ATTACKS, DATASETS, DEFENSES, TARGETS

    for rel, source in modules.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(source)
    info = root / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in names.items()) for group, names in entry_points.items()
        )
    )
    packages = {rel.split("/")[0] for rel in modules}
    monkeypatch.syspath_prepend(str(root))

    def forget():
        for name in list(sys.modules):
            if name.split(".")[0] in packages:
                del sys.modules[name]
        for registry in (ATTACKS, DEFENSES, TARGETS, DATASETS):
            registry.refresh()

    forget()
    return forget  # call it when the test ends (the registries then look again, without the plugin)
