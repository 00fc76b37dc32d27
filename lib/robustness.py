"""The robustness report of a run: accuracy under common corruptions and adversarial attacks.

    python -m lib robustness RUN_ID          # computes runs/<id>/robustness.json here
    start_report(run_id)                     # the same, as a background process (Evaluate page)
    read_report(run_dir)                     # the stored report, or None

The report takes up to :data:`REPORT_IMAGES` images of the run's held-out split
(test, else validation; the same seeded pick every time, so two runs on one
dataset are measured on the same images) and measures top-1 accuracy:

- clean;
- under seven common corruptions at three severities each (:data:`CORRUPTIONS`:
  Gaussian noise, blur, brightness, contrast, JPEG quality, rotation, occlusion;
  severities in the spirit of Hendrycks & Dietterich's ImageNet-C, scaled to the
  image size);
- under FGSM and PGD (lib.attacks) at ε = 1, 2, 4, 8 of 255.

It runs as a job like training: a process started in a new session, its status,
progress events and log in ``runs/<id>/robustness/``, the result in
``runs/<id>/robustness.json``. A run that was hardened (a clone with adversarial
or corruption training) is compared with the run it was cloned from:
:func:`compare` gives robust accuracy gained and clean accuracy lost.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lib import runstore
from lib.attacks import EPSILONS, METHODS, accuracy, adversarial_accuracy
from lib.errors import KestrelError

REPORT_IMAGES = 1000  # held-out images measured; enough for ±1.5 % at 95 % confidence
SEED = 0
FORMAT = 1
SEVERITIES = (1, 2, 3)


class RobustnessError(KestrelError):
    """The report cannot be computed; the message says what to do."""


# ---------------------------------------------------------------- corruptions


def _pil_each(images: np.ndarray, fn: Callable) -> np.ndarray:
    from PIL import Image

    out = np.empty_like(images)
    for i, img in enumerate(images):
        squeeze = img.shape[2] == 1
        pil = Image.fromarray(img[:, :, 0] if squeeze else img)
        res = np.asarray(fn(pil), np.uint8)
        out[i] = res[:, :, None] if squeeze else res
    return out


def gaussian_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (10.0, 20.0, 40.0)[severity - 1]
    return np.clip(images + rng.normal(0, sigma, images.shape), 0, 255).astype(np.uint8)


def blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import ImageFilter

    radius = (0.5, 1.0, 1.5)[severity - 1] * images.shape[1] / 32
    return _pil_each(images, lambda p: p.filter(ImageFilter.GaussianBlur(radius)))


def brightness(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    shift = (40.0, 80.0, 120.0)[severity - 1]
    return np.clip(images.astype(np.float32) + shift, 0, 255).astype(np.uint8)


def contrast(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    factor = (0.6, 0.4, 0.2)[severity - 1]
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip(mean + (x - mean) * factor, 0, 255).astype(np.uint8)


def jpeg(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    quality = (30, 15, 5)[severity - 1]

    def once(pil):
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert(pil.mode)

    return _pil_each(images, once)


def rotation(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    degrees = (10.0, 20.0, 30.0)[severity - 1]
    signs = rng.choice((-1.0, 1.0), len(images))
    angles = iter(signs * degrees)
    return _pil_each(images, lambda p: p.rotate(next(angles), Image.Resampling.BILINEAR))


def occlusion(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    share = (0.2, 0.3, 0.4)[severity - 1]
    out = images.copy()
    h, w = images.shape[1:3]
    side_h, side_w = max(1, round(h * share)), max(1, round(w * share))
    for img in out:
        top, left = rng.integers(0, h - side_h + 1), rng.integers(0, w - side_w + 1)
        img[top : top + side_h, left : left + side_w] = 128
    return out


# name -> (label, function(images uint8 NHWC, severity 1..3, rng) -> uint8 images)
CORRUPTIONS: dict[str, tuple[str, Callable]] = {
    "gaussian_noise": ("Gaussian noise (sd 10 / 20 / 40 levels)", gaussian_noise),
    "blur": ("Gaussian blur (radius 0.5 / 1 / 1.5 px per 32 px)", blur),
    "brightness": ("brightness (+40 / +80 / +120 levels)", brightness),
    "contrast": ("contrast (× 0.6 / 0.4 / 0.2)", contrast),
    "jpeg": ("JPEG quality (30 / 15 / 5)", jpeg),
    "rotation": ("rotation (± 10 / 20 / 30°)", rotation),
    "occlusion": ("occlusion (grey square, 20 / 30 / 40 % of the side)", occlusion),
}


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = SEED) -> np.ndarray:
    """``images`` (uint8 NHWC) under corruption ``name`` at ``severity`` 1..3."""
    if name not in CORRUPTIONS:
        raise RobustnessError(
            f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}"
        )
    if severity not in SEVERITIES:
        raise RobustnessError(f"severity must be 1, 2 or 3, not {severity}")
    rng = np.random.default_rng([seed, severity, list(CORRUPTIONS).index(name)])
    return CORRUPTIONS[name][1](np.asarray(images, np.uint8), severity, rng)


# ---------------------------------------------------------------- the report


def measure(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epsilons: tuple[float, ...] = EPSILONS,
    on_phase: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Accuracy clean, per corruption and severity, and per attack and ε, of raw uint8 images."""

    def phase(text: str) -> None:
        if on_phase:
            on_phase(text)

    phase("clean accuracy")
    result: dict[str, Any] = {"clean": accuracy(model, images, labels), "corruptions": {}}
    for name, (label, _) in CORRUPTIONS.items():
        phase(f"corruption: {name}")
        result["corruptions"][name] = {
            "label": label,
            "accuracy": [accuracy(model, corrupt(images, name, s), labels) for s in SEVERITIES],
        }
    result["attacks"] = {}
    for method in METHODS:
        accs = []
        for eps in epsilons:
            phase(f"attack: {method.upper()} ε = {eps}/255")
            accs.append(adversarial_accuracy(model, images, labels, method, eps, seed=SEED))
        result["attacks"][method] = {"epsilons": list(epsilons), "accuracy": accs}
    return result


def report_images(run_dir: Path, n: int = REPORT_IMAGES) -> tuple[np.ndarray, np.ndarray, str]:
    """The held-out images the report measures: a seeded pick of the test (else val) split."""
    from lib.data import load_dataset

    config = runstore.read_config(run_dir)
    ds = load_dataset(config.data)
    for split_name in ("test", "val"):
        split = ds.splits.get(split_name)
        if split is not None and len(split):
            idx = np.arange(len(split))
            if len(idx) > n:
                idx = np.sort(np.random.default_rng(SEED).choice(len(idx), n, replace=False))
            return split.images(idx), np.asarray(split.labels[idx], np.int64), split_name
    raise RobustnessError(
        f"run {run_dir.name}'s dataset has no test or validation images to measure robustness on"
    )


def compute_report(run_dir: Path, *, on_phase: Callable[[str], None] | None = None) -> dict:
    """Measure and store ``robustness.json`` of a completed run; returns the report."""
    from lib.registry import load_model_file

    run_dir = Path(run_dir)
    if not (run_dir / runstore.MODEL_FILE).is_file():
        raise RobustnessError(f"run {run_dir.name} has no model yet; wait until it completes")
    t0 = time.monotonic()
    if on_phase:
        on_phase("loading data and model")
    images, labels, split = report_images(run_dir)
    model = load_model_file(run_dir / runstore.MODEL_FILE)
    h, w, c = (int(s) for s in model.input_shape[1:4])
    if images.shape[1:] != (h, w, c):
        from lib.data.images import resize_image, to_channels

        images = np.stack([resize_image(to_channels(i, c), h, w) for i in images])
    report = measure(model, images, labels, on_phase=on_phase)
    report.update(
        format=FORMAT,
        run_id=run_dir.name,
        split=split,
        images=len(images),
        seconds=round(time.monotonic() - t0, 1),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        hardening=hardening_of(run_dir),
    )
    runstore.atomic_write_json(run_dir / runstore.ROBUSTNESS_FILE, report)
    return report


def read_report(run_dir: Path) -> dict | None:
    """The stored report of a run, or None (none yet, or unreadable)."""
    try:
        data = json.loads((Path(run_dir) / runstore.ROBUSTNESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def table_rows(report: dict) -> list[dict[str, Any]]:
    """One row per condition: kind, condition, severity or ε, accuracy, drop from clean."""
    clean = report["clean"]
    rows = [{"kind": "clean", "condition": "clean", "level": "", "accuracy": clean, "drop": 0.0}]
    for name, entry in report["corruptions"].items():
        for s, acc in zip(SEVERITIES, entry["accuracy"], strict=True):
            rows.append(
                {"kind": "corruption", "condition": name, "level": f"severity {s}",
                 "accuracy": acc, "drop": clean - acc}
            )  # fmt: skip
    for method, entry in report["attacks"].items():
        for eps, acc in zip(entry["epsilons"], entry["accuracy"], strict=True):
            rows.append(
                {"kind": "attack", "condition": method.upper(), "level": f"ε = {eps}/255",
                 "accuracy": acc, "drop": clean - acc}
            )  # fmt: skip
    return rows


def robust_accuracy(report: dict, method: str = "pgd", epsilon: float = 2) -> float | None:
    entry = report.get("attacks", {}).get(method)
    if not entry or epsilon not in entry["epsilons"]:
        return None
    return entry["accuracy"][entry["epsilons"].index(epsilon)]


def mean_corruption_accuracy(report: dict) -> float:
    accs = [a for e in report["corruptions"].values() for a in e["accuracy"]]
    return float(np.mean(accs)) if accs else float("nan")


def compare(base: dict, hardened: dict) -> dict[str, float | None]:
    """What hardening bought: robust accuracy gained, clean accuracy lost (fractions)."""
    out: dict[str, float | None] = {
        "clean_lost": base["clean"] - hardened["clean"],
        "corruption_gained": mean_corruption_accuracy(hardened) - mean_corruption_accuracy(base),
    }
    for method in METHODS:
        b, h = robust_accuracy(base, method), robust_accuracy(hardened, method)
        out[f"{method}_eps2_gained"] = None if b is None or h is None else h - b
    return out


# ---------------------------------------------------------------- hardening clones


HARDENED_FROM_KEY = "hardened_from"  # in the clone's run name note (config.name)


def hardening_of(run_dir: Path) -> dict[str, Any]:
    """The hardening settings of a run's recipe (all off for an ordinary run)."""
    aug = runstore.read_config(run_dir).augment
    return {
        "adversarial_epsilon": aug.adversarial_epsilon,
        "adversarial_steps": aug.adversarial_steps,
        "corruption": aug.corruption,
    }


HARDENING_METHODS = {
    # label -> AugmentConfig changes
    "FGSM adversarial training (ε = 2/255)": {"adversarial_epsilon": 2.0, "adversarial_steps": 0},
    "PGD adversarial training (ε = 2/255, 3 steps)": {
        "adversarial_epsilon": 2.0, "adversarial_steps": 3,
    },
    "Corruption augmentation (half the images)": {"corruption": 0.5},
    "FGSM + corruption augmentation": {
        "adversarial_epsilon": 2.0, "adversarial_steps": 0, "corruption": 0.5,
    },
}  # fmt: skip


def hardened_clone(run_id: str, method: str, *, start: bool = True) -> str:
    """A clone of ``run_id`` whose recipe trains hardened; queued when ``start``. Its id.

    Raises:
        RobustnessError: unknown method.
    """
    from lib import jobs

    if method not in HARDENING_METHODS:
        raise RobustnessError(
            f"unknown hardening {method!r}; choose one of {list(HARDENING_METHODS)}"
        )
    source = runstore.run_dir(run_id)
    config = runstore.read_config(source)
    augment = config.augment.replace(**HARDENING_METHODS[method])
    name = f"{config.name or run_id} · hardened"
    config = config.replace(augment=augment, name=name[:120])
    new_id = jobs.start_run(config) if start else runstore.create_run(config).name
    runstore.atomic_write_json(
        runstore.run_dir(new_id) / HARDENED_FILE, {"source_run": run_id, "method": method}
    )
    return new_id


HARDENED_FILE = "hardened_from.json"  # in a hardened clone's folder: the run it came from


def hardened_from(run_dir: Path) -> str | None:
    """The id of the run a hardened clone came from, or None."""
    try:
        data = json.loads((Path(run_dir) / HARDENED_FILE).read_text(encoding="utf-8"))
        return str(data["source_run"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- the job


def job_dir(run_dir: Path) -> Path:
    return Path(run_dir) / runstore.ROBUSTNESS_DIR


def job_status(run_dir: Path):
    """The report job's status (a RunStatus), or None if never started; a dead worker reads failed."""
    from lib import jobs

    folder = job_dir(run_dir)
    if not (folder / runstore.STATUS_FILE).is_file():
        return None
    return jobs.side_job_status(folder, "the report")


def latest_phase(run_dir: Path) -> str:
    from lib.progress import PhaseEvent, read_events

    phases = [e.phase for e in read_events(job_dir(run_dir)) if isinstance(e, PhaseEvent)]
    return phases[-1] if phases else ""


def start_report(run_id: str) -> None:
    """Start the report of a completed run as a background process (refused while one runs)."""
    from lib import jobs

    run_dir = runstore.run_dir(run_id)
    if runstore.read_status(run_dir).state != "completed":
        raise RobustnessError(f"run {run_id} is not completed; a report needs its final model")
    status = job_status(run_dir)
    if status is not None and status.state == "running":
        raise RobustnessError("the robustness report of this run is being computed already")
    folder = job_dir(run_dir)
    folder.mkdir(exist_ok=True)
    (folder / runstore.PROGRESS_FILE).unlink(missing_ok=True)
    jobs.start_side_job(folder, ["-m", "lib", "robustness", run_id])


def run_report_here(run_id: str, *, echo: bool = False) -> int:
    """Compute the report in this process, recording status and progress; an exit code."""
    from lib import jobs

    run_dir = runstore.run_dir(run_id)
    if not run_dir.is_dir():
        print(f"error: no run {run_id!r}; see `python -m lib runs`", file=sys.stderr)
        return 2
    state, error, report = jobs.run_side_job(
        job_dir(run_dir), lambda phase: compute_report(run_dir, on_phase=phase), echo=echo
    )
    if report is not None and echo:
        for row in table_rows(report):
            print(f"{row['condition']:<16} {row['level']:<12} {row['accuracy']:.4f}")
    if error:
        print(f"error: {error}", file=sys.stderr)
    return 0 if state == "completed" else 1
