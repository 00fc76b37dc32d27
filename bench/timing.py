"""Timing for the benchmarks: interleaved repetitions, median and spread, a quiet start.

Every timed figure in bench/ goes through here, so they all mean the same thing:

- :func:`interleaved` runs each variant ``repeats`` times (at least 5), alternating
  (round 1: A B, round 2: B A, ...), after ``warmup`` untimed calls each, so a burst
  of load from other processes hits every variant alike;
- :func:`summary` reports the median with its spread (min, max, quartiles, and the
  spread as a share of the median), never a best-of;
- :func:`drain` waits until this process has stopped working in the background
  (tf.data prefetch threads, thread pools) before a baseline is timed, and
  :func:`load_check` records the machine's load average before timing (and can wait
  a while for it to fall);
- :func:`verdict` turns two summaries and a target into the "Decision" of a
  benchmark, from the numbers: met, missed, or unclear when the spreads straddle it.

    from bench import timing
    runs = timing.interleaved({"kestrel": f, "baseline": g}, repeats=5)
    runs["kestrel"]["median"], runs["kestrel"]["min"], runs["kestrel"]["max"]
"""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time
from collections.abc import Callable

MIN_REPEATS = 5


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_check(max_load: float | None = None, wait_s: float = 0.0, poll_s: float = 5.0) -> dict:
    """The load average before timing; waits up to ``wait_s`` for the 1-minute load to fall.

    Args:
        max_load: the 1-minute load counted as quiet (default: the number of cores).
        wait_s: how long to wait for a quiet machine (0: just record).

    Returns:
        {"load_average": [1, 5, 15 min], "cores": n, "quiet": bool, "waited_s": seconds}.
        Timing goes ahead either way; ``quiet`` says whether the figures are from a
        machine with spare cores.
    """
    limit = float(max_load if max_load is not None else cores())
    start = time.monotonic()
    load = load_average()
    while load and load[0] > limit and time.monotonic() - start < wait_s:
        time.sleep(poll_s)
        load = load_average()
    return {
        "load_average": load,
        "cores": cores(),
        "quiet": bool(load) and load[0] <= limit,
        "waited_s": round(time.monotonic() - start, 1),
    }


def drain(
    *,
    idle_share: float = 0.05,
    window_s: float = 0.25,
    timeout_s: float = 20.0,
    threads_before: set[int] | None = None,
) -> dict:
    """Wait until this process does no background work, so the next timing is its own.

    Collects garbage (dropping iterators the caller released, which stops their
    tf.data prefetch threads), waits for Python threads started since
    ``threads_before`` to end, then waits until this process uses at most
    ``idle_share`` of one core over ``window_s`` (TensorFlow's own thread pools
    are invisible to Python but not to the CPU clock).

    Returns:
        {"drained": bool, "seconds": waited, "cpu_share": last window's share of a core}.
    """
    start = time.monotonic()
    gc.collect()
    if threads_before is not None:
        for thread in threading.enumerate():
            if thread.ident not in threads_before and thread is not threading.current_thread():
                thread.join(timeout=max(0.0, timeout_s - (time.monotonic() - start)))
    share = 1.0
    while time.monotonic() - start < timeout_s:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(window_s)
        share = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
        if share <= idle_share:
            break
    return {
        "drained": share <= idle_share,
        "seconds": round(time.monotonic() - start, 2),
        "cpu_share": round(share, 3),
    }


def summary(samples: list[float], digits: int = 4) -> dict:
    """Median and spread of timed samples: min, max, quartiles, (max - min) / median."""
    if not samples:
        raise ValueError("no samples to summarise")
    values = sorted(float(v) for v in samples)
    med = statistics.median(values)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "median": round(med, digits),
        "min": round(values[0], digits),
        "max": round(values[-1], digits),
        "q1": round(q1, digits),
        "q3": round(q3, digits),
        "spread_pct": round(100 * (values[-1] - values[0]) / med, 1) if med else None,
        "n": len(values),
        "samples": [round(float(v), digits) for v in samples],
    }


def interleaved(
    variants: dict[str, Callable[[], float | None]],
    *,
    repeats: int = MIN_REPEATS,
    warmup: int = 1,
    between: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict]:
    """Time each variant ``repeats`` times, interleaved; returns a :func:`summary` per variant.

    A variant is a callable; its timing is the clock around the call, unless it
    returns a number, which is then taken as its own measurement (for variants
    that time only part of what they do, or report a rate). The order is rotated
    every round (A B C, B C A, ...), so neither variant always runs first.
    ``between`` (e.g. :func:`drain`) runs, untimed, before every timed call.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if between is not None:
                between()
            t0 = clock()
            value = variants[name]()
            elapsed = clock() - t0
            samples[name].append(float(value) if isinstance(value, (int, float)) else elapsed)
    return {name: summary(values) for name, values in samples.items()}


def ratio(a: dict, b: dict) -> dict:
    """``a / b`` of two summaries: the ratio of medians and its worst and best case."""
    return {
        "median": round(a["median"] / b["median"], 4) if b["median"] else None,
        "low": round(a["min"] / b["max"], 4) if b["max"] else None,
        "high": round(a["max"] / b["min"], 4) if b["min"] else None,
    }


def verdict(value: dict, target: float, *, at_least: bool) -> str:
    """ "met", "missed" or "unclear" for a :func:`ratio` (or summary) against ``target``.

    "met" when the median meets the target; "unclear" is added where the spread
    reaches across the target (``at_least``: the figure must be ≥ target, else ≤).
    """
    med, low = value["median"], value.get("low", value.get("min"))
    high = value.get("high", value.get("max"))
    if med is None:
        return "unclear"
    ok = med >= target if at_least else med <= target
    straddles = low is not None and high is not None and low < target < high
    if ok:
        return "met (spread reaches past the target)" if straddles else "met"
    return "missed (spread reaches past the target)" if straddles else "missed"
