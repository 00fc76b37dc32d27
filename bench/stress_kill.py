"""Stress: SIGKILL training workers at random moments, many times, and count what is lost.

    python -m bench.stress_kill                 # full: 4 runs × 6 kills each
    python -m bench.stress_kill --size tiny     # 1 run × 3 kills, to check it works
    KESTREL_FAULT_SEED=123 python -m bench.stress_kill   # replay one sequence

Each run (digits, a one-block CNN, a few seconds per epoch) is started through
lib.jobs like the Train page does, killed with SIGKILL at a random moment of its
life — while TensorFlow imports, mid-epoch, right as an epoch ends (checkpoints
being written), or after training (evaluation, predictions) — reaped by
``jobs.poll()`` (what the live panel calls), and resumed with ``jobs.resume``.
After its last kill it must complete, keep exactly one history row per epoch, and
leave a model.keras that loads in safe mode.

``run(size)`` returns a JSON-ready dict: kills, reap times, epochs lost per kill,
runs completed and runs lost; ``markdown(result)`` renders it. The loop is bounded:
at most ``runs × kills`` kills and ``runs × (kills + 1)`` worker starts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from lib.progress import BatchEvent, EpochEvent, Event, PhaseEvent, StartEvent, read_events

SIZES = {
    "tiny": {"runs": 1, "kills": 3, "epochs": 10},
    "full": {"runs": 4, "kills": 6, "epochs": 15},
}
POINTS = ("startup", "mid_training", "epoch_end", "after_training")
REAP_BOUND_S = 10.0
WORKER_TIMEOUT_S = 300.0


def _events(run: Path, since: float = 0.0) -> list[Event]:
    """The run's progress events written at or after ``since`` (lib.progress)."""
    return [e for e in read_events(run) if e.time >= since]


def _history(run: Path) -> list[int]:
    try:
        with open(run / "history.csv", newline="", encoding="utf-8") as fh:
            return [int(r["epoch"]) for r in csv.DictReader(fh) if r.get("epoch", "").isdigit()]
    except OSError:
        return []


def _backup_epoch(run: Path) -> int:
    try:
        meta = json.loads((run / "backup" / "training_metadata.json").read_text("utf-8"))
        return int(meta["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _epochs_seen(run: Path, since: float) -> int:
    """Finished epochs as the UI saw them: the attempt's start epoch + its epoch events."""
    evs = _events(run, since)
    starts = [i for i, e in enumerate(evs) if isinstance(e, StartEvent)]
    if not starts:
        return _backup_epoch(run)
    evs = evs[starts[-1] :]
    return evs[0].initial_epoch + sum(1 for e in evs if isinstance(e, EpochEvent))


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _reach(run: Path, point: str, rng: random.Random, since: float, state) -> str:
    """Wait for ``point`` in the current attempt; returns what was reached."""
    if point == "startup":
        delay = rng.uniform(0.0, 3.0)
        time.sleep(delay)
        return f"startup+{delay:.1f}s"
    if point == "mid_training":

        def training():
            return any(isinstance(e, BatchEvent) for e in _events(run, since))

        _wait(lambda: training() or state() != "running", WORKER_TIMEOUT_S)
        delay = rng.uniform(0.0, 1.5)
        time.sleep(delay)
        return f"training+{delay:.1f}s"
    if point == "epoch_end":

        def ended():
            return any(isinstance(e, EpochEvent) for e in _events(run, since))

        _wait(lambda: ended() or state() != "running", WORKER_TIMEOUT_S)
        return "epoch_end"

    def after():  # evaluation or predictions of a run whose epochs are all done
        return any(
            isinstance(e, PhaseEvent) and e.phase in ("evaluating", "computing predictions")
            for e in _events(run, since)
        )

    _wait(lambda: after() or state() != "running", WORKER_TIMEOUT_S)
    return "after_training"


def _tiny_config(epochs: int, name: str):
    from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        name=name,
        data=DataConfig(source="digits"),
        model=ModelConfig(
            preset="custom", blocks=(ConvBlock(filters=8),), head=HeadConfig(dense=(16,))
        ),
        train=TrainConfig(epochs=epochs, batch_size=16, schedule="constant"),
    )


def _one_run(index: int, kills: int, epochs: int, rng: random.Random) -> dict:
    from lib import jobs, runstore

    run = runstore.run_dir(jobs.start_run(_tiny_config(epochs, f"stress {index}"), validate=False))

    def state() -> str:
        return runstore.read_status(run).state

    log, since, crash = [], time.time(), ""
    # After-training kills end a run's training, so only its last kill may be one.
    points = [rng.choice(POINTS[:-1]) for _ in range(kills - 1)] + [rng.choice(POINTS)]
    for point in points:
        where = _reach(run, point, rng, since, state)
        status = runstore.read_status(run)
        if status.state != "running":
            break
        os.kill(status.pid, signal.SIGKILL)
        t0 = time.monotonic()
        reaped = _wait(lambda: (jobs.poll(), state() == "failed")[1], REAP_BOUND_S)
        reap_s = time.monotonic() - t0
        seen = max(_epochs_seen(run, since), len(_history(run)))
        resume_from = _backup_epoch(run)
        lost = max(0, seen - resume_from)
        log.append(
            {
                "kind": point,
                "point": where,
                "reaped": reaped,
                "reap_s": round(reap_s, 3),
                "seen": seen,
                "resume_from": resume_from,
                "epochs_lost": lost,
            }
        )
        if not reaped:
            crash = f"not reaped within {REAP_BOUND_S}s"
            break
        jobs.resume(run.name)
        since = time.time()
    ok = _wait(lambda: (jobs.poll(), state() not in ("queued", "running"))[1], WORKER_TIMEOUT_S)
    status = runstore.read_status(run)
    completed = ok and status.state == "completed"
    history_ok = _history(run) == list(range(epochs))
    model_ok = False
    if completed:
        try:
            import keras

            keras.saving.load_model(run / "model.keras", safe_mode=True)
            model_ok = True
        except Exception as exc:  # a model that does not load is a lost run
            crash = f"model.keras does not load: {type(exc).__name__}: {exc}"
    if not completed and not crash:
        crash = f"ended {status.state}: {status.error[:300]}"
    return {
        "run": run.name,
        "kills": log,
        "state": status.state,
        "attempts": status.attempts,
        "history_ok": history_ok,
        "model_loads": model_ok,
        "problem": crash,
    }


def run(size: str = "full", seed: int | None = None) -> dict:
    """Kill, reap and resume runs; returns the counts (see the module docstring)."""
    spec = SIZES[size]
    seed = int(os.environ.get("KESTREL_FAULT_SEED", seed if seed is not None else time.time_ns()))
    seed %= 2**31
    rng = random.Random(seed)
    home = tempfile.mkdtemp(prefix="kestrel-stress-")
    os.environ["KESTREL_HOME"] = home
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.monotonic()
    runs = [_one_run(i, spec["kills"], spec["epochs"], rng) for i in range(spec["runs"])]
    kills = [k for r in runs for k in r["kills"]]
    lost = [
        r for r in runs if r["state"] != "completed" or not r["model_loads"] or not r["history_ok"]
    ]
    return {
        "size": size,
        "seed": seed,
        "workspace": home,
        "runs": len(runs),
        "kills": len(kills),
        "kills_by_point": {p: sum(1 for k in kills if k["kind"] == p) for p in POINTS},
        "reaped_within_bound": sum(1 for k in kills if k["reaped"]),
        "max_reap_s": max((k["reap_s"] for k in kills), default=None),
        "max_epochs_lost": max((k["epochs_lost"] for k in kills), default=0),
        "runs_completed": sum(1 for r in runs if r["state"] == "completed"),
        "runs_lost": len(lost),
        "problems": [r["problem"] for r in runs if r["problem"]],
        "seconds": round(time.monotonic() - t0, 1),
        "detail": runs,
    }


def markdown(result: dict) -> str:
    return "\n".join(
        [
            f"SIGKILL stress ({result['size']}, seed {result['seed']}): {result['kills']} kills "
            f"over {result['runs']} runs in {result['seconds']} s.",
            "",
            "| kills | reaped ≤ 10 s | max reap s | max epochs lost | completed | lost |",
            "|---|---|---|---|---|---|",
            f"| {result['kills']} | {result['reaped_within_bound']} | {result['max_reap_s']} | "
            f"{result['max_epochs_lost']} | {result['runs_completed']} | {result['runs_lost']} |",
            "",
            "Problems: " + ("; ".join(result["problems"]) or "none"),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    result = run(args.size, args.seed)
    print(json.dumps({k: v for k, v in result.items() if k != "detail"}, indent=2))
    print(markdown(result))
    return 0 if result["runs_lost"] == 0 and result["max_epochs_lost"] <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
