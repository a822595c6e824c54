"""`diffmia report`: the report of a results folder again (HTML, Markdown, PDF)."""

from __future__ import annotations

from pathlib import Path

import typer

from diffmia.cli.common import app, user_errors


@app.command()
@user_errors
def report(
    results_dir: Path = typer.Argument(..., help="A folder written by `diffmia run` (holds results.json)."),
    show_examples: bool = typer.Option(False, "--show-examples", help="Embed the most exposed member images."),
    pdf: bool = typer.Option(False, "--pdf", help="Also print report.pdf with headless Chromium."),
) -> None:
    """Rebuild report.html and report.md (and the plots) from a results folder."""
    from diffmia.core.io import read_json
    from diffmia.evaluate.exposure import show_members
    from diffmia.evaluate.report import write_report
    from diffmia.targets.runs import RunError

    if not (results_dir / "results.json").is_file():
        raise RunError(f"{results_dir}: no results.json here; run `diffmia run CONFIG --out {results_dir}` first")
    results = read_json(results_dir / "results.json")
    if results.get("rows") and any("one_run_headline" not in info for info in results["recipes"].values()):
        from diffmia.core.io import write_json
        from diffmia.evaluate.results import add_headline_audits

        add_headline_audits(results_dir, results)  # written before the headline procedure existed
        write_json(results_dir / "results.json", results)
    if results.get("rows") and "exposure_ties" not in results:
        from diffmia.core.io import write_json
        from diffmia.evaluate.exposure import rerank_exposure

        rerank_exposure(results_dir, results)  # written before ties at the p-value floor were counted
        write_json(results_dir / "results.json", results)
    html_report = write_report(results_dir, results, show_members(results_dir, results) if show_examples else None)
    typer.echo(f"report: {html_report}")
    if pdf:
        from diffmia.evaluate.report import write_pdf

        typer.echo(f"pdf: {write_pdf(html_report)}")
