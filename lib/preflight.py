"""Checks made before a run is queued, so a run that cannot train is refused, not spawned.

The Train page and the CLI call :func:`check_startable`; the Model page shows
:func:`weights_problem` with the very same words, so a user reads one message
about one problem wherever it is found. The words are the UI's: the Model
page's "Initial weights: random", not the config value "none".
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from lib.config import TRANSFER_PRESETS, ModelConfig, RunConfig
from lib.errors import KestrelError

PROBE_TIMEOUT_S = 3.0  # a reachable host answers a HEAD request well within this
PROBE_CACHE_S = 300.0  # the answer is kept this long (the Model page reruns often)

_probe_cache: dict[str, tuple[float, str | None]] = {}


class StartRefused(KestrelError):
    """The run cannot train as configured; the message says what to change and where."""


def _probe(url: str) -> str | None:
    """None when ``url`` answers, else a short reason (no network, refused, HTTP error)."""
    now = time.monotonic()
    cached = _probe_cache.get(url)
    if cached and now - cached[0] < PROBE_CACHE_S:
        return cached[1]
    reason: str | None = None
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError as exc:
        reason = f"the server answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        detail = getattr(exc, "reason", exc)
        reason = f"no connection: {detail}"
    _probe_cache[url] = (now, reason)
    return reason


def weights_problem(model: ModelConfig, input_shape: tuple[int, ...]) -> str | None:
    """Why the model's pretrained weights cannot be had here, or None when they can.

    Cached weights are fine; otherwise the download address is probed (a few
    seconds at most), since a worker could fetch them while the server can.
    """
    if model.preset not in TRANSFER_PRESETS or model.weights != "imagenet" or model.start_from:
        return None  # (fine-tuning takes its weights from the trained run)
    from lib import architectures

    size = architectures.transfer_input_size(tuple(input_shape))
    path = architectures.imagenet_weights_path(model.preset, size)
    if path.exists():
        return None
    _, url, _ = architectures._weights_spec(model.preset, size)
    reason = _probe(url)
    if reason is None:
        return None
    title = architectures.PRESET_INFO[model.preset].title
    return (
        f"ImageNet weights for {title} are not on this server ({path}) and cannot be "
        f"downloaded from here ({reason}). On the Model page, set Initial weights to "
        f"'random' to train without them, or download {url} on a machine with internet "
        f"access and copy it to {path.parent}/."
    )


def check_startable(config: RunConfig) -> Any:
    """Everything that would make ``config`` fail right after it was queued.

    Returns:
        The loaded dataset (lib.data Dataset).

    Raises:
        StartRefused, lib.data.DatasetError, lib.training.RunConfigError: with
            the message the user needs; nothing was created.
    """
    from lib.training import validate_run

    dataset = validate_run(config)
    problem = weights_problem(config.model, tuple(dataset.image_shape))
    if problem:
        raise StartRefused(problem)
    return dataset
