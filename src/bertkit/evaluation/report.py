"""Reports people can read: metrics.json, report.md, confusion_matrix.png, learning_curves.png,
errors.jsonl (the wrong predictions with their probabilities)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bertkit.fileio import atomic_open, write_json, write_text


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _plot_confusion(path: Path, labels: list[str], matrix: list[list[int]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5)))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(r) for r in matrix) or 1
    if n <= 25:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(matrix[i][j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if matrix[i][j] > top / 2 else "black",
                )
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def _plot_f1_support(path: Path, per_label: dict[str, dict]) -> None:
    """Each label's F1 against its support (log scale), names beside the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, v in per_label.items():
        x = max(v["support"], 1)
        ax.scatter(x, v["f1"], s=14, color="tab:blue")
        ax.annotate(name, (x, v["f1"]), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("support (true texts, log scale)")
    ax.set_ylabel("F1")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("per-label F1 against support")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def plot_learning_curves(path: Path, history: list[dict]) -> None:
    """Training loss and every dev metric against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = [(h["step"], h["loss"]) for h in history if "loss" in h]
    dev_keys = sorted({k for h in history for k in h if k.startswith("dev_") and k != "dev_support"})
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    if loss:
        a.plot(*zip(*loss, strict=True), label="train loss")
    a.set_xlabel("step")
    a.set_title("training loss")
    for k in dev_keys:
        pts = [(h["step"], h[k]) for h in history if k in h]
        if pts and all(isinstance(v, (int, float)) for _, v in pts) and max(abs(v) for _, v in pts) <= 1.0:
            b.plot(*zip(*pts, strict=True), marker="o", label=k[4:])
    b.set_xlabel("step")
    b.set_title("dev metrics")
    if b.lines:
        b.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_report(
    out: Path, task, examples: list, preds: list[dict], metrics: dict, history: list[dict] | None = None
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    md = [f"# {task.name} report", "", f"{len(examples)} examples.", ""]
    headline = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    md += [_table(list(headline), [list(headline.values())]), ""]
    if metrics.get("warning"):
        md += [f"**Warning:** {metrics['warning']}", ""]
    for key, title, name in (("per_class", "Per class", "label"), ("per_type", "Per entity type", "type")):
        if key in metrics:
            cols = ["precision", "recall", "f1", "support"]
            rows = [[k, *(v[c] for c in cols)] for k, v in metrics[key].items()]
            md += [f"## {title}", "", _table([name, *cols], rows), ""]
    if "per_label" in metrics:  # multi-label: the table by support, F1 against support plotted
        cols = ["precision", "recall", "f1", "support"]
        ranked = sorted(metrics["per_label"].items(), key=lambda kv: -kv[1]["support"])
        thresholds = metrics.get("thresholds", {})
        rows = [[k, *(v[c] for c in cols), thresholds.get(k, "")] for k, v in ranked]
        md += ["## Per label (by support)", "", _table(["label", *cols, "threshold"], rows), ""]
        if metrics.get("fallback_labels"):
            md += [
                "Tuned thresholds that would fire on nearly every dev text, replaced by the global "
                f"threshold: {', '.join(metrics['fallback_labels'])}.",
                "",
            ]
        _plot_f1_support(out / "per_label_f1.png", metrics["per_label"])
        md += ["![per-label F1 against support](per_label_f1.png)", ""]
    if "confusion_matrix" in metrics and getattr(task, "labels", None):
        labels = task.labels
        md += [
            "## Confusion matrix (rows: true, columns: predicted)",
            "",
            _table(
                ["true \\ pred", *labels],
                [[labels[i], *row] for i, row in enumerate(metrics["confusion_matrix"])],
            ),
            "",
            "![confusion matrix](confusion_matrix.png)",
            "",
        ]
        _plot_confusion(out / "confusion_matrix.png", labels, metrics["confusion_matrix"])
    if history:
        plot_learning_curves(out / "learning_curves.png", history)
        md += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    pairs = enumerate(zip(examples, preds, strict=True))
    errors = [row for i, (x, p) in pairs if (row := task.error(x, p, i))]
    with atomic_open(out / "errors.jsonl") as f:
        for e in errors:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    md += [f"{len(errors)} wrong predictions are listed in errors.jsonl.", ""]
    write_text(out / "report.md", "\n".join(md))
