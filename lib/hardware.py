"""Hardware set-up for a training process: devices, memory growth, precision, strategy.

Call :func:`configure` once, at the start of a worker process and before any model
is built: it hides GPUs when the run asks for the CPU, turns on GPU memory growth
(so two runs can share a card), picks the mixed-precision policy and returns the
``tf.distribute`` strategy to build and fit the model under:

- ``TF_CONFIG`` set (several machines, driven from the CLI) → MultiWorkerMirroredStrategy
- several visible GPUs → MirroredStrategy
- otherwise → the default strategy

``jit_compile`` is left to Keras' own "auto" (on CPU it measured about 3× slower here).
TensorFlow is imported lazily so pages can import this module for free.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any

from lib.errors import KestrelError

MIN_MIXED_PRECISION_CAPABILITY = (7, 0)  # tensor cores: Volta and newer


class HardwareError(KestrelError):
    """The run asks for hardware this machine does not have."""


@dataclass(frozen=True)
class GpuInfo:
    """One visible GPU."""

    name: str  # e.g. "/physical_device:GPU:0"
    description: str  # the device name the driver reports
    compute_capability: tuple[int, int] | None


@dataclass
class HardwareSetup:
    """What :func:`configure` decided, for the log and the status panel."""

    device: str  # "cpu" or "gpu"
    gpus: list[GpuInfo] = field(default_factory=list)
    precision: str = "float32"  # the global Keras dtype policy
    strategy_name: str = "default"
    replicas: int = 1
    strategy: Any = None  # the tf.distribute.Strategy to use

    def describe(self) -> str:
        where = f"{len(self.gpus)} GPU(s)" if self.device == "gpu" else "CPU"
        return (
            f"{where}, {self.precision}, {self.strategy_name} strategy ({self.replicas} replica(s))"
        )


def detect_gpus() -> list[GpuInfo]:
    """The GPUs TensorFlow can see, with their compute capability when known."""
    import tensorflow as tf

    gpus = []
    for dev in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(dev)
        except (ValueError, RuntimeError):
            details = {}
        gpus.append(
            GpuInfo(
                name=dev.name,
                description=str(details.get("device_name", dev.name)),
                compute_capability=details.get("compute_capability"),
            )
        )
    return gpus


# CPU flags of native bfloat16 arithmetic, which oneDNN's bfloat16 kernels need
# (without them TensorFlow emulates bfloat16, slower than float32).
CPU_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


# The vector extension that sets a CPU's TensorFlow speed, best first, with its words: two
# CPUs of one model name ("AMD EPYC") can differ in it several times over.
VECTOR_TIERS = (
    ("amx_bf16", "amx", "AMX"),
    ("avx512_bf16", "avx512bf16", "AVX-512 BF16"),
    ("avx512f", "avx512", "AVX-512"),
    ("avx2", "avx2", "AVX2"),
)


def vector_tier(flags) -> str:
    """The best of VECTOR_TIERS in ``flags`` ("" where none of them or none was recorded)."""
    have = set(flags or ())
    return next((tier for flag, tier, _ in VECTOR_TIERS if flag in have), "")


def tier_words(tier: str) -> str:
    """A tier as the UI names it ("AVX2"); "" for none."""
    return next((words for _, t, words in VECTOR_TIERS if t == tier), "")


@functools.lru_cache(maxsize=1)
def server_tier() -> str:
    """This server's CPU tier (read once: a CPU does not change under a running server)."""
    return vector_tier(cpu_flag_set())


def cpu_flag_set(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """Every flag the CPU reports (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open(cpuinfo, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); False where unknown."""
    flags = cpu_flag_set(cpuinfo)
    return any(flag in flags for flag in CPU_BFLOAT16_FLAGS)


def choose_precision(
    mode: str,
    gpus: list[GpuInfo],
    *,
    cpu_bfloat16: bool = False,
    imagenet_backbone: bool = False,
) -> str:
    """The Keras dtype policy for ``mode`` ("auto", "on", "off") on this hardware.

    "auto" uses mixed_float16 only where every GPU has tensor cores (compute
    capability ≥ 7.0). Without a GPU it uses mixed_bfloat16 where the CPU computes
    bfloat16 natively (``cpu_bfloat16``), for Kestrel's own CNNs only: bench/'s
    ablation measured fast_cnn and accurate_cnn cheaper per image in it there, and a
    MobileNetV2 dearer (``imagenet_backbone``, one of the ImageNet backbone
    architectures with or without their weights: float32). "on" without a
    GPU always uses mixed_bfloat16, the CPU's half-precision format.
    """
    if mode == "off":
        return "float32"
    capable = bool(gpus) and all(
        g.compute_capability is not None
        and tuple(g.compute_capability) >= MIN_MIXED_PRECISION_CAPABILITY
        for g in gpus
    )
    if mode == "auto":
        if gpus:
            return "mixed_float16" if capable else "float32"
        return "mixed_bfloat16" if cpu_bfloat16 and not imagenet_backbone else "float32"
    return "mixed_float16" if gpus else "mixed_bfloat16"


# A Keras dtype policy in the UI's words (the Train form, Evaluate, the Compare table).
POLICY_WORDS = {
    "float32": "float32",
    "mixed_bfloat16": "bfloat16 (mixed)",
    "mixed_float16": "float16 (mixed)",
}


def nvidia_driver_present(proc: str = "/proc/driver/nvidia/gpus") -> bool:
    """Whether an NVIDIA driver lists a GPU here; without one, TensorFlow (CUDA) sees none.

    Cheap (no TensorFlow import), for pages that say what a run will do before it runs.
    """
    try:
        return any(os.scandir(proc))
    except OSError:
        return False


def emulates_bfloat16(*, cpuinfo: str = "/proc/cpuinfo",
                      proc: str = "/proc/driver/nvidia/gpus") -> bool:  # fmt: skip
    """True on a server that trains on a CPU without native bfloat16 (no NVIDIA GPU either)."""
    return not nvidia_driver_present(proc) and not cpu_native_bfloat16(cpuinfo)


def precision_here(mode: str, imagenet_backbone: bool, *, cpuinfo: str = "/proc/cpuinfo",
                   proc: str = "/proc/driver/nvidia/gpus") -> str | None:  # fmt: skip
    """What Mixed precision ``mode`` trains in on this server, in words, for the form.

    None where a GPU may be used: what it computes in is the GPU's to say (the run's
    log and Evaluate name it). On a CPU it is exact: ``choose_precision`` with no GPU.
    """
    if nvidia_driver_present(proc):
        return None
    if mode == "off":
        return "Here it trains in float32."
    native = cpu_native_bfloat16(cpuinfo)
    policy = choose_precision(mode, [], cpu_bfloat16=native, imagenet_backbone=imagenet_backbone)
    words = POLICY_WORDS[policy]
    if native:
        why = " (an ImageNet backbone stays in float32)" if policy == "float32" else ""
        return (
            f"Here it trains in {words}{why}: this server's CPU computes bfloat16 natively "
            "(AVX-512 BF16 or AMX)."
        )
    if policy == "float32":
        return (
            "Here it trains in float32: this server's CPU has no native bfloat16 (AVX-512 "
            "BF16 or AMX), which TensorFlow would emulate, slower."
        )
    return (
        f"Here it trains in {words}, emulated: this server's CPU has no native bfloat16 "
        "(AVX-512 BF16 or AMX), so it is slower than float32 (auto or off train in float32)."
    )


def multi_worker_config() -> dict[str, Any] | None:
    """The parsed ``TF_CONFIG`` when it describes more than one worker, else None."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return None
    try:
        tf_config = json.loads(raw)
    except ValueError:
        raise HardwareError("TF_CONFIG is not valid JSON; unset it or fix it") from None
    workers = tf_config.get("cluster", {}).get("worker", [])
    return tf_config if len(workers) > 1 else None


def is_chief() -> bool:
    """Whether this process is the one that owns the run directory (worker 0)."""
    tf_config = multi_worker_config()
    if tf_config is None:
        return True
    task = tf_config.get("task", {})
    return task.get("type") in ("chief", None) or (
        task.get("type") == "worker" and int(task.get("index", 0)) == 0
    )


@contextlib.contextmanager
def keep_dtype_policy():
    """Put the process's global Keras dtype policy back on leaving.

    :func:`configure` sets the policy for a run; a caller that trains in its own
    process (the benchmarks, the tests, an in-process LR sweep) keeps its own.
    """
    import keras

    previous = keras.config.dtype_policy()
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def configure(
    device: str = "auto", mixed_precision: str = "auto", *, imagenet_backbone: bool = False
) -> HardwareSetup:
    """Set up devices and precision for this process and pick the strategy.

    Args:
        device: "auto", "cpu" or "gpu" (TrainConfig.device).
        mixed_precision: "auto", "on" or "off" (TrainConfig.mixed_precision).
        imagenet_backbone: the model is one of the ImageNet backbone architectures,
            which "auto" keeps in float32 on a CPU (see :func:`choose_precision`).

    Returns:
        The set-up, with ``strategy`` ready to use.

    Raises:
        HardwareError: "gpu" was asked for and there is none.
    """
    import keras
    import tensorflow as tf

    # Device visibility and memory growth are configuration, not ops: they must be
    # set before the runtime initialises, which creating a strategy does.
    if device == "cpu":
        with contextlib.suppress(RuntimeError):  # devices already initialised here
            tf.config.set_visible_devices([], "GPU")
    gpus = [] if device == "cpu" else detect_gpus()
    if device == "gpu" and not gpus:
        raise HardwareError(
            "TrainConfig.device is 'gpu' but TensorFlow sees no GPU on this machine; "
            "choose 'auto' or 'cpu'"
        )
    for dev in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(ValueError, RuntimeError):  # already initialised
            tf.config.experimental.set_memory_growth(dev, True)

    if multi_worker_config() is not None:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        strategy_name = "multi-worker mirrored"
    elif len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        strategy_name = "mirrored"
    else:
        strategy = tf.distribute.get_strategy()
        strategy_name = "default"

    precision = choose_precision(
        mixed_precision,
        gpus,
        cpu_bfloat16=not gpus and cpu_native_bfloat16(),
        imagenet_backbone=imagenet_backbone,
    )
    keras.mixed_precision.set_global_policy(precision)
    return HardwareSetup(
        device="gpu" if gpus else "cpu",
        gpus=gpus,
        precision=precision,
        strategy_name=strategy_name,
        replicas=int(strategy.num_replicas_in_sync),
        strategy=strategy,
    )


def gpu_summary() -> str:
    """A one-line description of the GPUs here, for the Train page ("no GPU: training on CPU")."""
    gpus = detect_gpus()
    if not gpus:
        return "no GPU: training runs on the CPU"
    names = ", ".join(
        g.description
        + (
            f" (cc {g.compute_capability[0]}.{g.compute_capability[1]})"
            if g.compute_capability
            else ""
        )
        for g in gpus
    )
    return f"{len(gpus)} GPU(s): {names}"


def patch_keras_for_multi_worker(model, strategy) -> None:
    """Make ``model.fit`` work under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    The patch reaches into Keras internals, so it lives in
    :func:`lib.compat.patch_fit_for_multi_worker`, with what to check on an upgrade.
    """
    from lib import compat

    compat.patch_fit_for_multi_worker(model, strategy)
