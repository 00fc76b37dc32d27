"""Tuning: a pruned study against the default recipe, the LR finder against a grid, two workers.

    python -m bench --only tune                      # a 500-per-class Fashion-MNIST subset
    KESTREL_BENCH_TUNE_PER_CLASS=0 python -m bench --only tune   # all 60 000 images

Three measurements, all in one invocation:

1. **Study vs default.** An Optuna study (median pruner, one worker) over the
   learning rate, the optimizer, label smoothing and dropout of the default
   recipe, each trial at the default 6-epoch budget. The default recipe is trial
   0 (``enqueue_trial``), so it is trained in the same invocation, on the same
   data, through the same machinery. Reported: each trial's state, parameters,
   validation and test accuracy; the best trial (by validation accuracy, as the
   study chooses) against the default on the test split.
2. **Finder vs grid.** ``lib.lr_finder`` on the same data suggests a rate; the
   default recipe is trained at that rate and at each rate of a small grid; the
   suggestion's test accuracy must lie within 0.5 points of the grid's best.
3. **Two workers, one study.** Two worker processes on one SQLite study of tiny
   digits trials: no trial number, trial id or run is used twice, and each run's
   trial.json names its own trial.

The quality figures are single runs (a study takes many minutes); the seeds are
fixed, and the result says so. Nothing here is a timed comparison.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

# Training images per class at size "full": the shared 2-core machine fits a 500-per-class
# subset (5000 images) in a study of ~10 minutes; KESTREL_BENCH_TUNE_PER_CLASS=0 takes all 6000.
FULL_PER_CLASS = int(os.environ.get("KESTREL_BENCH_TUNE_PER_CLASS", "500"))
SIZES = {
    # per_class: Fashion-MNIST training images per class (0: all 6000); trials: study size
    "tiny": {"per_class": 30, "trials": 2, "epochs": 1, "grid": (3e-2,), "steps": 40, "w_trials": 2},
    "full": {"per_class": FULL_PER_CLASS, "trials": 8, "epochs": 6, "grid": (1e-3, 3e-3, 1e-2, 3e-2), "steps": 300, "w_trials": 4},
}  # fmt: skip
SPACE = {
    "train.learning_rate": {"low": 5e-4, "high": 2e-2},
    "train.optimizer": {"choices": ["adam", "adamw"]},
    "train.label_smoothing": {"low": 0.0, "high": 0.2},
    "model.dropout": {"low": 0.0, "high": 0.4},
}
FINDER_TOLERANCE = 0.005  # the issue: within 0.5 points of the grid's best


def _base(per_class: int, epochs: int):
    from lib.config import DataConfig, RunConfig, TrainConfig

    data = DataConfig(source="fashion_mnist", max_per_class=per_class)
    return RunConfig(data=data, train=TrainConfig(epochs=epochs))


def study_vs_default(
    size: str, *, per_class: int | None = None, n_trials: int | None = None,
    time_limit_s: float = 0.0, name: str = "",
) -> dict[str, Any]:  # fmt: skip
    """The pruned study against its trial 0, the default recipe.

    With ``time_limit_s``, the study is stopped (``tuning.stop_study``, as the Tune
    page's Stop does) that many seconds after it starts; the trial running then is
    stopped with it and does not count.
    """
    import threading

    from lib import runstore, tuning

    cfg = dict(SIZES[size])
    if per_class is not None:
        cfg["per_class"] = per_class
    if n_trials is not None:
        cfg["trials"] = n_trials
    base = _base(cfg["per_class"], cfg["epochs"])
    spec = tuning.StudySpec(
        name=name or f"bench-{size}",
        base=base,
        space=SPACE,
        n_trials=cfg["trials"],
        budget_epochs=cfg["epochs"],
        pruner="median",
        seed=0,
    )
    folder = tuning.create_study(spec)
    study = tuning.load_study(spec, folder)
    default = {
        path: getattr(getattr(base, part), name)
        for path in SPACE
        for part, _, name in [path.partition(".")]
    }
    study.enqueue_trial(default)  # trial 0 is the default recipe
    t0 = time.monotonic()
    timer = None
    if time_limit_s:
        timer = threading.Timer(time_limit_s, tuning.stop_study, args=(folder,))
        timer.start()
    try:
        tuning.run_study(spec, workers=1, echo=False)
    finally:
        if timer is not None:
            timer.cancel()
    seconds = time.monotonic() - t0
    study = tuning.load_study(spec, folder)
    trials = []
    for t in study.get_trials(deepcopy=False):
        run = t.user_attrs.get("run_id")
        metrics = runstore.read_metrics(runstore.run_dir(run)) if run else {}
        trials.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "params": t.params,
                "val_accuracy": t.value,
                "test_accuracy": metrics.get("test_accuracy"),
                "epochs_done": metrics.get("epochs_done"),
                "pruned_epoch": t.user_attrs.get("pruned_epoch"),
                "stopped_with_study": bool(t.user_attrs.get("stopped")),
            }
        )
    best = tuning.best_trial(study)
    default_row = trials[0] if trials else {}
    best_row = next((r for r in trials if best is not None and r["number"] == best.number), {})
    best_acc, default_acc = best_row.get("test_accuracy"), default_row.get("test_accuracy")
    return {
        "per_class": cfg["per_class"] or 6000,
        "budget_epochs": cfg["epochs"],
        "trials_planned": cfg["trials"],
        "time_limit_s": time_limit_s or None,
        "study_seconds": round(seconds, 1),
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "pruned": sum(1 for r in trials if r["state"] == "pruned"),
        "trials": trials,
        "default_test_accuracy": default_acc,
        # None: no trial completed (a time limit shorter than the default's training)
        "best_trial": best_row.get("number"),
        "best_params": best_row.get("params"),
        "best_test_accuracy": best_acc,
        "best_is_default": best_row.get("number") == 0,
        "best_at_least_default": (
            best_acc is not None and default_acc is not None and best_acc >= default_acc
        ),
    }


def _train_at(base, lr: float) -> dict[str, Any]:
    from lib import jobs, runstore

    cfg = base.replace(train=base.train.replace(learning_rate=float(lr)), name=f"lr {lr:.3g}")
    path = runstore.create_run(cfg)
    jobs.run_here(path, echo=False, claim=True)
    metrics = runstore.read_metrics(path)
    return {
        "learning_rate": float(lr),
        "test_accuracy": metrics.get("test_accuracy"),
        "best_val_accuracy": metrics.get("best_val_accuracy"),
        "state": runstore.read_status(path).state,
    }


def finder_vs_grid(size: str) -> dict[str, Any]:
    from lib import lr_finder

    cfg = SIZES[size]
    base = _base(cfg["per_class"], cfg["epochs"])
    found = lr_finder.find_lr(base, steps=cfg["steps"])
    suggestion = float(f"{found.suggestion:.2g}")
    grid = [_train_at(base, lr) for lr in cfg["grid"]]
    at_suggestion = _train_at(base, suggestion)
    best = max(grid, key=lambda r: r["test_accuracy"] or 0.0)
    gap = best["test_accuracy"] - at_suggestion["test_accuracy"]
    return {
        "per_class": cfg["per_class"] or 6000,
        "epochs": cfg["epochs"],
        "sweep_steps": cfg["steps"],
        "sweep_seconds": found.seconds,
        "suggestion": suggestion,
        "min_loss_lr": found.min_loss_lr,
        "at_suggestion": at_suggestion,
        "grid": grid,
        "best_grid_lr": best["learning_rate"],
        "gap_points": round(100 * gap, 2),
        "within_tolerance": gap <= FINDER_TOLERANCE,
    }


def two_workers(size: str) -> dict[str, Any]:
    from lib import runstore, tuning
    from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig

    base = RunConfig(
        data=DataConfig(source="digits"),
        model=ModelConfig(
            preset="custom", blocks=(ConvBlock(filters=8),), head=HeadConfig(dense=(16,))
        ),
        train=TrainConfig(epochs=1, batch_size=64, schedule="constant"),
    )
    n = SIZES[size]["w_trials"]
    spec = tuning.StudySpec(
        name=f"bench-workers-{size}",
        base=base,
        space={"train.learning_rate": {"low": 1e-3, "high": 3e-2}},
        n_trials=n,
        budget_epochs=1,
        pruner="none",
        seed=1,
    )
    old = os.environ.get("KESTREL_MAX_CONCURRENT_RUNS")
    os.environ["KESTREL_MAX_CONCURRENT_RUNS"] = "2"
    try:
        folder = tuning.run_study(spec, workers=2, echo=False)
    finally:
        if old is None:
            os.environ.pop("KESTREL_MAX_CONCURRENT_RUNS", None)
        else:
            os.environ["KESTREL_MAX_CONCURRENT_RUNS"] = old
    study = tuning.load_study(spec, folder)
    trials = study.get_trials(deepcopy=False)
    runs = [t.user_attrs.get("run_id") for t in trials]
    infos = [runstore.read_trial(runstore.run_dir(r)) if r else {} for r in runs]
    trial_runs = [
        p for p in runstore.list_run_dirs() if runstore.read_trial(p).get("study") == spec.name
    ]
    return {
        "workers": 2,
        "trials": len(trials),
        "trials_planned": n,
        "unique_numbers": len({t.number for t in trials}) == len(trials),
        "unique_trial_ids": len({t._trial_id for t in trials}) == len(trials),
        "unique_runs": len(set(runs)) == len(runs) and None not in runs,
        "runs_created": len(trial_runs),
        "distinct_params": len({json.dumps(t.params, sort_keys=True) for t in trials})
        == len(trials),
        "runs_name_their_trial": all(
            i.get("trial_number") == t.number for i, t in zip(infos, trials, strict=True)
        ),
        "states": sorted(t.state.name.lower() for t in trials),
    }


def run(size: str = "full") -> dict[str, Any]:
    """All three measurements; a JSON-ready dict."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    result: dict[str, Any] = {
        "size": size,
        # The load it ran under is recorded by python -m bench beside the result.
        "note": "single runs, fixed seeds",
    }
    result["two_workers"] = two_workers(size)
    result["finder_vs_grid"] = finder_vs_grid(size)
    result["study_vs_default"] = study_vs_default(size)
    return result
