"""Markdown tables of metric results, for evaluation reports, sweeps and model cards."""

from __future__ import annotations

METRIC_LABELS = {
    "unet_evaluations": "UNet evals",
    "psnr": "PSNR ↑",
    "ssim": "SSIM ↑",
    "lpips": "ST-LPIPS ↓",
    "fid": "FID ↓",
    "identity": "ID dist ↓",
    "same_person": "same person ↑",
    "landmarks": "LMD (px) ↓",
    "seam": "seam ↓ (1: none)",
    "seconds_per_face": "s / face",
}


def markdown_table(rows: list[dict], keys: list[str], metrics: list[str] | None = None) -> str:
    """One row per dict: the ``keys`` columns as they are, then the metric columns (those of
    ``METRIC_LABELS`` present in any row, unless ``metrics`` names them) to 4 significant digits."""
    metrics = metrics or [m for m in METRIC_LABELS if any(m in row for row in rows)]
    lines = [
        "| " + " | ".join(keys + [METRIC_LABELS[m] for m in metrics]) + " |",
        "|" + "---|" * (len(keys) + len(metrics)),
    ]
    for row in rows:
        cells = [str(row[k]) for k in keys] + [f"{row[m]:.4g}" if m in row else "" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_table(results: dict) -> str:
    """The table of ``lpipdiff evaluate``'s ``results.json``: a row per preset and method."""
    rows = [
        {"preset": preset, "method": method, **row}
        for preset, methods in results["presets"].items()
        for method, row in methods.items()
    ]
    table = markdown_table(rows, ["preset", "method", "n"])
    if results.get("bands"):
        table += "\n" + band_table(results)
    return table


def band_table(results: dict) -> str:
    """The same figures in every age band (``results["bands"]``: preset -> band -> method -> row),
    bands without faces left out. A band's FID is biased by its size: compare within a band."""
    rows = [
        {"preset": preset, "age band": band, "method": method, **row}
        for preset, bands in results["bands"].items()
        for band, methods in bands.items()
        for method, row in methods.items()
        if row.get("n")
    ]
    return markdown_table(rows, ["preset", "age band", "method", "n"])
