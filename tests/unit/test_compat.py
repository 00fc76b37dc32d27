"""lib.compat against the installed Keras: each internal it relies on is still there.

On a Keras upgrade these tests say which of Kestrel's reaches into ``keras.src``
moved; lib/compat.py's docstrings say what else to check.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import keras
import pytest

from lib import compat
from lib.workspace import PROJECT_ROOT

INTERNAL_IMPORT = re.compile(r"^\s*(from|import)\s+keras\.src\b", re.M)


def test_the_checked_version_is_the_pinned_and_installed_one():
    pins = (PROJECT_ROOT / "requirements.txt").read_text()
    assert f"keras=={compat.KERAS_CHECKED}" in pins
    assert version("keras") == compat.KERAS_CHECKED


def test_only_compat_imports_keras_internals():
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for path in sorted((PROJECT_ROOT / "lib").rglob("*.py"))
        if path.name != "compat.py" and INTERNAL_IMPORT.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "api_name, expected",
    [
        ("keras.layers.Dense", keras.layers.Dense),
        ("keras.activations.relu", keras.activations.relu),
        ("keras.utils.get_file", None),  # Keras refuses it inside a model config
        ("keras.saving.load_model", None),
        ("keras.layers.NoSuchLayer", None),
    ],
)
def test_keras_api_symbol(api_name, expected):
    assert compat.keras_api_symbol(api_name) is expected


def test_saveable_base_is_the_base_of_what_models_are_made_of():
    base = compat.saveable_base()
    for cls in (keras.layers.Layer, keras.Model, keras.optimizers.Optimizer):
        assert issubclass(cls, base)
    assert not issubclass(dict, base)


@pytest.mark.parametrize(
    "preset, size, file_name, hashed",
    [
        (
            "mobilenetv2",
            96,
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5",
            False,
        ),
        ("efficientnetb0", 224, "efficientnetb0_notop.h5", True),
        ("resnet50", 224, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", True),
    ],
)
def test_imagenet_weights_spec(preset, size, file_name, hashed):
    name, url, file_hash = compat.imagenet_weights_spec(preset, size)
    assert name == file_name
    assert url.startswith("https://") and url.endswith("/" + file_name)
    assert (file_hash is not None) == hashed
    if hashed:
        assert re.fullmatch(r"[0-9a-f]{32,64}", file_hash)


def test_keras_home_is_where_get_file_caches():
    home = compat.keras_home()
    assert isinstance(home, Path) and home.is_absolute()


def test_the_multi_worker_patch_still_has_its_targets():
    import keras.src.backend.tensorflow.trainer as tf_trainer

    assert callable(tf_trainer._collective_all_reduce_multi_worker)
    assert callable(keras.Model._maybe_symbolic_build)
    assert callable(keras.Model._symbolic_build)
