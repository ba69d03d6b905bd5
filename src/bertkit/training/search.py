"""Grid search over fine-tuning hyperparameters, with k-fold cross-validation or a fixed dev set.

The bookkeeping is optuna's: a GridSampler walks the grid and a SQLite study in the output
directory records every trial, so a search that is killed resumes where it stopped (a trial
cut off mid-way is run again). Each grid point trains one model per fold and scores the mean
of the task's main metric on the held-out folds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from bertkit.errors import BertkitError
from bertkit.fileio import write_json, write_text
from bertkit.runtime import Runtime
from bertkit.training.loop import TrainArgs

# Grid keys: TrainArgs fields, plus task settings.
TRAIN_KEYS = {
    "lr": float,
    "batch_size": int,
    "epochs": float,
    "warmup": float,
    "weight_decay": float,
    "grad_accum": int,
    "max_steps": int,
    "head_lr_mult": float,
}
TASK_KEYS = {"head": str, "max_length": int}


def parse_grid(specs: list[str]) -> dict[str, list]:
    """["lr=2e-5,5e-5", "batch_size=16,32"] -> {"lr": [2e-5, 5e-5], "batch_size": [16, 32]}."""
    grid: dict[str, list] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        kind = TRAIN_KEYS.get(key) or TASK_KEYS.get(key)
        if not sep or kind is None:
            raise BertkitError(
                f"--grid {spec!r}: expected KEY=V1,V2,... with KEY one of "
                f"{', '.join([*TRAIN_KEYS, *TASK_KEYS])}"
            )
        try:
            grid[key] = [kind(v.strip()) for v in values.split(",") if v.strip()]
        except ValueError:
            raise BertkitError(f"--grid {spec!r}: values must be of type {kind.__name__}") from None
        if not grid[key]:
            raise BertkitError(f"--grid {spec!r}: no values")
    if not grid:
        raise BertkitError("give at least one --grid KEY=V1,V2,...")
    return grid


def folds(examples: list, k: int, seed: int) -> list[tuple[list, list]]:
    """k (train, held-out) splits; stratified by label for classification examples."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if k < 2:
        raise BertkitError(f"--folds must be at least 2, not {k}")
    labels = [getattr(e, "label", None) for e in examples]
    stratify = all(isinstance(x, str) for x in labels)
    if stratify and min(labels.count(x) for x in set(labels)) < k:
        stratify = False  # a class rarer than k cannot appear in every fold
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=k, shuffle=True, random_state=seed)
    split = splitter.split(examples, labels if stratify else None)
    return [([examples[i] for i in tr], [examples[i] for i in te]) for tr, te in split]


def run_search(
    make_task,
    model_dir: Path,
    train: list,
    dev: list | None,
    grid: dict[str, list],
    n_folds: int,
    base: TrainArgs,
    output: Path,
    rt: Runtime | None = None,
) -> dict[str, Any]:
    """Evaluate every grid point; returns the best point and writes results.{md,csv} and best.json.

    `make_task(params)` builds a fresh task for a grid point (task settings such as the NER head).
    A killed search run again finds the points it finished in OUTPUT/search.db and goes on.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    output.mkdir(parents=True, exist_ok=True)
    keys = sorted(grid)
    ident = hashlib.sha1(json.dumps({k: grid[k] for k in keys}).encode()).hexdigest()[:10]
    study = optuna.create_study(
        study_name=f"grid-{ident}",
        storage=f"sqlite:///{output / 'search.db'}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.GridSampler(grid, seed=base.seed),
    )
    splits = folds(train, n_folds, base.seed) if dev is None else [(train, dev)]

    def done() -> dict[tuple, optuna.trial.FrozenTrial]:
        complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
        return {tuple(t.params[k] for k in keys): t for t in complete}

    total = len(list(itertools.product(*(grid[k] for k in keys))))
    remaining = total - len(done())
    if remaining > 0:
        objective = _objective(make_task, model_dir, grid, keys, splits, base, rt)
        study.optimize(objective, n_trials=remaining)
    trials = sorted(done().values(), key=lambda t: -cast(float, t.value))  # complete trials have values
    _write_table(output, trials, keys, len(splits))
    best = {
        "params": trials[0].params,
        f"mean_{trials[0].user_attrs.get('metric', 'score')}": trials[0].value,
        "std": trials[0].user_attrs["std"],
        "folds": len(splits) if dev is None else 0,
        "grid_points": total,
    }
    write_json(output / "best.json", best)
    return best


def _objective(make_task, model_dir: Path, grid: dict, keys: list, splits: list, base: TrainArgs, rt):
    """A trial: the grid point's task and settings trained on every split, scored by the mean."""
    import optuna

    from bertkit.training.finetune import train_model

    def objective(trial: optuna.Trial) -> float:
        params = {k: trial.suggest_categorical(k, grid[k]) for k in keys}
        task = make_task(params)
        args = replace(base, **{k: v for k, v in params.items() if k in TRAIN_KEYS})
        scores, start = [], time.perf_counter()
        for i, (tr, te) in enumerate(splits):
            trained = train_model(task, model_dir, tr, te, args, rt)
            assert trained.result.best_metrics is not None  # every run here evaluates on held-out data
            scores.append(trained.result.best_metrics[task.main_metric])
            trial.set_user_attr(f"fold{i}", scores[-1])
            print(
                f"trial {trial.number} {params} fold {i + 1}/{len(splits)}: "
                f"{task.main_metric} = {scores[-1]:.4f}",
                flush=True,
            )
        trial.set_user_attr("std", statistics.pstdev(scores))
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 1))
        trial.set_user_attr("metric", task.main_metric)
        return statistics.fmean(scores)

    return objective


def _write_table(output: Path, trials: list, keys: list, n_splits: int) -> None:
    """results.md and results.csv: every grid point, best first, with each fold's score."""
    metric = trials[0].user_attrs.get("metric", "score")
    header = [*keys, f"mean {metric}", "std", *[f"fold {i + 1}" for i in range(n_splits)], "seconds"]
    rows = [
        [
            *(t.params[k] for k in keys),
            round(cast(float, t.value), 4),
            round(t.user_attrs["std"], 4),
            *(round(t.user_attrs[f"fold{i}"], 4) for i in range(n_splits)),
            t.user_attrs["seconds"],
        ]
        for t in trials
    ]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    write_text(output / "results.md", "\n".join(md) + "\n")
    write_text(output / "results.csv", "\n".join(",".join(str(v) for v in r) for r in [header, *rows]) + "\n")
