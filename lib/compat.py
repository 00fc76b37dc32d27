"""Every use of Keras internals (``keras.src.*``) in Kestrel, in one place.

Kestrel pins ``keras==3.15.1`` (requirements.txt). Keras' public API does not
offer a few things Kestrel needs: its registry of exported names (to vet
uploaded models), the imagenet weight URLs and hashes of ``keras.applications``, the
folder downloads are cached in, and a fix for multi-worker ``fit``. Each of
them reaches into ``keras.src`` here, and nowhere else in ``lib/``.

On a Keras upgrade, read each function's "Upgrade check", then run
``tests/unit/test_compat.py`` (each function against the installed Keras),
``tests/unit/test_hostile_models.py`` (the upload inspector) and
``tests/slow/test_multiworker.py`` (the multi-worker patch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KERAS_CHECKED = "3.15.1"  # the Keras version every function below was checked against


def keras_api_symbol(api_name: str) -> Any:
    """The object Keras exports under the public name ``api_name`` (``keras.layers.Dense``), or None.

    Names Keras itself refuses to deserialise as part of a model
    (``NON_MODELING_APIS``, e.g. file and network utilities) resolve to None.

    Checked against keras 3.15.1: ``keras.src.api_export.get_symbol_from_name``
    and ``keras.src.saving.serialization_lib.NON_MODELING_APIS``, the same pair
    ``serialization_lib._retrieve_class_or_fn`` uses; ``import keras`` must have
    run first (it fills the registry of exported names).

    Upgrade check: both names still exist, and ``serialization_lib`` still
    resolves modules this way (else the upload inspector and Keras' own loader
    disagree about what a config names).
    """
    import keras  # noqa: F401  (fills the public API registry)
    from keras.src.api_export import get_symbol_from_name
    from keras.src.saving.serialization_lib import NON_MODELING_APIS

    if api_name in NON_MODELING_APIS:
        return None
    return get_symbol_from_name(api_name)


def saveable_base() -> type:
    """The base class of everything Keras deserialises from a config (``KerasSaveable``).

    Checked against keras 3.15.1: ``keras.src.saving.keras_saveable.KerasSaveable``;
    ``serialization_lib`` refuses internal-path classes that are not subclasses.

    Upgrade check: the class still exists at that path and Layer, Model,
    Optimizer and DTypePolicy still subclass it.
    """
    from keras.src.saving.keras_saveable import KerasSaveable

    return KerasSaveable


def imagenet_weights_spec(preset: str, size: int) -> tuple[str, str, str | None]:
    """(file name, URL, sha256 or None) of a transfer backbone's imagenet no-top weights.

    ``preset`` is one of "mobilenetv2", "efficientnetb0", "resnet50"; ``size`` the
    square input size (MobileNetV2 has one file per size).

    Checked against keras 3.15.1: the module constants ``BASE_WEIGHT_PATH``
    (mobilenet_v2), ``BASE_WEIGHTS_PATH`` and ``WEIGHTS_HASHES`` (efficientnet,
    resnet) of ``keras.src.applications``, and the file names those modules build.

    Upgrade check: the constants and file-name patterns in
    keras/src/applications/{mobilenet_v2,efficientnet,resnet}.py are unchanged,
    so a weights file cached (or copied by hand) is the one Keras loads.
    """
    from keras.src.applications import efficientnet, mobilenet_v2, resnet

    if preset == "mobilenetv2":
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5"
        return name, mobilenet_v2.BASE_WEIGHT_PATH + name, None
    if preset == "efficientnetb0":
        name = "efficientnetb0_notop.h5"
        return name, efficientnet.BASE_WEIGHTS_PATH + name, efficientnet.WEIGHTS_HASHES["b0"][1]
    name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return name, resnet.BASE_WEIGHTS_PATH + name, resnet.WEIGHTS_HASHES["resnet50"][1]


def keras_home() -> Path:
    """Where Keras caches downloads: $KERAS_HOME as read at import, else ~/.keras.

    Checked against keras 3.15.1: ``keras.src.backend.config.keras_home()``
    (no public equivalent); ``keras.utils.get_file`` and ``keras.applications``
    download under it.

    Upgrade check: the function still exists and ``get_file`` still defaults
    its cache_dir to it.
    """
    from keras.src.backend import config

    return Path(config.keras_home())


def patch_fit_for_multi_worker(model: Any, strategy: Any) -> None:
    """Work around Keras 3's broken ``fit`` under MultiWorkerMirroredStrategy.

    keras-team/keras#20585 (open for Keras 3.7–3.15): ``fit`` first reduces a whole
    distributed batch with ``strategy.reduce`` to build the model symbolically,
    and reduces scalar logs with ``axis=0``; both raise under the collective
    strategy. Two narrow patches make it train:

    - the symbolic build uses this worker's first replica's batch (it only needs
      shapes and dtypes);
    - logs are reduced over this worker's replicas only, so the loss/accuracy a
      worker reports is its own shard's. Gradients are still all-reduced by the
      strategy, so every worker keeps identical weights (the multi-worker test
      checks exactly that).

    Checked against keras 3.15.1: ``keras.src.backend.tensorflow.trainer``'s
    module-level ``_collective_all_reduce_multi_worker`` and the model method
    ``_maybe_symbolic_build(iterator=None, data_batch=None)`` calling
    ``_symbolic_build(data_batch=...)``.

    Upgrade check: whether keras#20585 is fixed (then delete this function and
    its call); else that both names and signatures are unchanged. Run
    tests/slow/test_multiworker.py.
    """
    import types

    import keras.src.backend.tensorflow.trainer as tf_trainer
    import tensorflow as tf

    tf_trainer._collective_all_reduce_multi_worker = lambda s: False

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda v: (
                        strategy.experimental_local_results(v)[0]
                        if isinstance(v, tf.distribute.DistributedValues)
                        else v
                    ),
                    batch,
                )
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)
