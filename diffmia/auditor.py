"""`diffmia audit`: membership inference against a model trained elsewhere. Nothing is retrained.

The model is a local diffusers folder (DDPMPipeline, diffmia's text pipeline, StableDiffusionPipeline); the members
and non-members are image folders (captions in metadata.jsonl for text models) or CSV lists of paths. Each set is cut
into calibration and test halves by a seeded hash of each image's pixels, so an image keeps its half when a folder
grows. Images of the wrong size or channels are refused by name; exact and near duplicates across the two sets are
refused with the pairs listed (a duplicated image is both a member and a non-member: no attack can be scored on it).

Every attack the access level allows runs through the same runner as `diffmia run` and writes the same score files,
results.csv/json, exposure.csv and report.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffmia.core.config import ConfigError, dump_config
from diffmia.core.io import private_dir
from diffmia.targets.adapters import apply_adapter  # noqa: F401 - also diffmia.auditor.apply_adapter
from diffmia.targets.data import IMAGE_SUFFIXES, DataError, ImageSet, open_image

logger = logging.getLogger(__name__)

ACCESS_LEVELS = ("gray-box", "black-box", "white-box")


@dataclass
class ImageList:
    paths: list[Path]
    captions: list[str]
    records: list[dict] | None = None  # a table's undecoded images (targets/tables.py): paths are then TABLE:ROW


def _confined(root: Path, name: str, where: str, allow_outside: bool) -> Path:
    """`root / name` resolved; a path that leaves `root` (../, an absolute path, a symlink out) is refused unless
    the user allowed lists that point elsewhere."""
    file = (root / name).resolve()
    if not allow_outside and root.resolve() not in file.parents:
        raise DataError(
            f"{where}: {name[:120]!r} points outside {root} (pass --allow-outside-paths for a list that "
            f"names files elsewhere)"
        )
    return file


def list_images(path: str | Path, role: str, allow_outside: bool = False) -> ImageList:
    """A folder (metadata.jsonl with file_name and text where present, else every image file, sorted) or a CSV
    with a `path` column (and optional `text`). Listed files must lie inside the folder (the CSV's folder for a CSV)
    unless `allow_outside`; metadata.jsonl is read line by line."""
    from diffmia.targets.tables import is_table, read_table

    if is_table(path):  # a datasets folder or parquet files: images and captions from their columns
        rows = read_table(path)
        return ImageList([Path(s) for s in rows.sources], rows.captions, rows.records)
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or "path" not in rows[0]:
            raise DataError(f"--{role} {path}: a CSV list needs a 'path' column (and optionally 'text')")
        paths = [_confined(path.parent, str(r["path"]), f"{path}:{i + 2}", allow_outside) for i, r in enumerate(rows)]
        return ImageList(paths, [(r.get("text") or "").strip() for r in rows])
    if not path.is_dir():
        raise DataError(f"--{role} {path}: not found (give an image folder or a CSV list of paths)")
    meta = path / "metadata.jsonl"
    if meta.is_file():
        paths, captions = [], []
        with open(meta, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    name = str(record["file_name"])
                    captions.append(str(record.get("text", "")).strip())
                except (ValueError, KeyError, TypeError):
                    raise DataError(f"{meta}:{lineno}: needs a JSON object with file_name (and text)") from None
                paths.append(_confined(path, name, f"{meta}:{lineno}", False))
        return ImageList(paths, captions)
    paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return ImageList(paths, [""] * len(paths))


def read_images(listed: ImageList, shape: tuple[int, int, int], role: str) -> np.ndarray:
    """uint8 (N, H, W, C) at exactly the model's image shape; anything else is refused by file name."""
    channels, height, width = shape
    want = {1: "L", 3: "RGB"}.get(channels)
    if want is None:
        raise ConfigError(f"the model takes {channels}-channel images; diffmia audit reads 1 (L) or 3 (RGB)")
    if not listed.paths:
        raise DataError(f"--{role}: no images found")
    from diffmia.targets.tables import open_record

    out = np.empty((len(listed.paths), height, width, channels), dtype=np.uint8)
    for i, file in enumerate(listed.paths):
        if listed.records is None and not file.is_file():
            raise DataError(f"{file}: image not found (listed in --{role})")
        opened = open_record(listed.records[i], str(file)) if listed.records is not None else open_image(file)
        with opened as img:
            if img.size != (width, height):
                raise DataError(f"{file}: {img.size[0]}x{img.size[1]} pixels; the model takes {width}x{height}")
            mode = img.mode
            if mode == "I;16" or mode == "I":
                raise DataError(f"{file}: 16/32-bit image; save it as 8-bit {want}")
            if (want == "L" and mode not in ("L", "1")) or (want == "RGB" and mode not in ("RGB", "L", "P")):
                raise DataError(f"{file}: {mode} image; the model takes {channels}-channel ({want}) images")
            arr = np.asarray(img.convert(want))
        out[i] = arr.reshape(height, width, channels)
    return out


def pixel_sha256(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def half_of(sha: str, seed: int, calibration_fraction: float) -> str:
    """calibration or test, from a seeded hash of the image's pixels (stable when the folder grows)."""
    u = int(hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest()[:15], 16) / 16**15
    return "calibration" if u < calibration_fraction else "test"


def duplicates_across(a: np.ndarray, b: np.ndarray, tolerance: float) -> list[tuple[int, int, float]]:
    """Pairs (i in a, j in b) whose images are equal or nearly so: RMS pixel difference (on a 0-1 scale, at a 16x16
    grayscale thumbnail) at most `tolerance`. 0 finds exact copies only."""
    from sklearn.neighbors import NearestNeighbors

    from diffmia.evaluate.exposure import thumbnails

    ta, tb = thumbnails(a), thumbnails(b)
    dims = ta.shape[1]
    exact = {pixel_sha256(x): i for i, x in enumerate(a)}
    pairs = {(exact[pixel_sha256(y)], j): 0.0 for j, y in enumerate(b) if pixel_sha256(y) in exact}
    if tolerance > 0:
        nn = NearestNeighbors(radius=tolerance * np.sqrt(dims)).fit(ta)
        dist, idx = nn.radius_neighbors(tb)
        for j, (ds, ids) in enumerate(zip(dist, idx)):
            for d, i in zip(ds, ids):
                pairs.setdefault((int(i), j), float(d / np.sqrt(dims)))
    return sorted((i, j, d) for (i, j), d in pairs.items())


def build_audit_set(
    model_shape,
    members: ImageList,
    nonmembers: ImageList,
    public: ImageList | None,
    seed: int,
    calibration_fraction: float,
    near_tolerance: float,
    need_captions: bool,
):
    from diffmia.targets.manifest import Entry, SplitManifest

    pm = read_images(members, model_shape, "members")
    pn = read_images(nonmembers, model_shape, "nonmembers")
    pp = read_images(public, model_shape, "public") if public else np.zeros((0, *pm.shape[1:]), np.uint8)
    pairs = duplicates_across(pm, pn, near_tolerance)
    if pairs:
        listed = "; ".join(f"{members.paths[i]} ~ {nonmembers.paths[j]} (RMS {d:.3f})" for i, j, d in pairs[:10])
        raise DataError(
            f"{len(pairs)} image(s) of --members are (near) duplicates of --nonmembers images, so they are "
            f"both a member and a non-member: remove one of each pair, or lower --near-duplicates: {listed}"
            + (" ..." if len(pairs) > 10 else "")
        )
    captions = members.captions + nonmembers.captions + (public.captions if public else [])
    if need_captions:
        missing = [str(p) for p, c in zip(members.paths + nonmembers.paths, captions) if not c]
        if missing:
            raise DataError(
                f"the model is text-conditioned: every image needs a caption (metadata.jsonl 'text' or a "
                f"CSV 'text' column); none for {missing[:5]}"
            )
    pixels = np.concatenate([pm, pn, pp])
    sources = [str(p) for p in members.paths + nonmembers.paths + (public.paths if public else [])]
    images = ImageSet("audit", pixels, sources, captions, max_value=255)
    hashes = images.hashes()  # as in every manifest (reference models verify their split against them)
    pixel_shas = [pixel_sha256(x) for x in pixels]

    def entries(start: int, count: int, halves: bool) -> list[Entry]:
        return [
            Entry(i, sources[i], hashes[i], half_of(pixel_shas[i], seed, calibration_fraction) if halves else None)
            for i in range(start, start + count)
        ]

    manifest = SplitManifest(
        dataset={
            "name": "audit",
            "members": str(members.paths[0].parent),
            "nonmembers": str(nonmembers.paths[0].parent),
        },
        seed=seed,
        members=entries(0, len(pm), True),
        nonmembers=entries(len(pm), len(pn), True),
        public=entries(len(pm) + len(pn), len(pp), False),
        extra={"external": True, "near_duplicate_tolerance": near_tolerance},
    )
    for role in ("members", "nonmembers"):
        halves = {e.half for e in getattr(manifest, role)}
        if halves != {"calibration", "test"}:
            raise DataError(
                f"--{role}: {len(getattr(manifest, role))} image(s) fill only the {', '.join(halves)} half; "
                f"an audit needs images in both the calibration and the test half (give more images)"
            )
    return images, manifest


def plan_attacks(
    target, access: str, has_public: bool, has_recipe: bool, members: int = 0, public_count: int = 0
) -> tuple[list[tuple[str, dict]], list[tuple[str, str]]]:
    """(attacks to run with their parameters, attacks skipped with the reason), by access level; reference-model
    attacks need the recipe (and, offline, at least as many public images as members)."""
    from diffmia.attacks import ATTACKS

    run, skipped = [], []
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        params: dict = {}
        if cls.needs_captions and not target.conditional:
            continue  # not applicable to an unconditional model: not a gap in the audit
        if cls.needs_references and not has_recipe:
            skipped.append(
                (
                    name,
                    "needs reference models: give --recipe CONFIG (the training recipe, retrained on "
                    "subsets of the audited images) or --train-command 'YOUR TRAINING COMMAND'",
                )
            )
            continue
        if getattr(target, "flow_matching", False) and cls.access != "black-box":
            from diffmia.targets.flow import GRAY_BOX_REASON

            skipped.append((name, GRAY_BOX_REASON))
            continue
        if cls.access == "white-box" and access != "white-box":
            skipped.append((name, f"white-box (gradients); --access is {access}"))
            continue
        if cls.access == "black-box" and access != "black-box":
            skipped.append((name, "black-box (generated images only): run with --access black-box"))
            continue
        if cls.access == "gray-box" and access == "black-box":
            skipped.append((name, "gray-box (noise predictions); --access is black-box"))
            continue
        if cls.needs_references and getattr(cls.Params(), "mode", "online") == "offline" and public_count < members:
            skipped.append(
                (
                    name,
                    f"offline references train on {members} public images each: give --public FOLDER "
                    f"with at least {members} images" + (f" (it has {public_count})" if public_count else ""),
                )
            )
            continue
        if not has_public and cls.needs_public:
            skipped.append((name, cls.needs_public))
            continue
        if not has_public and cls.without_public:
            params = dict(cls.without_public)
        run.append((name, params))
    return run, skipped


def audit_model(
    model: str | Path,
    members: str | Path,
    nonmembers: str | Path,
    out: str | Path,
    access: str = "gray-box",
    public: str | Path | None = None,
    recipe: str | Path | None = None,
    seed: int = 0,
    calibration_fraction: float = 0.5,
    near_tolerance: float = 0.01,
    attacks: list[str] | None = None,
    batch_size: int | None = None,
    bootstrap: int = 1000,
    delta: float = 1e-5,
    progress: bool = True,
    adapter: str | Path | None = None,
    attack_params: dict[str, dict] | None = None,
    allow_outside: bool = False,
    precision: str = "fp32",
    groups: str | None = None,
    train_command: str | None = None,
    train_env: list[str] | None = None,
) -> dict:
    from diffmia.attacks import build_attack
    from diffmia.attacks.runner import check_attack_fits, run_attack
    from diffmia.core.config import TargetConfig
    from diffmia.core.environment import environment
    from diffmia.core.rundir import RunDir
    from diffmia.evaluate.results import EvaluationConfig, cell_row, write_results
    from diffmia.targets.denoiser import read_model_index
    from diffmia.targets.kinds import load_target
    from diffmia.targets.runs import LoadedRun

    if access not in ACCESS_LEVELS:
        raise ConfigError(f"--access: expected one of {', '.join(ACCESS_LEVELS)}, got {access!r}")
    if recipe is not None and train_command is not None:
        raise ConfigError("--recipe and --train-command both say how references train: give one")
    command = None
    if train_command is not None:
        from pydantic import ValidationError

        from diffmia.core.config import CommandConfig

        base = str(Path(model).resolve()) if adapter is not None else None  # a LoRA recipe: LoRAs on this base
        try:
            command = CommandConfig(run=train_command, env=list(train_env or []), base=base)
        except ValidationError as exc:
            raise ConfigError(f"--train-command: {exc.errors()[0]['msg']}") from None
    model = Path(model)
    target = load_target(model)
    adapter_format = apply_adapter(target, adapter) if adapter is not None else None
    try:
        target.set_precision(precision)
    except ValueError as exc:
        raise ConfigError(f"--precision: {exc}") from None
    shape = target.image_shape
    images, manifest = build_audit_set(
        shape,
        list_images(members, "members", allow_outside),
        list_images(nonmembers, "nonmembers", allow_outside),
        list_images(public, "public", allow_outside) if public else None,
        seed,
        calibration_fraction,
        near_tolerance,
        target.conditional,
    )
    if groups and Path(groups).suffix.lower() == ".csv":
        groups = str(Path(groups).resolve())  # results.json names the file wherever the report is rebuilt
    if groups:  # a bad specification is refused before any attack runs
        from diffmia.evaluate.groups import group_labels

        group_labels(groups, images, manifest, [e.index for e in manifest.members + manifest.nonmembers])
    has_recipe = recipe is not None or command is not None
    planned, skipped = plan_attacks(
        target, access, public is not None, has_recipe, len(manifest.members), len(manifest.public)
    )
    if attacks:
        unknown = sorted(set(attacks) - {n for n, _ in planned})
        if unknown:
            reasons = dict(skipped)
            raise ConfigError(
                "; ".join(f"--attack {n}: " + (reasons.get(n) or "not applicable to this model") for n in unknown)
            )
        planned = [(n, p) for n, p in planned if n in attacks]
    unknown = sorted(set(attack_params or {}) - {n for n, _ in planned})
    if unknown:
        raise ConfigError(
            f"--set {unknown[0]}.…: {unknown[0]} is not among the attacks this audit runs "
            f"({', '.join(n for n, _ in planned) or 'none'})"
        )
    planned = [(n, {**p, **(attack_params or {}).get(n, {})}) for n, p in planned]
    out = Path(out)
    name = model.resolve().name
    if recipe is not None:
        cfg = recipe_for_audit(recipe, images, manifest, shape)
    elif command is not None:
        cfg = recipe_for_audit(None, images, manifest, shape, command)
    else:
        cfg = TargetConfig.model_validate({"name": "audit", "seed": seed, "data": {"resolution": shape[-1]}})
    run = RunDir(out / "model")
    loaded = LoadedRun(run, cfg, manifest, images, target)
    built = [build_attack(n, p, seed=seed) for n, p in planned]
    for atk in built:
        check_attack_fits(loaded, atk)
    out.mkdir(parents=True, exist_ok=True)  # only after every input was checked
    manifest.save(run.manifest)
    ev = EvaluationConfig(delta=delta, bootstrap=bootstrap, seed=seed, groups=groups or "label")
    info = {
        "run_dir": os.path.relpath(run.root, out),
        "external": True,
        "model": str(model.resolve()),
        "access": access,
        "adapter": str(adapter) if adapter else None,
        "adapter_format": adapter_format,
        "pipeline": read_model_index(model)["_class_name"],
        "prediction_type": target.prediction_type,
        "precision": precision,
        "members_from": str(members),
        "nonmembers_from": str(nonmembers),
        "public_from": str(public) if public else None,
        "counts": {r: len(getattr(manifest, r)) for r in ("members", "nonmembers", "public")},
        "parameters": sum(p.numel() for m in target_modules(target) for p in m.parameters()),
        "manifest_sha256": hashlib.sha256(run.manifest.read_bytes()).hexdigest(),
        "utility": None,
        "skipped_attacks": dict(skipped),
        "calibration_fraction": calibration_fraction,
        "seed": seed,
        "recipe_from": str(recipe) if recipe else (f"command: {train_command}" if command else None),
        "config": dump_config(cfg) if has_recipe else None,
        # copies of the audited images outside --out (`diffmia forget OUT` removes them and the references)
        "member_data_copies": [cfg.data.path] if has_recipe else [],
    }
    rows = []
    for atk in built:
        logger.info(f"[{name}] attack {atk.name}")
        result = run_attack(loaded, atk, run.scores, progress=progress, batch_size=batch_size)
        rows.append(
            cell_row(
                name,
                atk.name,
                atk,
                result.scores,
                result.info,
                loaded,
                ev,
                info,
                {"defenses": "unknown"},
                os.path.relpath(run.scores / f"{atk.name}.csv", out),
                None,
            )
        )
    for n, why in skipped:
        logger.info(f"[{name}] skipped {n}: {why}")
    results = {
        "benchmark": f"audit of {name}",
        "recipes": {name: info},
        "rows": rows,
        "evaluation": ev.model_dump(mode="json"),
        "environment": environment(),
    }
    return write_results(out, results, {name: (images, manifest)})


def recipe_for_audit(recipe: str | Path | None, images: ImageSet, manifest, shape: tuple[int, int, int], command=None):
    """The team's training recipe (a diffmia target config, or their own training `command`) with its data replaced
    by the audited images, saved once in the cache under their content hash (so references are shared by every audit
    of the same images): reference models then retrain the recipe on subsets of exactly these images."""
    from diffmia.core.config import TargetConfig, load_config
    from diffmia.core.rundir import default_cache_dir
    from diffmia.targets.data import save_npz

    if recipe is not None:
        cfg = load_config(recipe)
    else:
        cfg = TargetConfig.model_validate({"name": "command", "command": command.model_dump()})
    if cfg.data.resolution not in (None, shape[-1]):
        raise ConfigError(
            f"--recipe {recipe}: data.resolution {cfg.data.resolution} differs from the audited model's "
            f"{shape[-1]}x{shape[-1]} images"
        )
    digest = hashlib.sha256("".join(images.hashes()).encode() + "\n".join(images.captions).encode()).hexdigest()[:16]
    npz = private_dir(default_cache_dir() / "audit-data") / f"audit-{digest}.npz"  # owner-only: member images
    if not npz.is_file():
        save_npz(images, npz)
    data = {
        **cfg.data.model_dump(mode="json"),
        "dataset": "npz",
        "path": str(npz),
        "resolution": None,
        "members": len(manifest.members),
        "nonmembers": len(manifest.nonmembers),
        "max_images": None,
        "canaries": 0,
    }
    return cfg.model_copy(update={"data": type(cfg.data).model_validate(data)})


def target_modules(target) -> list:
    return [m for m in (getattr(target, "unet", None), getattr(target, "text_encoder", None)) if m is not None]
