"""Make the shipped demo models in ``models/`` (``make demo-models``).

    python -m lib.demo_models                 # both demo models
    python -m lib.demo_models fashion-mnist-demo

Each demo is trained through the real trainer (``lib.training.train_run``) from a
fixed RunConfig with a fixed seed, on the CPU in float32, in a temporary run
directory. The best model is re-saved without its optimizer (prediction does
not need it, and it would triple the size) into ``models/<name>/`` with a card
that records the test accuracy the trainer measured. Takes a few minutes on
2 CPU cores. Fashion-MNIST is read from Debian's ``dataset-fashion-mnist``
(or ``KESTREL_FASHION_MNIST_DIR``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig

MAX_SHIPPED_BYTES = 5 * 1024 * 1024

DEMOS: dict[str, tuple[RunConfig, str]] = {
    "fashion-mnist-demo": (
        RunConfig(
            name="fashion-mnist-demo",
            data=DataConfig(source="fashion_mnist", seed=0, val_fraction=0.1),
            model=ModelConfig(preset="fast_cnn"),
            # The default ("fast") recipe, pinned to float32 on the CPU so it reproduces.
            train=TrainConfig(seed=0, mixed_precision="off", device="cpu"),
        ),
        "Fast CNN trained on Fashion-MNIST (28×28 grayscale clothing, 10 classes). "
        "Works best on a single garment, centred, on a plain dark background.",
    ),
    "shapes-demo": (
        RunConfig(
            name="shapes-demo",
            data=DataConfig(source="shapes", seed=0, shapes_count=6000, shapes_size=64),
            # Shapes sit anywhere in the picture, so the head pools globally
            # (fast_cnn's flatten head ties classes to positions and overfits).
            model=ModelConfig(
                preset="custom",
                # Four blocks: the receptive field must cover a whole shape (up to 54 px).
                blocks=tuple(ConvBlock(filters=f) for f in (16, 32, 64, 128)),
                head=HeadConfig(pooling="global_avg", dense=(64,)),
            ),
            train=TrainConfig(
                epochs=20,
                batch_size=64,
                learning_rate=3e-3,
                schedule="warmup_cosine",
                warmup_epochs=1.0,
                seed=0,
                mixed_precision="off",
                device="cpu",
            ),
        ),
        "Small CNN (4 conv blocks, global pooling) trained on the procedural shapes set "
        "(64×64 colour, 6 classes: circle, square, triangle, star, cross, hexagon).",
    ),
}


def make_demo(name: str, dest_root: Path | None = None) -> Path:
    """Train demo ``name`` with the real trainer and write ``models/<name>/``.

    Returns:
        The model folder.

    Raises:
        RuntimeError: the run failed, or the model is over the 5 MB limit.
    """
    import keras

    from lib import registry, runstore
    from lib.training import train_run

    config, description = DEMOS[name]
    dest_root = Path(dest_root or registry.SHIPPED_DIR)
    with tempfile.TemporaryDirectory(prefix="kestrel-demo-") as tmp:
        run_dir = runstore.create_run(config, root=Path(tmp), run_id=name)
        t0 = time.monotonic()
        outcome = train_run(run_dir, echo=True)
        if outcome.state != "completed":
            raise RuntimeError(f"demo {name} did not complete: {outcome.state} {outcome.error}")
        runstore.update_status(run_dir, state="completed")
        card = registry.card_for_run(run_dir, name=name)
        model = keras.saving.load_model(run_dir / runstore.MODEL_FILE, compile=False)
    card = dataclasses.replace(card, description=description, source_run="")
    folder = registry.write_entry_folder(dest_root / name, model, card)
    size = (folder / registry.MODEL_FILE).stat().st_size
    if size > MAX_SHIPPED_BYTES:
        raise RuntimeError(f"demo {name} is {size / 2**20:.1f} MB; shipped models must be ≤ 5 MB")
    print(
        f"{name}: test accuracy {card.accuracy:.4f}, {size / 1024:.0f} KB, "
        f"{time.monotonic() - t0:.0f} s -> {folder}",
        flush=True,
    )
    return folder


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    names = (argv if argv is not None else sys.argv[1:]) or list(DEMOS)
    unknown = [n for n in names if n not in DEMOS]
    if unknown:
        print(f"unknown demo(s): {', '.join(unknown)}; known: {', '.join(DEMOS)}", file=sys.stderr)
        return 2
    for name in names:
        make_demo(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
