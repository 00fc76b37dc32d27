"""The learning-rate finder: an exponential sweep of the learning rate, loss against rate.

Leslie Smith's range test (as in fastai's ``lr_find``): train the recipe's model
from its initial weights for a few hundred steps while the learning rate grows
exponentially from ``min_lr`` to ``max_lr``, record the loss of every step
(smoothed), stop when it diverges, and suggest a rate. The suggestion is the
rate of the smoothed loss's minimum divided by 10: still on the steep, falling
part of the curve, a step back from where training turns unstable.

    result = find_lr(RunConfig.load("run.json"), steps=200)
    result.suggestion          # e.g. 2.1e-3

The sweep uses the recipe's data pipeline (augmentation included), model and
optimizer at a constant rate; nothing of it is kept. The Train page runs it in
a background process (``python -m lib.lr_finder FOLDER``, see
:func:`start_background`) so a rerun or a closed tab does not lose it and the
page stays responsive; ``python -m lib lr-find RUN.json`` runs it in the
foreground.

Importing this module does not import TensorFlow; :func:`find_lr` does.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lib import jobs, runstore
from lib.config import TRANSFER_PRESETS, RunConfig
from lib.errors import KestrelError
from lib.workspace import area, safe_join

DEFAULT_STEPS = 200
MIN_LR = 1e-6
MAX_LR = 1.0
SMOOTHING = 0.9  # exponential moving average of the loss (bias-corrected)
DIVERGE_FACTOR = 4.0  # stop once the smoothed loss is this many times its minimum

CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
# A background sweep is a side job (lib.jobs): status.json, log.txt, and its steps as
# phase events in progress.jsonl. Files an older version wrote, removed at a new start:
OLD_FILES = ("progress.json", "error.json", "pid.json")
SWEEP_PHASE = "sweeping"


class LRFinderError(KestrelError):
    """A sweep that cannot run or found nothing; the message says what to change."""


@dataclass
class LRFindResult:
    """The sweep's curve and its suggestion."""

    learning_rates: list[float]
    losses: list[float]  # smoothed loss of each step
    raw_losses: list[float]
    suggestion: float
    min_loss_lr: float  # the rate at the smoothed loss's minimum
    diverged: bool  # the sweep stopped before max_lr because the loss blew up
    seconds: float

    def save(self, path: Path) -> None:
        runstore.atomic_write_json(Path(path), asdict(self))

    @classmethod
    def load(cls, path: Path) -> LRFindResult:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def sweep_rates(steps: int, min_lr: float = MIN_LR, max_lr: float = MAX_LR) -> list[float]:
    """``steps`` rates growing exponentially from ``min_lr`` to ``max_lr``."""
    if steps < 2:
        raise LRFinderError(f"the sweep needs at least 2 steps, got {steps}")
    if not 0 < min_lr < max_lr:
        raise LRFinderError(
            f"the sweep needs 0 < lowest rate < highest rate, got {min_lr}, {max_lr}"
        )
    ratio = max_lr / min_lr
    return [min_lr * ratio ** (i / (steps - 1)) for i in range(steps)]


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average (NaN and inf pass through as inf)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        if not math.isfinite(loss):
            out.append(math.inf)
            continue
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def suggest(learning_rates: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(suggested rate, rate at the minimum) of a sweep: the minimum's rate over 10.

    The first tenth of the sweep is skipped (the moving average is still settling).

    Raises:
        LRFinderError: too few finite points to read a minimum from.
    """
    start = max(1, len(smoothed) // 10)
    finite = [(loss, i) for i, loss in enumerate(smoothed) if i >= start and math.isfinite(loss)]
    if len(finite) < 3:
        raise LRFinderError(
            "the loss diverged at once: the sweep found no falling part. Check the data, "
            "or start the sweep lower"
        )
    _, best = min(finite)
    min_lr = learning_rates[best]
    return max(min_lr / 10, learning_rates[0]), min_lr


def _sweep_callback(rates: list[float], on_step=None):
    import keras

    class Sweep(keras.callbacks.Callback):
        """Sets the rate of each step and records that step's own loss."""

        def __init__(self):
            super().__init__()
            self.raw: list[float] = []
            self.smoothed: list[float] = []
            self.best = math.inf
            self.diverged = False

        def on_train_batch_begin(self, batch, logs=None):
            self.model.optimizer.learning_rate.assign(rates[len(self.raw)])

        def on_train_batch_end(self, batch, logs=None):
            loss = float((logs or {}).get("loss", math.nan))
            # Keras averages the loss over the epoch so far: reset, so each step's is its own.
            for metric in self.model.metrics:
                metric.reset_state()
            self.raw.append(loss)
            self.smoothed = smooth(self.raw)
            value = self.smoothed[-1]
            if math.isfinite(value):
                self.best = min(self.best, value)
            if not math.isfinite(value) or (
                len(self.raw) > len(rates) // 10 and value > DIVERGE_FACTOR * self.best
            ):
                self.diverged = True
                self.model.stop_training = True
            if on_step:
                on_step(len(self.raw), len(rates))

    return Sweep()


def find_lr(
    config: RunConfig,
    *,
    steps: int = DEFAULT_STEPS,
    min_lr: float = MIN_LR,
    max_lr: float = MAX_LR,
    echo: bool = False,
    on_step=None,
) -> LRFindResult:
    """Run the range test of ``config``'s recipe and suggest a learning rate.

    Args:
        config: the recipe (its data, augmentation, model and optimizer are used;
            its schedule and learning rate are not).
        steps: optimizer steps of the sweep (the training split repeats as needed).
        min_lr, max_lr: the sweep's first and last rate.
        echo: print progress.
        on_step: called with (steps done, steps planned).

    Raises:
        lib.training.RunConfigError, lib.data.DatasetError: the recipe cannot train.
        LRFinderError: the loss diverged at once.
    """
    from lib import hardware

    with hardware.keep_dtype_policy():
        return _find_lr(config, steps, min_lr, max_lr, echo, on_step)


def _find_lr(config, steps, min_lr, max_lr, echo, on_step) -> LRFindResult:
    import keras

    from lib import hardware
    from lib.training.run import build_and_compile, prepare_data

    t0 = time.monotonic()
    rates = sweep_rates(steps, min_lr, max_lr)
    cfg = config.replace(train=config.train.replace(schedule="constant", learning_rate=min_lr))
    hw = hardware.configure(
        cfg.train.device,
        cfg.train.mixed_precision,
        imagenet_backbone=cfg.model.preset in TRANSFER_PRESETS,
    )
    keras.utils.set_random_seed(cfg.train.seed)
    data = prepare_data(cfg)
    model = build_and_compile(cfg, data, hw)

    def step(done: int, total: int) -> None:
        if echo and (done % 20 == 0 or done == total):
            print(f"lr-find: step {done}/{total}", flush=True)
        if on_step:
            on_step(done, total)

    sweep = _sweep_callback(rates, step)
    model.fit(
        data.train.repeat(),
        steps_per_epoch=steps,
        epochs=1,
        callbacks=[sweep],
        class_weight=data.class_weight,
        shuffle=False,
        verbose=0,
    )
    done = len(sweep.raw)
    suggestion, at_min = suggest(rates[:done], sweep.smoothed)
    return LRFindResult(
        learning_rates=rates[:done],
        losses=[v if math.isfinite(v) else None for v in sweep.smoothed],  # type: ignore[misc]
        raw_losses=[v if math.isfinite(v) else None for v in sweep.raw],  # type: ignore[misc]
        suggestion=float(suggestion),
        min_loss_lr=float(at_min),
        diverged=sweep.diverged,
        seconds=round(time.monotonic() - t0, 2),
    )


# ---------------------------------------------------------------------------
# In the background (the Train page)


def folder_for(key: str) -> Path:
    """The sweep folder of ``key`` (a draft id) in the workspace."""
    return safe_join(area("lr_finder"), key)


def start_background(config: RunConfig, key: str, *, steps: int = DEFAULT_STEPS) -> Path:
    """Start a sweep of ``config`` in its own process; its files go to :func:`folder_for`.

    Raises:
        LRFinderError: a sweep for ``key`` is running already.
    """
    from lib.progress import PhaseEvent, append_event

    folder = folder_for(key)
    folder.mkdir(parents=True, exist_ok=True)
    if state(folder)["state"] == "running":
        raise LRFinderError("a learning-rate sweep is running already; wait for it to finish")
    for name in (RESULT_FILE, runstore.PROGRESS_FILE, runstore.LOG_FILE, *OLD_FILES):
        (folder / name).unlink(missing_ok=True)
    runstore.atomic_write_bytes(folder / CONFIG_FILE, (config.to_json() + "\n").encode("utf-8"))
    append_event(folder, PhaseEvent(phase=SWEEP_PHASE, done=0, total=steps))
    jobs.start_side_job(folder, ["-m", "lib.lr_finder", str(folder), str(steps)])
    return folder


def state(folder: Path) -> dict[str, Any]:
    """{"state": "none" | "running" | "done" | "failed", "done", "total", "error", "result"}.

    A "running" sweep whose process is gone reads failed (lib.jobs.side_job_status).
    """
    from lib.progress import PhaseEvent, iter_events

    folder = Path(folder)
    out: dict[str, Any] = {"state": "none", "done": 0, "total": 0, "error": "", "result": None}
    if not (folder / runstore.STATUS_FILE).is_file():
        if (folder / RESULT_FILE).is_file():  # a sweep an older version ran: its result
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                out.update(state="done", result=LRFindResult.load(folder / RESULT_FILE))
        return out
    status = jobs.side_job_status(folder, "the sweep")
    steps = [e for e in iter_events(folder, 4096) if isinstance(e, PhaseEvent) and e.total]
    if steps:
        out.update(done=steps[-1].done, total=steps[-1].total)
    if status.state == "completed":
        try:
            out.update(state="done", result=LRFindResult.load(folder / RESULT_FILE))
        except (OSError, ValueError, KeyError, TypeError):
            out.update(state="failed", error="the sweep's result is unreadable; run it again")
    elif status.state == "failed":
        out.update(state="failed", error=status.error or "the sweep failed")
    else:  # queued (being started) or running
        out["state"] = "running"
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m lib.lr_finder FOLDER [STEPS]``: the background sweep of FOLDER/config.json."""
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0])
    steps = int(args[1]) if len(args) > 1 else DEFAULT_STEPS

    def work(phase) -> None:
        last = [0.0]

        def on_step(done: int, total: int) -> None:
            if time.monotonic() - last[0] > 0.5 or done == total:
                phase(SWEEP_PHASE, done=done, total=total)
                last[0] = time.monotonic()

        config = RunConfig.load(str(folder / CONFIG_FILE))
        find_lr(config, steps=steps, echo=True, on_step=on_step).save(folder / RESULT_FILE)

    outcome, _, _ = jobs.run_side_job(folder, work)
    return 0 if outcome == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())


def result_figure(result: LRFindResult) -> Any:
    """Plotly figure: smoothed loss against learning rate (log axis), the suggestion marked."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_scatter(
        x=result.learning_rates, y=result.raw_losses, mode="lines", name="loss per step",
        line={"color": "rgba(120,120,120,0.35)", "width": 1},
    )  # fmt: skip
    fig.add_scatter(x=result.learning_rates, y=result.losses, mode="lines", name="smoothed loss")
    fig.add_vline(
        x=result.suggestion, line_dash="dash", line_color="green",
        annotation_text=f"suggested {result.suggestion:.2g}",
    )  # fmt: skip
    finite = [v for v in result.losses if v is not None]
    if finite:  # keep the divergence from flattening the interesting part
        low, high = min(finite), finite[0]
        fig.update_yaxes(range=[low - 0.1 * (high - low + 1e-9), max(high, low) * 1.3])
    fig.update_xaxes(type="log", title="learning rate")
    fig.update_yaxes(title="loss")
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig
