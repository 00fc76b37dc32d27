"""Save a health review's decisions as a new dataset version (lib.datasets).

The reviewed dataset is never edited. Decisions (``{"train:12": {"action":
"relabel", "label": "Shirt"}}``, keyed by split and position, see lib.health)
become one new version of a built dataset:

- a built dataset (``source="dataset"``, ``name@N``): version N's files are
  linked into version M > N, relabelled images are moved to their new class
  folder and excluded images are left out;
- any other source (a built-in set, a server folder, an upload): a new built
  dataset ``<name>`` is created whose first version holds every image of the
  checked splits as PNG, in its (possibly new) class folder, the excluded ones
  left out.

``save_cleaned`` returns the DataConfig of the new version (the checked one's
settings, ``source="dataset"``, ``path="name@M"``), ready to put in a draft.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from pathlib import Path

import numpy as np

from lib import datasets
from lib.errors import KestrelError


class CleanVersionError(KestrelError):
    """The reviewed decisions cannot be saved; the message says what to do."""


def default_name(data) -> str:
    """A dataset name for the cleaned copy of ``data`` (a DataConfig)."""
    if data.source == "dataset":
        return datasets.parse_ref(data.path)[0]
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", data.source if data.source != "folder" else
                  Path(data.path).name or "folder").strip("-") or "data"  # fmt: skip
    name = f"{base}-clean"[:40]
    n = 1
    candidate = name
    while datasets.exists(candidate):
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _plan(decisions: dict, labels_of: dict[str, np.ndarray], class_names: list[str]):
    """``(moves {key: new class index}, excluded {keys})`` from the decisions, checked."""
    moves: dict[str, int] = {}
    excluded: set[str] = set()
    for key, d in decisions.items():
        split, _, pos = key.partition(":")
        if split not in labels_of or not pos.isdigit() or int(pos) >= len(labels_of[split]):
            raise CleanVersionError(
                f"decision for {key!r} names no image of the checked dataset; run the check again"
            )
        if d.get("action") == "exclude":
            excluded.add(key)
        elif d.get("action") == "relabel":
            if d.get("label") not in class_names:
                raise CleanVersionError(
                    f"cannot relabel {key} to {d.get('label')!r}: not a class of the dataset "
                    f"({', '.join(class_names)})"
                )
            moves[key] = class_names.index(d["label"])
    return moves, excluded


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def save_cleaned(data, decisions: dict, *, name: str | None = None):
    """Write the decisions as a new dataset version; returns ``(DataConfig, description)``.

    Args:
        data: the checked DataConfig.
        decisions: lib.health decisions (``keep`` ones change nothing).
        name: the dataset to create for a source that is not a built dataset
            (default: ``<source>-clean``).

    Raises:
        CleanVersionError: no relabel or exclude decision, or one that does not fit.
    """
    from lib.data import load_dataset

    active = {k: v for k, v in decisions.items() if v.get("action") in ("relabel", "exclude")}
    if not active:
        raise CleanVersionError(
            "there is nothing to save yet: relabel or exclude at least one image first"
        )
    ds = load_dataset(data)
    labels_of = {s: np.asarray(split.labels) for s, split in ds.splits.items()}
    moves, excluded = _plan(active, labels_of, list(ds.class_names))
    what = f"health review: {len(moves)} relabelled, {len(excluded)} excluded"

    if data.source == "dataset":
        ds_name, _ = datasets.parse_ref(data.path)

        def mutate(images: Path) -> str:
            for key in sorted(excluded | set(moves)):
                split, _, pos = key.partition(":")
                ref = ds.splits[split].refs[int(pos)]
                rel = Path(ref).relative_to(Path(ref).parents[1])  # <class>/<file>
                src = images / rel
                if not src.is_file():
                    continue
                if key in excluded:
                    src.unlink()
                    continue
                dest = images / ds.class_names[moves[key]]
                dest.mkdir(exist_ok=True)
                target = dest / src.name
                while target.exists():  # names are generated per class: keep them unique
                    target = dest / f"r{target.name}"
                os.rename(src, target)
            return what

        version = datasets._new_version(ds_name, mutate)
    else:
        ds_name = datasets.check_name(name or default_name(data))
        datasets.create_dataset(ds_name, ds.class_names)

        def mutate(images: Path) -> str:
            n = 0
            for split_name, split in ds.splits.items():
                for start in range(0, len(split), 512):
                    idx = np.arange(start, min(start + 512, len(split)))
                    imgs = split.images(idx)
                    for i, img in zip(idx, imgs, strict=True):
                        key = f"{split_name}:{i}"
                        if key in excluded:
                            continue
                        label = moves.get(key, int(split.labels[i]))
                        n += 1
                        (images / ds.class_names[label] / f"{n:06d}.png").write_bytes(_png(img))
            return what

        version = datasets._new_version(ds_name, mutate)
    ref = datasets.dataset_ref(ds_name, version)
    new_cfg = dataclasses.replace(data, source="dataset", path=ref)
    return new_cfg, f"{what} → {ref}"
