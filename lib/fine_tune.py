"""Fine-tuning a trained run: the second phase of transfer learning.

A run whose ``ModelConfig.start_from`` names another run starts from that run's
trained backbone and head (its model.keras) instead of new ones; with
``unfreeze_last`` > 0 and a low learning rate that is fine-tuning as in Keras'
transfer-learning guide: phase one trains the head on a frozen backbone (on
cached features, in seconds), phase two unfreezes the top of the backbone and
trains on the images. Each phase is an ordinary run, so stop, resume, the
learning-rate curve and evaluation work the same, and config.json says which
run the second one started from.

:func:`check_source` needs no Keras (the Train page and the CLI call it before
queueing); :func:`load_source_weights` imports Keras and runs in the training process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lib import runstore
from lib.config import RunConfig
from lib.errors import KestrelError

FINE_TUNE_LAYERS = 20  # layers the Fine-tune button unfreezes (BatchNorm stays frozen)
FINE_TUNE_LEARNING_RATE = 1e-5  # Keras' guide: a very low rate, or the features are wrecked
FINE_TUNE_EPOCHS = 5


class StartFromError(KestrelError):
    """The run to start from cannot give its weights to this run; the message says why."""


def source_dir(cfg: RunConfig) -> Path:
    return runstore.run_dir(cfg.model.start_from)


def check_source(cfg: RunConfig, class_names: list[str] | None = None) -> None:
    """Refuse a start_from run that is missing, unfinished or of another architecture.

    ``class_names`` (the dataset's, when known) must match the source run's in
    number and order: the trained output layer answers in that order.
    """
    rid = cfg.model.start_from
    if not rid:
        return
    try:
        path = source_dir(cfg)
    except KestrelError as exc:
        raise StartFromError(f"'Start from a trained run': {exc}") from None
    what = f"'Start from a trained run' names run {rid}"
    if not path.is_dir():
        raise StartFromError(
            f"{what}, which does not exist (deleted?); choose another run on the Model page "
            "or start from new weights."
        )
    state = runstore.read_status(path).state
    if state != "completed" or not (path / runstore.MODEL_FILE).is_file():
        raise StartFromError(
            f"{what}, which has no trained model (it is {state}); wait until it completes "
            "or choose another run on the Model page."
        )
    try:
        source = runstore.read_config(path)
    except (OSError, ValueError) as exc:
        raise StartFromError(f"{what}, whose config.json cannot be read ({exc}).") from None
    if source.model.preset != cfg.model.preset:
        raise StartFromError(
            f"{what}, a {source.model.preset} model; this run's Architecture is "
            f"{cfg.model.preset}. Choose the same architecture, or another run."
        )
    if class_names is not None:
        theirs = runstore.read_metrics(path).get("class_names")
        if isinstance(theirs, list) and list(theirs) != list(class_names):
            raise StartFromError(
                f"{what}, trained on the classes {_short(theirs)}; this dataset has "
                f"{_short(class_names)}. Its output layer answers in its own classes: choose a "
                "run trained on these classes."
            )


def _short(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(str(n) for n in names[:limit])
    return f"[{shown}{', …' if len(names) > limit else ''}] ({len(names)})"


def load_source_weights(model: Any, cfg: RunConfig) -> None:
    """Copy the start_from run's trained weights into ``model``, layer by layer.

    Raises:
        StartFromError: the saved model's layers or shapes differ from this run's.
    """
    import keras

    path = source_dir(cfg) / runstore.MODEL_FILE
    try:
        source = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:  # a damaged file: say which, never train from half weights
        raise StartFromError(
            f"the model of run {cfg.model.start_from} cannot be read ({type(exc).__name__}: "
            f"{str(exc)[:200]})"
        ) from None
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        try:
            theirs = source.get_layer(layer.name).get_weights()
        except ValueError:
            raise StartFromError(
                f"run {cfg.model.start_from}'s model has no layer {layer.name!r}; it was built "
                "differently (another architecture or Kestrel version): choose another run"
            ) from None
        shapes = [w.shape for w in weights]
        if [w.shape for w in theirs] != shapes:
            raise StartFromError(
                f"run {cfg.model.start_from}'s layer {layer.name!r} has other shapes "
                f"({[w.shape for w in theirs]} here {shapes}): another image size or number "
                "of classes; choose a run trained on images of this size and these classes"
            )
        layer.set_weights(theirs)


def fine_tune_recipe(
    run_id: str,
    *,
    layers: int = FINE_TUNE_LAYERS,
    epochs: int = FINE_TUNE_EPOCHS,
    learning_rate: float = FINE_TUNE_LEARNING_RATE,
) -> RunConfig:
    """The recipe of a second phase for ``run_id``: its data, augmentation and model,
    starting from its trained weights with the top ``layers`` of the backbone
    unfrozen, ``epochs`` epochs at a constant ``learning_rate`` (no warm-up).

    Raises:
        StartFromError: the run does not exist, is not finished or is no transfer run.
    """
    from lib.config import TRANSFER_PRESETS

    try:
        source = runstore.read_config(runstore.run_dir(run_id))
    except (OSError, ValueError) as exc:
        raise StartFromError(f"run {run_id} cannot be fine-tuned: {exc}") from None
    if source.model.preset not in TRANSFER_PRESETS:
        raise StartFromError(
            f"run {run_id} is a {source.model.preset} model; fine-tuning is the second phase of "
            f"transfer learning ({', '.join(TRANSFER_PRESETS)})"
        )
    model = source.model.replace(start_from=run_id, freeze_backbone=True, unfreeze_last=layers)
    train = source.train.replace(
        epochs=epochs, learning_rate=learning_rate, schedule="constant", warmup_epochs=0.0
    )
    name = f"{source.name or run_id} fine-tuned"[:120]
    config = source.replace(name=name, model=model, train=train)
    check_source(config)
    return config
