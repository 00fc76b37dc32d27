"""Measured figures, read from bench/results/ (the only place they are written down).

``make bench`` (``python -m bench``) writes ``bench/results/<machine>-<date>.json``.
Texts that quote a measurement (the recipe and preset descriptions) build their
sentence here from the newest of those files that measured it, so a new measurement changes every
text at once and none can disagree with the results. Where nothing was measured,
the sentence points to bench/results.

    from lib.measured import recipe_figures, recipe_sentence
    recipe_figures("fast")    # RecipeFigures(test_accuracy=0.9212, train_seconds=38.75, ...)
    recipe_sentence("fast")   # "Measured: 92.1 % test accuracy on Fashion-MNIST after ..."
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib import hardware
from lib.workspace import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
TINY_SUFFIX = "-tiny.json"  # smoke runs of the benchmarks on tiny data: not figures to quote
SEE_RESULTS = "Measured figures: see bench/results."
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "digits": "digits"}


@dataclass(frozen=True)
class RecipeFigures:
    """What the time-to-accuracy benchmark measured for one recipe."""

    recipe: str
    dataset: str  # as the benchmark names it ("fashion_mnist")
    test_accuracy: float  # the final model's test accuracy
    epochs: float  # epochs trained (fewer than planned when the time budget ran out)
    train_seconds: float  # wall-clock training time
    cores: int | None  # CPU cores of the machine
    gpus: int  # GPUs of the machine
    date: str  # when it was measured (YYYY-MM-DD)
    source: str  # the results file, relative to the project
    load: float | None = None  # the 1-minute load average when its training started
    # Test accuracy thresholds reached, each with the training seconds it took ("0.93": 140.2).
    seconds_to: tuple[tuple[str, float], ...] = ()
    repeats: int = 1  # trainings the figures are medians of
    epochs_planned: int | None = None  # the recipe's epochs, where a budget may stop it sooner
    tier: str = ""  # the machine's best vector extension (lib.hardware.VECTOR_TIERS)

    @property
    def stopped_early(self) -> bool:
        """Whether the benchmark's time budget stopped the training before its last epoch
        (a run stopped within its last epoch, 19.98 of 20, counts as finished)."""
        return bool(self.epochs_planned) and self.epochs < self.epochs_planned - 0.5

    @property
    def best_reached(self) -> tuple[float, float] | None:
        """(highest accuracy threshold reached, training seconds to it), or None."""
        if not self.seconds_to:
            return None
        key, seconds = max(self.seconds_to, key=lambda kv: float(kv[0]))
        return float(key), seconds


_cache: dict[str, tuple[tuple, list[dict[str, Any]]]] = {}
_lock = threading.Lock()


def _result_files(results_dir: Path) -> list[Path]:
    try:
        files = [p for p in results_dir.glob("*.json") if not p.name.endswith(TINY_SUFFIX)]
    except OSError:
        return []
    return sorted(files)


def report_order(report: dict, file_name: str) -> tuple[str, str, str]:
    """How results files rank, oldest first: by ``date``, then the time it was last
    ``written`` (two machines may both write on one date; files from before that field
    rank first within their date), then file name."""
    return (str(report.get("date", "")), str(report.get("written", "")), file_name)


def all_results(results_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every results file's contents, newest first (``report_order``).

    Each report gets ``_source``: its path relative to the project. Read once and
    kept until a results file is added, removed or changed.
    """
    results_dir = Path(results_dir or RESULTS_DIR)
    files = _result_files(results_dir)
    key = tuple((str(p), _mtime(p)) for p in files)
    with _lock:
        hit = _cache.get(str(results_dir))
    if hit is not None and hit[0] == key:
        return hit[1]
    ranked = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            ranked.append((report_order(data, path.name), {**data, "_source": _relative(path)}))
    reports = [report for _, report in sorted(ranked, key=lambda r: r[0], reverse=True)]
    with _lock:
        _cache[str(results_dir)] = (key, reports)
    return reports


def latest_results(results_dir: Path | None = None) -> dict[str, Any] | None:
    """The newest results file's contents, or None if there is none."""
    reports = all_results(results_dir)
    return reports[0] if reports else None


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def recipe_figures(
    recipe: str, results_dir: Path | None = None, tier: str | None = None
) -> RecipeFigures | None:
    """The newest time-to-accuracy figures of ``recipe`` (a lib.recipes name), or None.

    A run of ``make bench`` may measure only some benchmarks, so this is the newest
    results file that measured this recipe, not necessarily the newest file. With
    ``tier`` (a CPU's best vector extension), a file of a machine of that tier comes
    first: the figures of a CPU like this server's, where there are some.
    """
    found = [f for r in all_results(results_dir) if (f := _recipe_figures(r, recipe))]
    if tier:
        same = [f for f in found if f.tier == tier]
        if same:
            return same[0]
    return found[0] if found else None


def schedule_sentence(recipe: str, tier: str, results_dir: Path | None = None) -> str:
    """How long ``recipe``'s whole schedule trains on a CPU of ``tier``, from that tier's
    measurement ("" where none): the benchmark's figures, or, where its time budget stopped
    the training early, its pace carried over the remaining epochs."""
    fig = recipe_figures(recipe, results_dir, tier)
    if fig is None or fig.tier != tier or fig.gpus or not fig.epochs or not fig.epochs_planned:
        return ""
    words = hardware.tier_words(tier)
    where = f"on {fig.cores} CPU cores{f' with {words}' if words else ''} ({fig.source})"
    if not fig.stopped_early:
        return f"its {fig.epochs_planned} epochs took {_duration(fig.train_seconds)} {where}."
    total = fig.train_seconds * fig.epochs_planned / fig.epochs
    about = _duration(total) if total < 600 else f"{total / 60:.0f} min"  # an estimate
    return (
        f"its {fig.epochs_planned} epochs take about {about} {where}, at the pace of the "
        f"{fig.epochs:.1f} epochs its benchmark trained in {_duration(fig.train_seconds)}."
    )


def describe_model(m) -> str:
    """A ModelConfig in a few words (custom CNNs spelled out), as the results name it."""
    if m.preset != "custom":
        dropout = f", dropout {m.dropout:g}" if m.dropout else ""
        return f"{m.preset} (width {m.width:g}{dropout})"
    blocks = " → ".join(
        f"conv{b.filters}×{b.convs}{'' if b.stride == 1 else f'/s{b.stride}'}"
        f"{'+BN' if b.batch_norm else ''}{'' if b.pool == 'none' else f' {b.pool}-pool'}"
        for b in m.blocks
    )
    dense = "".join(f" → dense {u}" for u in m.head.dense)
    return f"custom: {blocks} → {m.head.pooling}{dense}"


def describe_recipe(cfg) -> str:
    """A RunConfig's model and training in a few words: the time-to-accuracy results'
    ``description`` (which then adds the validation share)."""
    t = cfg.train
    return (
        f"{describe_model(cfg.model)}, {t.optimizer} lr {t.learning_rate:g} {t.schedule}, "
        f"batch {t.batch_size}, {t.epochs} epochs, label smoothing {t.label_smoothing:g}, "
        f"weight decay {t.weight_decay:g}, augmentation {cfg.augment.preset}, "
        f"TTA flip {'on' if t.tta_flip else 'off'}"
    )


def recipe_identity(cfg) -> dict[str, Any]:
    """What a recipe trains with, apart from its data: stored with each measurement."""
    return {
        "model": cfg.model.to_dict(),
        "augment": cfg.augment.to_dict(),
        "train": cfg.train.to_dict(),
    }


def measured_this_recipe(entry: dict[str, Any], recipe: str) -> bool:
    """Whether ``entry`` measured the recipe as lib.recipes defines it now.

    A recipe that changed since (other epochs, another model) must not quote the old
    figures. Results store the recipe's settings (``config``); older ones only its
    description. An entry with neither (hand-made) is taken as it is.
    """
    from lib.recipes import RECIPES  # lib.recipes quotes this module: import late

    current = RECIPES.get(recipe)
    if current is None:
        return True
    if "config" in entry:
        return entry["config"] == json.loads(json.dumps(recipe_identity(current)))  # as stored
    if "description" in entry:
        return str(entry["description"]).split(", val fraction")[0] == describe_recipe(current)
    return True


def _recipe_figures(report: dict[str, Any], recipe: str) -> RecipeFigures | None:
    try:
        newest = report["benchmarks"]["time_to_accuracy"]["result"]
        # A day's invocations that trained other recipes are kept beside the newest one.
        found = [one for one in [newest, *newest.get("other_invocations", [])]
                 if recipe in one.get("recipes", {})]  # fmt: skip
        if not found:
            return None
        result = found[0]
        entry = result["recipes"][recipe]
        if not measured_this_recipe(entry, recipe):
            return None
        machine = report.get("machine", {})
        return RecipeFigures(
            recipe=recipe,
            dataset=str(result.get("dataset", "")),
            test_accuracy=float(entry["final_test_accuracy"]),
            epochs=float(entry["epochs_done"]),
            epochs_planned=_planned(entry),
            train_seconds=float(entry["train_seconds"]),
            cores=machine.get("cores"),
            gpus=len(machine.get("gpus") or []),
            date=str(report.get("date", "")),
            source=report["_source"],
            load=_first_load(entry),
            seconds_to=tuple(
                (str(k), float(v))
                for k, v in sorted((entry.get("seconds_to") or {}).items())
                if v is not None
            ),
            repeats=int(entry.get("repeats", 1)),
            tier=hardware.vector_tier(machine.get("cpu_flags")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _planned(entry: dict[str, Any]) -> int | None:
    try:
        return int(entry["epochs_planned"])
    except (KeyError, TypeError, ValueError):
        return None


def _first_load(entry: dict[str, Any]) -> float | None:
    try:
        return float(entry["load_average"]["before"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def recipe_sentence(recipe: str, results_dir: Path | None = None, tier: str | None = None) -> str:
    """One sentence quoting ``recipe``'s measured figures, or pointing to bench/results.

    Figures of a machine with this server's CPU tier come first (``tier`` overrides it).
    """
    fig = recipe_figures(recipe, results_dir, hardware.server_tier() if tier is None else tier)
    if fig is None:
        return SEE_RESULTS
    dataset = DATASET_NAMES.get(fig.dataset, fig.dataset)
    # A run cut by its time budget stops mid-epoch (19.98 of 20): say 20.
    epochs = (
        f"{fig.epochs:.0f}" if abs(fig.epochs - round(fig.epochs)) < 0.05 else f"{fig.epochs:.1f}"
    )
    if fig.stopped_early:
        # The benchmark's time budget ended it: say how far it got, so no one reads the
        # figures as the recipe's end (a user's run trains all its epochs).
        span = (
            f"{epochs} of its {fig.epochs_planned} epochs, when the benchmark's time budget ran out"
        )
    else:
        span = f"{epochs} epochs"
    words = hardware.tier_words(fig.tier)
    machine = f"{fig.gpus} GPU(s)" if fig.gpus else f"{fig.cores} CPU cores"
    machine += f" with {words}" if words and not fig.gpus else ""
    load = "" if fig.load is None else f", load average {fig.load:g}"
    best = fig.best_reached
    reached = "" if best is None else f"; {best[0]:.0%} first reached after {_duration(best[1])}"
    medians = f" (medians of {fig.repeats} trainings)" if fig.repeats > 1 else ""
    return (
        f"Measured{medians}: {fig.test_accuracy:.1%} test accuracy on {dataset} after {span} "
        f"({_duration(fig.train_seconds)} of training on {machine}, {fig.date}{load}"
        f"{reached}; {fig.source})."
    )


def card_sentence(card_path: Path) -> str:
    """One sentence quoting what a shipped model's card measured when it was trained.

    The shipped demo models (models/<name>/card.json) hold their training recipe and
    the figures of that run: a recipe copied from one quotes them from there.
    """
    card = json.loads(card_path.read_text(encoding="utf-8"))
    m = card["metrics"]
    data = card["training_config"]["data"]
    dataset = {"shapes": "the generated shapes set"}.get(data["source"], data["source"])
    count = f" ({data['shapes_count']} images)" if data.get("shapes_count") else ""
    return (
        f"Measured: {m['test_accuracy']:.1%} test accuracy on {dataset}{count} after "
        f"{m['epochs_done']} epochs ({_duration(m['train_seconds'])} of training, "
        f"{card['created'][:10]}; {_relative(card_path)})."
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def clear_cache() -> None:
    """Forget the results read so far (tests)."""
    with _lock:
        _cache.clear()
