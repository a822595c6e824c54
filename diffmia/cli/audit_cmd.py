"""`diffmia audit`: audit a model trained elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from diffmia.cli.common import (
    AllowOutsideOption,
    BatchSizeOption,
    FailIfOption,
    GateBoundOption,
    SlurmOption,
    app,
    apply_gates,
    dotted_values,
    out_path,
    parse_gates,
    refuse_launch,
    user_errors,
)


@app.command()
@user_errors
def audit(
    model: Path = typer.Argument(
        ...,
        help="A local diffusers pipeline folder trained elsewhere (DDPMPipeline, "
        "diffmia's text pipeline, StableDiffusionPipeline).",
    ),
    members: Path = typer.Option(
        ...,
        "--members",
        "-m",
        help="Training images: a folder (metadata.jsonl captions for "
        "text models) or a CSV with a path (and text) column.",
    ),
    nonmembers: Path = typer.Option(..., "--nonmembers", "-n", help="Images known not to be in training, same form."),
    access: str = typer.Option(
        "gray-box",
        "--access",
        help="What the attacker may use: gray-box (noise "
        "predictions), black-box (generated images only) or white-box (gradients).",
    ),
    public: Optional[Path] = typer.Option(
        None,
        "--public",
        help="Other non-member images the attacker may learn from "
        "(needed by quantile regression and SD-MIA's feature network).",
    ),
    recipe: Optional[Path] = typer.Option(
        None,
        "--recipe",
        help="The training recipe (a diffmia target YAML): the reference-model attacks (LiRA, RMIA, GSA) retrain it on subsets of the audited images.",
    ),
    adapter: Optional[Path] = typer.Option(
        None,
        "--adapter",
        help="A LoRA merged into MODEL: a peft adapter folder, or a diffusers LoRA file "
        "(pytorch_lora_weights.safetensors, UNet and text-encoder layers) or the folder holding it.",
    ),
    attack_names: Optional[List[str]] = typer.Option(None, "--attack", "-a", help="Only these attacks (repeatable)."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", "-s", help="An attack's parameter as ATTACK.KEY=VALUE, e.g. lira.references=16 (repeatable)."
    ),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Results folder (default: runs/audit-MODELNAME)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the halves' hash and of the attacks' noise."),
    calibration_fraction: float = typer.Option(0.5, "--calibration-fraction", min=0.05, max=0.95),
    near_duplicates: float = typer.Option(
        0.01,
        "--near-duplicates",
        min=0.0,
        max=1.0,
        help="Refuse member/non-member "
        "pairs this close (RMS pixel difference, 0-1 scale, 16x16 thumbnails); 0: exact only.",
    ),
    batch_size: Optional[int] = BatchSizeOption,
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, max=100000),
    allow_outside: bool = AllowOutsideOption,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32 (exact), bf16 or fp16: the denoiser runs under autocast (GPUs)."
    ),
    groups: Optional[str] = typer.Option(
        None,
        "--groups",
        help="Risk per group: caption:WORD,WORD (the first word each caption contains) or a CSV with path and group "
        "columns (paths as the member and non-member lists name them).",
    ),
    train_command: Optional[str] = typer.Option(
        None,
        "--train-command",
        help="Train the reference models with your own command instead of --recipe: a shell line naming {data} (an "
        "image folder with metadata.jsonl captions), {out} (where it saves a pipeline, or a LoRA on MODEL with "
        "--adapter) and {seed}, e.g. 'python train.py --train_data_dir {data} --output_dir {out} --seed {seed}'.",
    ),
    train_env: Optional[List[str]] = typer.Option(
        None, "--train-env", help="An environment variable that changes what the command trains (repeatable)."
    ),
    reference_executor: Optional[str] = typer.Option(
        None,
        "--reference-executor",
        help="Train each missing reference model as a submitit job: slurm (a Slurm job array; --slurm key=value sets "
        "its parameters) or local (local processes).",
    ),
    slurm: Optional[List[str]] = SlurmOption,
    fail_if: Optional[List[str]] = FailIfOption,
    gate_bound: str = GateBoundOption,
) -> None:
    """Audit a model trained elsewhere: every attack its access level allows, on the given members and non-members;
    score files, results, exposure.csv and the report as `diffmia run` writes them. Nothing is retrained but the
    reference models of --recipe (cached, shared by every audit of the same images and recipe)."""
    from diffmia import api
    from diffmia.core.config import ConfigError

    refuse_launch("audit", "launch `diffmia attack` on a run folder instead, or run the audit in one process")
    gates = parse_gates(fail_if, gate_bound)
    if any(g.metric == "epsilon" for g in gates):
        raise ConfigError(
            "--fail-if epsilon: an audit of a model trained elsewhere has no canaries, so no one-run epsilon; "
            "gate on tpr@1%fpr, auc or risk"
        )

    out = out_path(out) or Path("runs") / f"audit-{model.resolve().name}"
    attack_params: dict[str, dict] = {}
    for key, value in dotted_values(set_).items():
        if "." not in key:
            raise ConfigError(f"--set {key}=...: name the attack, as ATTACK.KEY=VALUE (e.g. lira.references=16)")
        name, param = key.split(".", 1)
        attack_params.setdefault(name, {})[param] = value
    results = api.audit(
        model,
        members,
        nonmembers,
        out,
        access,
        public,
        recipe,
        adapter,
        attack_names,
        attack_params,
        seed,
        calibration_fraction,
        near_duplicates,
        batch_size,
        bootstrap,
        allow_outside,
        progress=progress,
        precision=precision,
        groups=groups,
        train_command=train_command,
        train_env=train_env,
        reference_executor=reference_executor,
        slurm=dotted_values(slurm),
    ).data
    for row in results["rows"]:
        typer.echo(
            f"{row['attack']:<20} AUC {row['auc']:.3f}  TPR@1%FPR calibrated {row['tpr@1%fpr']:.3f} "
            f"(achieved FPR {row['fpr@1%fpr_achieved']:.3f})  (test halves)"
        )
    if not results["rows"]:
        typer.echo("no attack applies at this access level; see the reasons above")
    typer.echo(f"results: {out / 'results.csv'}\nexposure: {out / 'exposure.csv'}\nreport: {results['report']}")
    apply_gates(results, gates, gate_bound)
