"""Split manifests: which images are members, non-members (calibration / test halves) and public.

A manifest is made from a seed and saved as manifest.json beside a target. It records, for every image, its index in
the dataset, its source (index or file) and the sha256 of its raw pixels. Loading refuses a member/non-member overlap,
duplicate entries and missing fields; `verify` refuses images whose pixels changed since the manifest was written.
Public images are never members: they train helper models (FID features, LoRA bases) without touching the audit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from diffmia.core.io import read_json, write_json

from .data import DataError, ImageSet

MANIFEST_VERSION = 1
ROLES = ("members", "nonmembers", "public")
HALVES = ("calibration", "test")


class ManifestError(DataError):
    """A split manifest that is inconsistent or does not match the data."""


@dataclass(frozen=True)
class Entry:
    index: int
    source: str
    sha256: str
    half: str | None = None  # "calibration" / "test" for members and non-members, None for public


@dataclass
class SplitManifest:
    dataset: dict[str, Any]
    seed: int
    members: list[Entry]
    nonmembers: list[Entry]
    public: list[Entry]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. what a defense changed

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def for_recipe(cls, images, data, seed: int) -> "SplitManifest":
        """The split a recipe's data section asks for (`diffmia data` and a training that starts from scratch)."""
        dataset = {"name": data.dataset, "path": data.path, "resolution": data.resolution}
        return cls.create(
            images, data.members, data.nonmembers, seed, data.calibration_fraction, dataset, canaries=data.canaries
        )

    @classmethod
    def create(
        cls,
        images: ImageSet,
        members: int,
        nonmembers: int,
        seed: int,
        calibration_fraction: float = 0.5,
        dataset: dict[str, Any] | None = None,
        canaries: int = 0,
    ) -> "SplitManifest":
        hashes = images.hashes()
        # identical pixels under two indices would make the member label meaningless: keep the first copy only
        first: dict[str, int] = {}
        for i, h in enumerate(hashes):
            first.setdefault(h, i)
        unique = np.array(sorted(first.values()), dtype=np.int64)
        if members + nonmembers + canaries > len(unique):
            raise ManifestError(
                f"data.members + data.nonmembers + data.canaries = {members + nonmembers + canaries} exceeds the "
                f"{len(unique)} distinct images of '{images.name}'"
            )
        order = unique[np.random.default_rng(seed).permutation(len(unique))]
        n_cal_m = _calibration_count(members, calibration_fraction)
        n_cal_n = _calibration_count(nonmembers, calibration_fraction)

        def entries(idx: Iterable[int], half: str | None) -> list[Entry]:
            return [Entry(int(i), images.sources[i], hashes[i], half) for i in sorted(int(j) for j in idx)]

        mem, non = order[:members], order[members : members + nonmembers]
        can, pub = (
            order[members + nonmembers : members + nonmembers + canaries],
            order[members + nonmembers + canaries :],
        )
        # one-run audit (Steinke et al.): each canary is trained on by an independent fair coin, seeded
        coins = np.random.default_rng([seed, 211]).random(len(can)) < 0.5
        extra = (
            {
                "canaries": [
                    {"index": int(i), "source": images.sources[i], "sha256": hashes[i], "included": bool(c)}
                    for i, c in sorted(zip(can.tolist(), coins.tolist()))
                ]
            }
            if canaries
            else {}
        )
        manifest = cls(
            dataset=dict(dataset or {"name": images.name}),
            seed=seed,
            members=entries(mem[:n_cal_m], "calibration") + entries(mem[n_cal_m:], "test"),
            nonmembers=entries(non[:n_cal_n], "calibration") + entries(non[n_cal_n:], "test"),
            public=entries(pub, None),
            extra=extra,
        )
        manifest.check()
        return manifest

    # -- queries -----------------------------------------------------------------------------------------------
    def indices(self, role: str, half: str | None = None) -> list[int]:
        return [e.index for e in getattr(self, role) if half is None or e.half == half]

    def canaries(self) -> list[dict[str, Any]]:
        """The one-run audit's canaries: {index, source, sha256, included} each (empty without canaries)."""
        return list(self.extra.get("canaries", []))

    def canary_entries(self) -> list[tuple[Entry, bool]]:
        """Canaries as entries (half "canary") with their coin flip as the membership label."""
        return [(Entry(c["index"], c["source"], c["sha256"], "canary"), bool(c["included"])) for c in self.canaries()]

    def audit_entries(self) -> list[tuple[Entry, bool]]:
        """Members then non-members, each with its is_member flag: what attacks score."""
        return [(e, True) for e in self.members] + [(e, False) for e in self.nonmembers]

    # -- validation --------------------------------------------------------------------------------------------
    def check(self, source: str = "manifest") -> None:
        seen: dict[int, str] = {}
        hashes: dict[str, str] = {}
        for role in ROLES:
            for e in getattr(self, role):
                if e.index in seen:
                    what = "overlap" if {seen[e.index], role} == {"members", "nonmembers"} else "duplicate entry"
                    raise ManifestError(
                        f"{source}: {what}: image {e.index} ({e.source}) is in {seen[e.index]} and {role}"
                    )
                seen[e.index] = role
                if role != "public":
                    if e.half not in HALVES:
                        raise ManifestError(
                            f"{source}: {role} entry {e.index} has half={e.half!r}, expected one of {HALVES}"
                        )
                    other = hashes.get(e.sha256)
                    if other is not None and other != role:
                        raise ManifestError(
                            f"{source}: overlap: image {e.index} ({e.source}) has the same pixels as one in {other}"
                        )
                    hashes[e.sha256] = role
        for role in ("members", "nonmembers"):
            for half in HALVES:
                if not self.indices(role, half):
                    raise ManifestError(f"{source}: {role} has no {half} images")
        for c in self.canaries():
            if c["index"] in seen:
                raise ManifestError(f"{source}: canary {c['index']} ({c['source']}) is also in {seen[c['index']]}")
            if c["sha256"] in hashes:
                raise ManifestError(
                    f"{source}: canary {c['index']} ({c['source']}) has the same pixels as an audited image"
                )
            seen[c["index"]] = "canaries"

    def verify(self, images: ImageSet, source: str = "manifest") -> None:
        """Refuse if any recorded image is missing from or different in `images`."""
        hashes = images.hashes()
        canaries = [e for e, _ in self.canary_entries()]
        for listed in [getattr(self, r) for r in ROLES] + [canaries]:
            for e in listed:
                if e.index >= len(images):
                    raise ManifestError(
                        f"{source}: image {e.index} ({e.source}) is not in the data ({len(images)} images)"
                    )
                if hashes[e.index] != e.sha256:
                    raise ManifestError(
                        f"{source}: image {e.index} ({e.source}) changed since the manifest was written (sha256 mismatch)"
                    )

    # -- persistence -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "dataset": self.dataset,
            "seed": self.seed,
            "counts": {role: len(getattr(self, role)) for role in ROLES},
            **{role: [asdict(e) for e in getattr(self, role)] for role in ROLES},
            "extra": self.extra,
        }

    def save(self, path: str | Path) -> None:
        """Owner-only: it lists every member's file name and pixel hash."""
        write_json(path, self.to_dict(), private=True)

    @classmethod
    def load(cls, path: str | Path) -> "SplitManifest":
        path = Path(path)
        if not path.is_file():
            raise ManifestError(f"{path}: manifest not found")
        try:
            raw = read_json(path)
        except ValueError:
            raise ManifestError(f"{path}: not valid JSON") from None
        if not isinstance(raw, dict) or raw.get("version") != MANIFEST_VERSION:
            raise ManifestError(f"{path}: not a diffmia split manifest (version {MANIFEST_VERSION})")
        try:
            parts = {
                role: [Entry(int(e["index"]), str(e["source"]), str(e["sha256"]), e.get("half")) for e in raw[role]]
                for role in ROLES
            }
            manifest = cls(dataset=raw["dataset"], seed=int(raw["seed"]), extra=raw.get("extra", {}), **parts)
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{path}: malformed manifest ({exc.__class__.__name__}: {exc})") from None
        manifest.check(source=str(path))
        return manifest


def _calibration_count(n: int, fraction: float) -> int:
    return min(max(1, round(n * fraction)), n - 1)
