"""A full-size Stable Diffusion v1.5 architecture through `diffmia audit` on CPU: seconds per query, peak memory,
FLOPs per query, and the projection to 1000 + 1000 images on a GPU.

    python benchmarks/real_size.py --out runs/real-size                 # fp32: 4 + 4 images at 512 x 512
    python benchmarks/real_size.py --out runs/real-size --precision bf16 --only-latency

The model has the published SD v1.5 configs (UNet 860M parameters, the KL VAE, a CLIP ViT-L/14 text encoder of 12
layers, width 768) with random weights: nothing is downloaded, and timing and memory do not depend on the weights. It
is saved once as a diffusers folder (about 4 GB) and audited as a team's model would be, in a fresh process per
access level (gray-box: naive loss, PIA, noise aggregation at its paper setting; black-box: ReDiffuse at a reduced
setting, 2 variations of 2 DDIM steps instead of the official 10, said in the table). Members and non-members are
4 + 4 of scikit-learn's digits upscaled to 512 x 512 RGB with captions. Peak memory is the audit process's maximum
resident set (`/usr/bin/time`); FLOPs come from torch's FlopCounterMode on one query (UNet) and one VAE encode.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
CLIP_VIT_L_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
GRAY = [("naive_loss", {}), ("pia", {}), ("noise_aggregation", {})]
BLACK = [("rediffuse", {"repeats": 2, "steps": 2})]  # reduced from the official 10 variations


def captions(n: int) -> list[str]:
    return [f"a photograph of the handwritten digit {i % 10}, sample {i}" for i in range(n)]


def build_folder(folder: Path) -> None:
    """SD v1.5's architecture with random weights, saved as a StableDiffusionPipeline folder."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffmia.targets.text import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(captions(64), 77)
    StableDiffusionPipeline(
        vae=AutoencoderKL(**SD15_VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT)),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**SD15_UNET),
        scheduler=DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder, safe_serialization=True)


def write_images(root: Path, n: int) -> tuple[Path, Path]:
    """n members and n non-members, each side half in the calibration half and half in the test half of the audit's
    seeded pixel hash (4 images could otherwise all land in one half)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from diffmia.auditor import half_of, pixel_sha256

    digits = load_digits().images
    caps = captions(len(digits))
    out, j = [], 0
    for role in ("members", "nonmembers"):
        folder = root / role
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        lines, count = [], {"calibration": 0, "test": 0}
        while sum(count.values()) < n:
            img = (digits[j] / 16 * 255).astype(np.uint8)
            big = Image.fromarray(img).resize((512, 512), Image.NEAREST).convert("RGB")
            half = half_of(pixel_sha256(np.asarray(big)), 0, 0.5)
            if count[half] < (n + 1) // 2:
                count[half] += 1
                big.save(folder / f"{j}.png")
                lines.append(json.dumps({"file_name": f"{j}.png", "text": caps[j]}))
            j += 1
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        out.append(folder)
    return out[0], out[1]


def run_audit(folder, members, nonmembers, out, access, attacks, precision, timeout) -> dict:
    """One `diffmia audit` in a fresh process; (seconds, peak RSS GB, results rows) or a timeout."""
    cmd = [
        sys.executable,
        "-m",
        "diffmia",
        "audit",
        str(folder),
        "--members",
        str(members),
        "--nonmembers",
        str(nonmembers),
        "--access",
        access,
        "--precision",
        precision,
        "--bootstrap",
        "50",
        "--batch-size",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    for name, params in attacks:
        cmd += ["--attack", name] + [x for k, v in params.items() for x in ("--set", f"{name}.{k}={v}")]
    timer = ["/usr/bin/time", "-f", "TIME %e %M"] if Path("/usr/bin/time").is_file() else []
    t0 = time.time()
    try:
        done = subprocess.run(timer + cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timed_out": timeout}
    wall = time.time() - t0
    if done.returncode != 0:
        raise SystemExit(f"audit failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    peak = None
    for line in done.stderr.splitlines():
        if line.startswith("TIME "):
            peak = int(line.split()[2]) / 1024**2  # KB -> GB
    import pandas as pd

    rows = pd.read_csv(out / "results.csv").to_dict("records")
    return {"wall_seconds": round(wall, 1), "peak_rss_gb": None if peak is None else round(peak, 2), "rows": rows}


def flops_and_latency(folder: Path, precision: str) -> dict:
    """FLOPs of one query (UNet) and of one VAE encode at 512 x 512, and their seconds, in this process."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from diffmia.targets.kinds import load_target

    target = load_target(folder)
    target.set_precision(precision)
    x = torch.randn(1, 3, 512, 512)
    cond = captions(1)
    out = {}
    with FlopCounterMode(display=False) as fc:
        t0 = time.time()
        z = target.encode(x)
        out["encode_seconds"] = round(time.time() - t0, 2)
    out["encode_gflops"] = round(fc.get_total_flops() / 1e9, 1)
    with FlopCounterMode(display=False) as fc:
        t0 = time.time()
        target.predict_noise(z, 500, cond)
        out["query_seconds"] = round(time.time() - t0, 2)
    out["query_gflops"] = round(fc.get_total_flops() / 1e9, 1)
    with FlopCounterMode(display=False) as fc:
        t0 = time.time()
        target.decode(z)
        out["decode_seconds"] = round(time.time() - t0, 2)
    out["decode_gflops"] = round(fc.get_total_flops() / 1e9, 1)
    t0 = time.time()
    target.predict_noise(z, 500, cond)  # without the counter's overhead
    out["query_seconds_uncounted"] = round(time.time() - t0, 2)
    out["unet_parameters_m"] = round(sum(p.numel() for p in target.unet.parameters()) / 1e6, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/real-size"))
    ap.add_argument("--images", type=int, default=4, help="members and as many non-members")
    ap.add_argument("--precision", action="append", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--only-latency", action="store_true", help="FLOPs and one query's seconds only, no audit")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per audit before it is reported as such")
    ap.add_argument("--gpu-tflops", type=float, default=400.0, help="sustained TFLOP/s assumed for the projection")
    args = ap.parse_args()
    precisions = args.precision or ["fp32"]
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out / "sd15-random"
    if not (folder / "model_index.json").is_file():
        t0 = time.time()
        build_folder(folder)
        print(f"built {folder} in {time.time() - t0:.0f} s")
    members, nonmembers = write_images(args.out, args.images)
    saved = args.out / "real-size.json"  # a later call for another precision adds to it
    report = json.loads(saved.read_text()) if saved.is_file() else {"runs": {}}
    report.update({"images": args.images, "cpu": os.cpu_count(), "gpu_tflops_assumed": args.gpu_tflops})
    for precision in precisions:
        entry = {**report["runs"].get(precision, {}), "latency": flops_and_latency(folder, precision)}
        print(precision, json.dumps(entry["latency"]))
        if not args.only_latency:
            for access, attacks in (("gray-box", GRAY), ("black-box", BLACK)):
                res = run_audit(
                    folder,
                    members,
                    nonmembers,
                    args.out / f"audit-{precision}-{access}",
                    access,
                    attacks,
                    precision,
                    args.timeout,
                )
                entry[access] = res
                print(precision, access, {k: v for k, v in res.items() if k != "rows"})
        report["runs"][precision] = entry
        saved.write_text(json.dumps(report, indent=1, default=str))
    print_table(report)


def print_table(report: dict) -> None:
    n = 2 * report["images"]
    print(
        f"\n| precision | attack | queries per image | seconds per query | seconds per image | peak RSS (GB) | "
        f"projected GPU hours for 1000 + 1000 images at {report['gpu_tflops_assumed']:g} TFLOP/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for precision, entry in report["runs"].items():
        lat = entry["latency"]
        print(
            f"| {precision} | one query (UNet) | 1 | {lat['query_seconds_uncounted']} | - | - | "
            f"{lat['query_gflops']:g} GFLOPs; VAE encode {lat['encode_gflops']:g} GFLOPs, {lat['encode_seconds']} s |"
        )
        for access in ("gray-box", "black-box"):
            res = entry.get(access)
            if not res or "rows" not in res:
                continue
            for r in res["rows"]:
                q = int(r["queries_per_sample"])
                gens = int(r.get("generations_per_sample") or 0)
                per_image = r["attack_seconds"] / n
                # the attack's denoiser calls, one VAE encode per image and one decode per generated image
                flops = (q * lat["query_gflops"] + lat["encode_gflops"] + gens * lat.get("decode_gflops", 0)) * 1e9
                hours = 2000 * flops / (report["gpu_tflops_assumed"] * 1e12) / 3600
                print(
                    f"| {precision} | {r['attack']} | {q} | {per_image / q:.1f} | {per_image:.1f} | "
                    f"{res['peak_rss_gb']} | {hours:.3f} |"
                )


if __name__ == "__main__":
    main()
