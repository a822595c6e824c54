"""The registries: one list of names each, built-ins imported lazily, plugins through entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest

from diffmia.attacks import ATTACKS, BUILTIN
from diffmia.registry import PluginError, Registry, UnknownNameError
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
