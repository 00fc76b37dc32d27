"""Kestrel's command line: train headless and list runs, from the same library as the UI.

Usage::

    python -m lib train RUN.json [--run-dir DIR]   # a new run from a recipe file
    python -m lib train --run-dir DIR              # (re)start the run in DIR (resumes)
    python -m lib runs                             # list the runs of the workspace
    python -m lib stop RUN_ID | resume RUN_ID
    python -m lib health RUN_ID_OR_DATASET         # data health summary and review queue
    python -m lib dataset create|add|import|rename|merge|remove|list ...  # built datasets
    python -m lib ood fit MODEL                    # unknown detection for a model or run
    python -m lib robustness RUN_ID                # the robustness report of a run
    python -m lib export MODEL --format int8|float16|pruned|onnx|demo|...  [--tradeoff]

Runs are written to the workspace (``$KESTREL_HOME/runs``) unless ``--run-dir``
says otherwise, so runs made here appear in the UI. With ``TF_CONFIG`` set the
run trains with MultiWorkerMirroredStrategy; start the same command on every
worker, each with its own ``--run-dir``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lib import jobs, runs, runstore
from lib.config import RunConfig
from lib.errors import KestrelError
from lib.workspace import WorkspaceError


def _new_run_dir(config: RunConfig, run_dir: str | None) -> Path:
    if run_dir is None:
        return runstore.create_run(config)
    target = Path(run_dir).expanduser().resolve()
    if target.exists() and any(target.iterdir()):
        raise WorkspaceError(
            f"--run-dir {target} exists and is not empty; give a new folder, or leave out "
            "RUN.json to continue the run in it"
        )
    if target.exists():
        target.rmdir()
    target.parent.mkdir(parents=True, exist_ok=True)
    return runstore.create_run(config, root=target.parent, run_id=target.name)


def cmd_train(args: argparse.Namespace) -> int:
    from lib import hardware

    if getattr(args, "fine_tune", None):
        if args.config is not None:
            print("give RUN.json or --fine-tune RUN_ID, not both", file=sys.stderr)
            return 2
        from lib import fine_tune

        options = {
            "layers": args.layers,
            "epochs": args.epochs,
            "learning_rate": args.learning_rate,
        }
        config = fine_tune.fine_tune_recipe(
            args.fine_tune, **{k: v for k, v in options.items() if v is not None}
        )
        return _train_config(config, args.run_dir, hardware)
    if args.config is None:
        if args.run_dir is None:
            print("give RUN.json, --run-dir DIR, or both", file=sys.stderr)
            return 2
        path = Path(args.run_dir).expanduser().resolve()
        if not (path / runstore.CONFIG_FILE).is_file():
            print(f"{path} holds no {runstore.CONFIG_FILE}; is it a run folder?", file=sys.stderr)
            return 2
        # run_here tells, under the job lock, a worker the scheduler spawned for this
        # run (its pid recorded) from a person resuming the run by hand (claims it).
        return jobs.run_here(path, echo=True, claim=True)

    try:
        config = RunConfig.load(args.config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _train_config(config, args.run_dir, hardware)


def _train_config(config: RunConfig, run_dir: str | None, hardware) -> int:
    """Check ``config``, make its run folder and train it here."""
    try:
        if hardware.multi_worker_config() is None:
            # Refuse a recipe that cannot train before creating anything. (With
            # TF_CONFIG nothing may touch TensorFlow before the strategy exists;
            # the trainer validates again after it.)
            from lib.preflight import check_startable

            check_startable(config)
        path = _new_run_dir(config, run_dir)
    except ValueError as exc:  # RunConfigError, DatasetError, WorkspaceError: all user errors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"run {path.name} in {path}", flush=True)
    return jobs.run_here(path, echo=True, claim=True)


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_runs_table(rows: list[runs.RunView]) -> str:
    """The runs as a plain-text table."""
    header = ("ID", "STATE", "DATASET", "MODEL", "BEST VAL ACC", "EPOCHS", "DURATION", "STARTED")
    if any(r.study for r in rows):  # trials of a tuning study: which study and trial
        header = (*header, "STUDY")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.run_id,
                r.state,
                r.dataset,
                r.model,
                "-" if r.best_val_accuracy is None else f"{r.best_val_accuracy:.4f}",
                f"{r.epochs_done}/{r.epochs}",
                _fmt_duration(r.duration_s),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started or r.created)),
                *((r.study_label,) if len(header) > 8 else ()),
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def cmd_runs(args: argparse.Namespace) -> int:
    jobs.reap()
    rows = runs.list_views()
    if not rows:
        print("no runs yet")
        return 0
    print(format_runs_table(rows))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    jobs.request_stop(args.run_id)
    print(f"stop requested for {args.run_id}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    jobs.resume(args.run_id)
    print(f"{args.run_id} queued to resume")
    return 0


def cmd_ood_fit(args: argparse.Namespace) -> int:
    from lib import ood

    return ood.fit_here(args.model, echo=True)


def cmd_robustness(args: argparse.Namespace) -> int:
    from lib import robustness

    return robustness.run_report_here(args.run_id, echo=True)


def _add_unknown_and_robustness(sub) -> None:
    ood = sub.add_parser("ood", help="unknown detection").add_subparsers(dest="ood", required=True)
    fit = ood.add_parser("fit", help="fit unknown detection for a model (registry name or run id)")
    fit.add_argument("model")
    fit.set_defaults(func=cmd_ood_fit)
    rob = sub.add_parser("robustness", help="compute a run's robustness report")
    rob.add_argument("run_id")
    rob.set_defaults(func=cmd_robustness)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib", description="Kestrel command line")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_health(sub)
    _add_tuning(sub)
    train = sub.add_parser("train", help="train a run headless")
    train.add_argument("config", nargs="?", help="RunConfig JSON file")
    train.add_argument("--run-dir", help="run folder (default: a new one in the workspace)")
    train.add_argument(
        "--fine-tune",
        metavar="RUN_ID",
        help="phase two of transfer learning: start from this completed run's trained weights "
        "with the top of the backbone unfrozen (instead of a RunConfig file)",
    )
    train.add_argument("--layers", type=int, help="--fine-tune: backbone layers to unfreeze")
    train.add_argument("--epochs", type=int, help="--fine-tune: epochs")
    train.add_argument("--learning-rate", type=float, help="--fine-tune: constant learning rate")
    train.set_defaults(func=cmd_train)
    runs = sub.add_parser("runs", help="list runs")
    runs.set_defaults(func=cmd_runs)
    stop = sub.add_parser("stop", help="ask a run to stop after the current batch")
    stop.add_argument("run_id")
    stop.set_defaults(func=cmd_stop)
    res = sub.add_parser("resume", help="queue a stopped or failed run again")
    res.add_argument("run_id")
    res.set_defaults(func=cmd_resume)
    _add_unknown_and_robustness(sub)
    _add_export(sub)
    _add_dataset(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KestrelError as exc:  # JobError, WorkspaceError: a message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------- tuning (lib.tuning, lib.lr_finder)


def cmd_tune(args: argparse.Namespace) -> int:
    import dataclasses

    from lib import tuning

    spec = tuning.StudySpec.load(args.study)
    if args.storage:
        spec = dataclasses.replace(spec, storage=args.storage)
    print(f"study {spec.name}: {spec.n_trials} trials, {args.workers} worker(s)", flush=True)
    folder = tuning.run_study(spec, workers=args.workers)
    study = tuning.load_study(spec, folder)
    print(tuning.format_trials(tuning.trial_rows(study)))
    best = tuning.best_trial(study)
    if best is not None:
        print(f"best: trial {best.number}, val accuracy {best.value:.4f}, run {best_run(best)}")
    return 0


def best_run(trial) -> str:
    return trial.user_attrs.get("run_id", "-")


def cmd_lr_find(args: argparse.Namespace) -> int:
    from lib import lr_finder

    config = RunConfig.load(args.config)
    result = lr_finder.find_lr(config, steps=args.steps, echo=True)
    if args.out:
        result.save(Path(args.out))
    print(f"suggested learning rate: {result.suggestion:.3g}")
    return 0


def _add_tuning(sub) -> None:
    tune = sub.add_parser("tune", help="run a hyperparameter study (Optuna)")
    tune.add_argument("study", help="STUDY.json: name, base recipe, search space, budget")
    tune.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    tune.add_argument("--storage", help="SQLAlchemy URL shared by several machines")
    tune.set_defaults(func=cmd_tune)
    lrf = sub.add_parser("lr-find", help="learning-rate range test of a recipe")
    lrf.add_argument("config", help="RunConfig JSON file")
    lrf.add_argument("--steps", type=int, default=200, help="steps of the sweep")
    lrf.add_argument("--out", help="write the curve and suggestion to this JSON file")
    lrf.set_defaults(func=cmd_lr_find)


# ---------------------------------------------------------------- built datasets (lib.datasets)


def _print_version(name: str, version: int, what: str) -> None:
    from lib import datasets

    counts = datasets.class_counts(name, version)
    shown = ", ".join(f"{c} {n}" for c, n in counts.items()) or "no classes"
    print(f"{what}: {datasets.dataset_ref(name, version)} ({shown})")


def _local_files(paths: list[str]) -> list[tuple[str, int, object]]:
    out = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            raise WorkspaceError(f"{p} is not a file")
        out.append((path.name, path.stat().st_size, path.read_bytes))
    return out


def cmd_dataset(args: argparse.Namespace) -> int:
    """Build datasets on files as the Build a dataset page does; every edit is a new version."""
    from lib import datasets

    action, name = args.action, getattr(args, "name", None)
    if action == "list":
        for d in datasets.list_datasets():
            counts = ", ".join(f"{c} {n}" for c, n in d["classes"].items())
            print(f"{d['name']}@{d['latest']}  {d['images']} images  ({counts})")
        return 0
    if action == "show":
        base, _, ver = name.partition("@")
        for v in datasets.versions(base):
            if ver and int(ver) != v:
                continue
            info = datasets.version_info(base, v)
            _print_version(base, v, f"version {v}, {info.get('action', '')}")
        return 0
    if action == "delete":
        kept = datasets.delete_dataset(name)
        print(f"deleted dataset {name}")
        if kept:
            print(f"runs trained on it keep their models: {', '.join(kept)}")
        return 0
    if action == "create":
        classes = [c for c in (args.classes or "").split(",") if c.strip()]
        version = datasets.create_dataset(name, classes)
    elif action == "add-class":
        version = datasets.add_class(name, args.class_name)
    elif action == "add":
        version, skipped = datasets.add_images(name, args.class_name, _local_files(args.files))
        for file, reason in skipped:
            print(f"skipped {file}: {reason}", file=sys.stderr)
    elif action == "import":
        source = args.source
        if Path(source).expanduser().is_dir():
            version = datasets.import_folder(name, Path(source).expanduser(), f"folder {source}")
        else:
            version = datasets.import_upload(name, source)
    elif action == "rename":
        version = datasets.rename_class(name, args.old, args.new)
    elif action == "merge":
        version = datasets.merge_classes(name, args.sources, args.target)
    elif action == "delete-class":
        version = datasets.delete_class(name, args.class_name)
    else:  # remove
        version = datasets.remove_images(name, args.class_name, args.files)
    _print_version(name, version, "now")
    return 0


def _add_dataset(sub) -> None:
    ds = sub.add_parser("dataset", help="build a dataset: classes, images, versions")
    acts = ds.add_subparsers(dest="action", required=True)
    acts.add_parser("list", help="the built datasets and their newest versions")
    p = acts.add_parser("show", help="the versions of a dataset (NAME or NAME@VERSION)")
    p.add_argument("name")
    p = acts.add_parser("create", help="a new dataset")
    p.add_argument("name")
    p.add_argument("--classes", help="comma-separated class names to start with")
    p = acts.add_parser("add-class", help="add an empty class")
    p.add_argument("name")
    p.add_argument("class_name")
    p = acts.add_parser("add", help="add image files to a class (created if new)")
    p.add_argument("name")
    p.add_argument("class_name")
    p.add_argument("files", nargs="+")
    p = acts.add_parser("import", help="copy in a folder of class folders, or an upload id")
    p.add_argument("name")
    p.add_argument("source")
    p = acts.add_parser("rename", help="rename a class")
    p.add_argument("name")
    p.add_argument("old")
    p.add_argument("new")
    p = acts.add_parser("merge", help="merge classes into TARGET (created if new)")
    p.add_argument("name")
    p.add_argument("target")
    p.add_argument("sources", nargs="+")
    p = acts.add_parser("delete-class", help="delete a class and its images")
    p.add_argument("name")
    p.add_argument("class_name")
    p = acts.add_parser("delete", help="delete a dataset and all its versions")
    p.add_argument("name")
    p = acts.add_parser("remove", help="remove images (stored names, e.g. 000003.jpg)")
    p.add_argument("name")
    p.add_argument("class_name")
    p.add_argument("files", nargs="+")
    ds.set_defaults(func=cmd_dataset)


# ---------------------------------------------------------------- data health (lib.health)


def cmd_health(args: argparse.Namespace) -> int:
    """Check a run's dataset (or a dataset): print the summary, write the review queue."""
    from lib import health

    data, run_id = health.resolve_target(args.target)
    path = health.create_check(data, run_id=run_id, folds=args.folds, epochs=args.epochs)
    print(f"health check {path.name} of {args.target}", flush=True)
    code = health.run_check(path)
    status = health.check_status(path)
    if code != 0:
        print(f"error: {status.error}", file=sys.stderr)
        return 2
    report = health.read_report(path)
    print("images: " + ", ".join(f"{k} {v:,}" for k, v in report["sizes"].items()))
    for issue in health.ISSUE_TYPES:
        print(f"{health.ISSUE_LABELS[issue]}: {report['counts'].get(issue, 0):,}")
    queue = path / health.QUEUE_FILE
    if args.out:
        out = Path(args.out).expanduser()
        out.write_bytes(queue.read_bytes())
        queue = out
    print(f"review queue ({sum(report['counts'].values()):,} images, most likely problems "
          f"first): {queue}")  # fmt: skip
    return 0


def _add_health(sub) -> None:
    from lib import health as health_lib  # light: TensorFlow loads only when a check trains

    health = sub.add_parser(
        "health", help="data health: label issues, outliers, duplicates, train/test leakage"
    )
    health.add_argument("target", help="a run id, a built-in dataset name, or a class folder")
    health.add_argument(
        "--folds", type=int, default=health_lib.DEFAULT_FOLDS, help="cross-validation folds"
    )
    health.add_argument(
        "--epochs", type=int, default=health_lib.DEFAULT_EPOCHS, help="epochs per fold"
    )
    health.add_argument("--out", help="also write the review queue (CSV) to this file")
    health.set_defaults(func=cmd_health)


def _add_export(sub) -> None:
    from lib import compress

    export = sub.add_parser("export", help="export a model: TFLite variants, pruned, ONNX, demo")
    compress.add_export_arguments(export)
    export.set_defaults(func=compress.cli_export)
