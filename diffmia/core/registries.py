"""The project's registries, one list each: the built-in names with the module that defines each (imported only when
the name is first looked up, so listing names imports no torch), and the entry-point group through which other
installed packages add names (docs/guides/adding-an-attack.md, adding-a-defense.md).

A new built-in attack or defense is one file in attacks/ or defenses/ and one line here; a target kind is a class in
targets/kinds.py, a dataset a loader in targets/data.py.
"""

from __future__ import annotations

from typing import Any

from diffmia.core.registry import Registry

ATTACK_MODULES = {
    "clid": "diffmia.attacks.clid",
    "gsa": "diffmia.attacks.gsa",
    "lira": "diffmia.attacks.lira",
    "naive_loss": "diffmia.attacks.naive_loss",
    "noise_aggregation": "diffmia.attacks.noise_aggregation",
    "pia": "diffmia.attacks.pia",
    "pian": "diffmia.attacks.pia",
    "quantile_regression": "diffmia.attacks.quantile_regression",
    "rediffuse": "diffmia.attacks.rediffuse",
    "rmia": "diffmia.attacks.rmia",
    "sd_mia": "diffmia.attacks.sd_mia",
    "secmi": "diffmia.attacks.secmi",
    "sima": "diffmia.attacks.sima",
}

DEFENSE_MODULES = {
    "caption_randomisation": "diffmia.defenses.text",
    "dedup": "diffmia.defenses.dedup",
    "dp_sgd": "diffmia.defenses.dp_sgd",
    "dual_model": "diffmia.defenses.dual_model",
    "image_noise": "diffmia.defenses.noise",
    "input_perturbation": "diffmia.defenses.noise",
    "lora": "diffmia.defenses.lora",
    "public_base": "diffmia.defenses.public_base",
    "text_embedding_noise": "diffmia.defenses.text",
}

TARGET_MODULES = {
    "flux": "diffmia.targets.kinds",
    "stable-diffusion": "diffmia.targets.kinds",
    "stable-diffusion-3": "diffmia.targets.kinds",
    "stable-diffusion-xl": "diffmia.targets.kinds",
    "unet2d": "diffmia.targets.kinds",
    "unet2d-condition": "diffmia.targets.kinds",
}

DATASET_MODULES = {
    "cifar10": "diffmia.targets.data",
    "digits": "diffmia.targets.data",
    "hf": "diffmia.targets.tables",
    "imagefolder": "diffmia.targets.data",
    "mnist": "diffmia.targets.data",
    "npz": "diffmia.targets.data",
}

ATTACKS: Registry[Any] = Registry("attack", builtin=ATTACK_MODULES, group="diffmia.attacks")
DEFENSES: Registry[Any] = Registry("defense", builtin=DEFENSE_MODULES, group="diffmia.defenses")
TARGETS: Registry[Any] = Registry("target kind", builtin=TARGET_MODULES, group="diffmia.targets")
DATASETS: Registry[Any] = Registry("dataset", builtin=DATASET_MODULES, group="diffmia.datasets")
