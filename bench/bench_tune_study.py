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
    "tiny": {"per_class": 30, "time_limit_s": 60.0, "trials": 3},
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


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
