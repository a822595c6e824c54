"""The registries: one list of names each, built-ins imported lazily, plugins through entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest

from diffmia.attacks import ATTACKS, BUILTIN
from diffmia.core.registry import PluginError, Registry, UnknownNameError
from tests.plugins import install_plugin

PLUGIN = """
NAME = "{name}"


class Thing:
    name = "{declared}"
"""


def test_listing_names_imports_no_torch():
    code = (
        "import sys; from diffmia.attacks import ATTACKS; from diffmia.defenses import DEFENSES; import diffmia.cli; "
        "names = ATTACKS.names() + DEFENSES.names(); assert 'torch' not in sys.modules, 'torch imported'; print(len(names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    help_ = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "diffmia", "attack", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_.returncode == 0 and "naive_loss" in help_.stdout
    imported = {line.split("|")[-1].strip() for line in help_.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported


def test_every_builtin_module_registers_its_names():
    for name, module in BUILTIN.items():
        cls = ATTACKS.get(name)
        assert cls.name == name and cls.__module__ == module


def test_plugins_join_the_list_and_errors_name_them(tmp_path, monkeypatch):
    reg = Registry("widget", builtin={}, group="diffmia.test_widgets")
    undo = install_plugin(
        tmp_path,
        monkeypatch,
        "widget-plugins",
        {
            "wplug/good.py": PLUGIN.format(name="sprocket", declared="sprocket"),
            "wplug/misnamed.py": PLUGIN.format(name="gear", declared="cog"),
            "wplug/broken.py": "raise ImportError('needs a package that is not installed')\n",
        },
        {
            "diffmia.test_widgets": {
                "sprocket": "wplug.good:Thing",
                "gear": "wplug.misnamed:Thing",
                "lever": "wplug.broken:X",
            }
        },
    )
    try:
        reg.refresh()
        assert reg.names() == ["gear", "lever", "sprocket"]
        assert reg.get("sprocket").name == "sprocket"
        with pytest.raises(UnknownNameError, match="did you mean 'sprocket'"):
            reg.get("sprocke")
        with pytest.raises(PluginError, match="'gear' .* is named 'cog'"):
            reg.get("gear")
        with pytest.raises(PluginError, match="'lever' \\(wplug.broken:X.*ImportError: needs a package"):
            reg.get("lever")
    finally:
        undo()


def test_a_plugin_cannot_take_a_builtin_name(tmp_path, monkeypatch, caplog):
    undo = install_plugin(
        tmp_path,
        monkeypatch,
        "shadow-plugin",
        {"shadow/pia.py": PLUGIN.format(name="pia", declared="pia")},
        {"diffmia.attacks": {"pia": "shadow.pia:Thing"}},
    )
    try:
        assert ATTACKS.names().count("pia") == 1
        assert ATTACKS.get("pia").__module__ == "diffmia.attacks.pia"
        assert "ignoring the attack plugin 'pia'" in caplog.text
    finally:
        undo()


def test_config_choices_are_the_registries_names(tmp_path):
    """A recipe's model.kind and data.dataset accept exactly the registered names, and every kind and dataset
    registers under the name the registry lists."""
    from diffmia.core.config import ConfigError, load_config
    from diffmia.core.registries import DATASETS, TARGETS
    from tests.conftest import TINY

    kinds = TARGETS.load_all()
    assert all(cls.name == name for name, cls in kinds.items())
    assert len({cls.pipeline_class for cls in kinds.values()}) == len(kinds)  # a saved folder names one kind
    assert set(DATASETS.load_all()) == set(DATASETS.names())
    assert load_config(TINY, ["model.kind=unet2d-condition"]).model.kind == "unet2d-condition"
    for key, bad, close in [("model.kind", "unet2dd", "unet2d"), ("data.dataset", "mnst", "mnist")]:
        with pytest.raises(ConfigError, match=f"{key}: unknown .* '{bad}' \\(did you mean '{close}'\\?\\)"):
            load_config(TINY, [f"{key}={bad}"])


def test_a_dataset_plugin_is_a_recipe_choice(tmp_path, monkeypatch):
    from diffmia.core.config import load_config
    from diffmia.targets.data import load_dataset
    from tests.conftest import TINY

    source = (
        "import numpy as np\nfrom diffmia.targets.data import ImageSet\n\n\n"
        "def squares(cfg):\n"
        "    rng = np.random.default_rng(0)\n"
        "    pixels = rng.integers(0, 256, size=(300, 8, 8, 1), dtype=np.uint8)\n"
        "    return ImageSet('squares', pixels, [str(i) for i in range(300)], ['a square'] * 300)\n"
    )
    undo = install_plugin(
        tmp_path,
        monkeypatch,
        "squares-data",
        {"sqdata/loader.py": source},
        {"diffmia.datasets": {"squares": "sqdata.loader:squares"}},
    )
    try:
        cfg = load_config(TINY, ["data.dataset=squares"])
        assert load_dataset(cfg.data).pixels.shape == (300, 8, 8, 1)
    finally:
        undo()
