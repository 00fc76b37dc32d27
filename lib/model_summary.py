"""What a model costs: layer table, parameter counts, FLOPs and activation memory.

    summary = summarize(model)
    summary.total_params, summary.flops_per_image, summary.activation_bytes(batch_size=128)

FLOPs and activation memory are estimates computed from layer configurations
and output shapes, not measured: FLOPs count the multiply-adds of convolutions
(regular, depthwise, separable) and dense layers, two FLOPs each, and ignore
the cheap element-wise layers (BatchNorm, activations, pooling, additions);
activation memory adds up every layer's output tensor, which is roughly what
training keeps for the backward pass.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LayerRow:
    """One row of the layer table."""

    name: str
    kind: str  # the layer class, e.g. "Conv2D"
    output_shape: tuple[int | None, ...]  # without the batch axis
    params: int
    trainable: bool
    flops: int  # per image
    depth: int  # 0 for the model's own layers, 1 inside a nested backbone


@dataclass(frozen=True)
class Stage:
    """Consecutive layers sharing a name prefix (``block2``, ``head``): one box of the diagram."""

    name: str
    kinds: tuple[str, ...]  # distinct layer kinds, in order
    output_shape: tuple[int | None, ...]
    params: int
    flops: int


@dataclass(frozen=True)
class ModelSummary:
    """A model's size and cost, for the Model page and run cards."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    rows: tuple[LayerRow, ...]
    stages: tuple[Stage, ...]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    flops_per_image: int  # estimate: 2 × multiply-adds of conv and dense layers
    activation_values_per_image: int  # sum of all layer output sizes

    def activation_bytes(self, batch_size: int, bytes_per_value: int = 4) -> int:
        """Estimated memory of the forward activations for one batch (float32 by default)."""
        return self.activation_values_per_image * batch_size * bytes_per_value

    def table(self) -> list[dict]:
        """The layer table as plain records (for a dataframe)."""
        return [
            {
                "layer": ("    " * r.depth) + r.name,
                "type": r.kind,
                "output shape": format_shape(r.output_shape),
                "params": r.params,
                "trainable": r.trainable,
                "MFLOPs": round(r.flops / 1e6, 3),
            }
            for r in self.rows
        ]


def format_shape(shape: tuple[int | None, ...]) -> str:
    """(28, 28, 32) → "28 × 28 × 32"."""
    return " × ".join("?" if d is None else str(d) for d in shape)


def human_count(n: float) -> str:
    """12_345_678 → "12.3 M"."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f}"


def human_bytes(n: float) -> str:
    """3_500_000 → "3.3 MiB"."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _shape(tensor) -> tuple[int | None, ...]:
    return tuple(tensor.shape[1:])


def _prod(dims) -> int:
    return math.prod(int(d) for d in dims if d is not None)


def layer_flops(layer) -> int:
    """Estimated FLOPs per image of one layer: 2 × its multiply-adds (0 for cheap layers)."""
    import keras

    kind = type(layer).__name__
    try:
        in_shape = _shape(layer.input)
        out_shape = _shape(layer.output)
    except (AttributeError, ValueError):  # a layer never called, or called several times
        return 0
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        c_in = in_shape[-1]
        spatial = _prod(out_shape[:-1])
        depthwise = spatial * c_in * layer.depth_multiplier * kh * kw
        pointwise = spatial * c_in * layer.depth_multiplier * out_shape[-1]
        return 2 * (depthwise + pointwise)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2 * _prod(out_shape) * kh * kw
    if isinstance(layer, keras.layers.Conv2D) or kind == "Conv2DTranspose":
        kh, kw = layer.kernel_size
        groups = getattr(layer, "groups", 1) or 1
        spatial = _prod((in_shape if kind == "Conv2DTranspose" else out_shape)[:-1])
        c_in, c_out = in_shape[-1], out_shape[-1]
        return 2 * spatial * kh * kw * (c_in // groups) * c_out
    if isinstance(layer, keras.layers.Dense):
        # a Dense on a rank > 2 input applies to every leading position
        return 2 * _prod(in_shape[:-1] or (1,)) * in_shape[-1] * layer.units
    return 0


def _walk(model, depth=0):
    """Yield (layer, depth), descending into nested models (transfer backbones)."""
    import keras

    for layer in model.layers:
        yield layer, depth
        if isinstance(layer, keras.Model):
            yield from _walk(layer, depth + 1)


def _stage_name(layer_name: str) -> str:
    return layer_name.split("_")[0]


def summarize(model) -> ModelSummary:
    """Describe a built Keras model: layers, parameters, FLOPs and activations per image.

    Args:
        model: a built functional ``keras.Model`` (as ``build_model`` returns).

    Returns:
        a ModelSummary; FLOPs and activation memory are estimates (see the module docstring).
    """
    import keras

    rows = []
    activations = 0
    for layer, depth in _walk(model):
        nested = isinstance(layer, keras.Model)
        flops = 0 if nested else layer_flops(layer)
        try:
            out_shape = _shape(layer.output)
        except (AttributeError, ValueError):
            out_shape = ()
        if not nested:  # a nested model's output is its last layer's, counted there
            activations += _prod(out_shape)
        rows.append(
            LayerRow(
                name=layer.name,
                kind=type(layer).__name__,
                output_shape=out_shape,
                params=int(layer.count_params()) if layer.built else 0,
                trainable=bool(layer.trainable),
                flops=int(flops),
                depth=depth,
            )
        )
    # a nested model's row carries the FLOPs of its own layers (listed after it)
    for i, row in enumerate(rows):
        if row.kind in ("Functional", "Sequential", "Model"):
            inner = 0
            for later in rows[i + 1 :]:
                if later.depth <= row.depth:
                    break
                if later.depth == row.depth + 1:
                    inner += later.flops
            rows[i] = dataclasses.replace(row, flops=inner)
    trainable = sum(_prod(w.shape) for w in model.trainable_weights)
    total = int(model.count_params())
    return ModelSummary(
        name=model.name,
        input_shape=tuple(model.input_shape[1:]),
        num_classes=int(model.output_shape[-1]),
        rows=tuple(rows),
        stages=tuple(_stages(rows)),
        total_params=total,
        trainable_params=int(trainable),
        non_trainable_params=total - int(trainable),
        flops_per_image=int(sum(r.flops for r in rows if r.depth == 0)),
        activation_values_per_image=int(activations),
    )


def _stages(rows: list[LayerRow]) -> list[Stage]:
    """Group the model's own (top-level) rows by name prefix, in order."""
    groups: list[list[LayerRow]] = []
    for row in rows:
        if row.depth > 0:
            continue
        if groups and _stage_name(row.name) == _stage_name(groups[-1][0].name):
            groups[-1].append(row)
        else:
            groups.append([row])
    return [
        Stage(
            name=_stage_name(group[0].name),
            kinds=tuple(dict.fromkeys(r.kind for r in group)),
            output_shape=group[-1].output_shape,
            params=sum(r.params for r in group),
            flops=sum(r.flops for r in group),
        )
        for group in groups
    ]


def summarize_config(cfg, input_shape, num_classes: int) -> ModelSummary:
    """Build the model a ModelConfig describes (without pretrained weights) and summarize it.

    Pretrained weights change no shape or count, and fetching them can take a
    download, so the summary always builds with random initialisation.

    Raises:
        ModelConfigError: the configuration cannot be built for this input.
    """
    from lib.architectures import build_model

    if cfg.weights != "none":
        cfg = cfg.replace(weights="none")
    return summarize(build_model(cfg, tuple(input_shape), num_classes))
