"""A 10-minute tuning study on all of Fashion-MNIST against the default recipe.

    python -m bench --only tune_study
    python bench/bench_tune_study.py [tiny|full]

The issue's measure: a 10-minute study with pruning finds a recipe whose test
accuracy at the default 6-epoch budget is at least the default recipe's. The
study (median pruner, one worker, the search space of ``bench_tune``) trains on
all 60,000 training images (54,000 train, 6,000 validation); its trial 0 is the
default recipe, so the default is trained in the same invocation, through the
same machinery. After 600 seconds the study is stopped as the Tune page's Stop
does; the trial running then does not count. Reported: every trial, the best
trial by validation accuracy (as the study chooses) and its test accuracy against
the default's, and whether the best trial is the default itself.

A single run with fixed seeds: one study takes ten minutes plus the trial that
finishes after it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = {
    # tiny: the stop at the time limit is what is checked; one or two trials finish first
    "tiny": {"per_class": 30, "time_limit_s": 30.0, "trials": 3},
    "full": {"per_class": 0, "time_limit_s": 600.0, "trials": 100},
}


def run(size: str = "full") -> dict[str, Any]:
    from bench import bench_tune

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    cfg = SIZES[size]
    study = bench_tune.study_vs_default(
        size,
        per_class=cfg["per_class"],
        n_trials=cfg["trials"],
        time_limit_s=cfg["time_limit_s"],
        name=f"bench-10min-{size}",
    )
    return {"size": size, "note": "one study, fixed seeds", "study_vs_default": study}


def markdown(result: dict) -> str:
    """The study's trials and its verdict against the default recipe."""
    r = result["study_vs_default"]

    def pct(value) -> str:
        return "–" if value is None else f"{value:.2%}"

    lines = [
        f"All {r['per_class'] * 10:,} Fashion-MNIST training images, "
        f"{r['budget_epochs']}-epoch trials, median pruner, one worker; stopped after "
        f"{r['time_limit_s'] or 0:.0f} s ({r['study_seconds']:.0f} s with the stop); "
        f"load average after {'/'.join(str(v) for v in r['load_average_after'])}.",
        "",
        "| trial | state | val accuracy | test accuracy | epochs | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for t in r["trials"]:
        state = t["state"] + (" (stopped at the limit)" if t.get("stopped_with_study") else "")
        params = ", ".join(
            f"{k.split('.', 1)[1]} {v:.3g}" if isinstance(v, float) else f"{k.split('.', 1)[1]} {v}"
            for k, v in t["params"].items()
        )
        lines.append(
            f"| {t['number']}{' (default)' if t['number'] == 0 else ''} | {state} | "
            f"{pct(t['val_accuracy'])} | {pct(t['test_accuracy'])} | "
            f"{t['epochs_done'] if t['epochs_done'] is not None else '–'} | {params} |"
        )
    verdict = "met" if r["best_at_least_default"] else "MISSED"
    same = " (the default itself)" if r["best_is_default"] else ""
    best_val = next(
        (t["val_accuracy"] for t in r["trials"] if t["number"] == r["best_trial"]), None
    )
    ties = [
        t for t in r["trials"]
        if t["number"] != r["best_trial"] and best_val is not None and t["val_accuracy"] == best_val
    ]  # fmt: skip
    if ties:  # Optuna's best trial is the first of equals
        same += ", tied on validation accuracy with " + ", ".join(
            f"#{t['number']} (test {pct(t['test_accuracy'])})" for t in ties
        )
    lines += [
        "",
        f"Best trial by validation accuracy: #{r['best_trial']}{same}, test accuracy "
        f"{pct(r['best_test_accuracy'])} against the default's {pct(r['default_test_accuracy'])}: "
        f"at least the default's — {verdict}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
