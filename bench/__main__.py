"""Run Kestrel's benchmarks and write bench/results/<machine>-<date>.json and .md.

    python -m bench                                   # everything, full size (`make bench`)
    python -m bench --only app --only predict         # some of them
    python -m bench --size tiny                       # seconds, to check they run
    python -m bench --only time_to_accuracy --recipes fast,tutorial --budget tutorial=300
    KERAS_BACKEND=jax python -m bench --only gpu_precision --budget total=330   # a GPU, no TF

Each benchmark is a module ``bench/bench_<name>.py`` with ``run(size="full", ...)``
returning a JSON-ready dict (and optionally ``markdown(result) -> str``). Each runs
in its own child process, so one benchmark's imports, threads and memory do not
colour another's figures, and a crash in one still leaves the others' results.
Results of a day on one machine are merged into one file, so ``--only`` re-runs
one benchmark without losing the rest (a module with ``merge(old, new)`` decides how
a day's two results of it combine: time_to_accuracy keeps the newer, and beside it, as
tables of their own, only earlier invocations that trained none of its recipes, since
rows measured under other loads never share a table);
tiny runs go to ``...-tiny.json``.

Before each full-size benchmark the machine is given up to ``--quiet-wait`` seconds
(300) for its 1-minute load average to fall to the number of cores, so one
benchmark's leftover load does not slow the next. If the load has not fallen by then,
something else keeps the machine busy: the later benchmarks of the invocation no
longer wait. The load each started under is kept with its result, and a benchmark
that started on a busy machine says so at the top of its section (and in README.md).
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import machine, timing

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
QUIET_WAIT_S = 300.0  # the longest a full-size benchmark waits for a quiet machine

# name -> (module, what it measures); the order is the order of the report.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "time_to_accuracy": ("bench.bench_time_to_accuracy",
                         "Fashion-MNIST time to test accuracy: Kestrel vs the tutorial recipe"),
    "augment": ("bench.bench_augment",
                "augmented input pipeline vs ImageDataGenerator, images/s"),
    "progress": ("bench.bench_progress", "progress streaming overhead: Kestrel callbacks vs plain fit"),
    "predict": ("bench.bench_predict", "single-image prediction latency, p50/p95"),
    "gradcam": ("bench.bench_gradcam", "Grad-CAM localisation: map peak inside the shape's box"),
    "health": ("bench.bench_health", "data health: planted label noise and leakage vs a plain CV CNN"),
    "ablation": ("bench.bench_ablation", "recipe parts' CPU cost per training image (BatchNorm, width, EMA...)"),
    "decode": ("bench.bench_decode", "JPEG folder: streamed decode+resize vs a Pillow loop, images/s"),
    "ood": ("bench.bench_ood", "unknown detection: AUROC and FPR at 95 % TPR per score and set"),
    "robustness": ("bench.bench_robustness", "accuracy under attack (eps 2/255) and clean, before/after hardening"),
    "compress": ("bench.bench_compress", "int8 and 80 % pruning of the Fashion-MNIST demo vs float32 TFLite"),
    "transfer_cache": ("bench.bench_transfer_cache", "transfer learning: cached backbone features vs plain frozen epochs"),
    "gpu_precision": ("bench.bench_gpu_precision",
                      "GPU: the recipes in float32, mixed float16 and mixed bfloat16"),
    "app": ("bench.bench_app", "app responsiveness: page script runs, server start, Home in Chromium"),
    "load": ("bench.bench_load", "under load: browsers on every page while runs train and a worker dies"),
    "stress_kill": ("bench.stress_kill", "reliability: SIGKILL training workers, resume, count losses"),
    "tune": ("bench.bench_tune", "tuning: pruned study vs default recipe, LR finder vs grid, two workers"),
    "tune_study": ("bench.bench_tune_study", "tuning: a 10-minute study on all of Fashion-MNIST vs the default recipe"),
}  # fmt: skip
CHILD_TIMEOUT_S = 3 * 3600


def available(name: str) -> bool:
    """Whether benchmark ``name``'s module exists in this checkout."""
    module = BENCHMARKS[name][0]
    return (ROOT / (module.replace(".", "/") + ".py")).is_file()


def run_one(name: str, size: str, options: dict) -> dict:
    """Import benchmark ``name`` and call its ``run``, passing only the options it accepts."""
    module = importlib.import_module(BENCHMARKS[name][0])
    accepted = inspect.signature(module.run).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    return module.run(size=size, **kwargs)


def run_child(name: str, size: str, options: dict) -> dict:
    """Run one benchmark in a child ``python -m bench --child`` and collect its result."""
    with tempfile.TemporaryDirectory(prefix="kestrel-bench-") as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # Runs the benchmarks create go to a throwaway workspace, never the user's.
        env["KESTREL_HOME"] = str(Path(tmp) / "workspace")
        cmd = [
            sys.executable,
            "-m",
            "bench",
            "--child",
            name,
            "--size",
            size,
            "--child-options",
            json.dumps(options),
            "--child-out",
            str(out),
        ]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=CHILD_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return {
                "error": f"timed out after {CHILD_TIMEOUT_S} s",
                "seconds": round(time.perf_counter() - start, 1),
            }
        seconds = round(time.perf_counter() - start, 1)
        if out.is_file():
            data = json.loads(out.read_text(encoding="utf-8"))
            data["seconds"] = seconds
            return data
        return {
            "error": f"the benchmark process exited with {proc.returncode} and no result",
            "seconds": seconds,
        }


def _child(name: str, size: str, options: dict, out: Path) -> int:
    try:
        data = {"result": run_one(name, size, options)}
        code = 0
    except Exception as exc:
        traceback.print_exc()
        data = {"error": f"{type(exc).__name__}: {exc}"}
        code = 1
    out.write_text(json.dumps(data, indent=2, default=_json_default), encoding="utf-8")
    return code


def _json_default(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------- report


def generic_markdown(result, prefix: str = "") -> list[tuple[str, str]]:
    """(figure, value) rows for a result without its own ``markdown``: scalars, flattened."""
    rows: list[tuple[str, str]] = []
    if isinstance(result, dict):
        for key, value in result.items():
            rows += generic_markdown(
                value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"
            )
    elif isinstance(result, list):
        if len(result) <= 6 and all(isinstance(v, (int, float, str)) for v in result):
            rows.append((prefix, ", ".join(_fmt(v) for v in result)))
    else:
        rows.append((prefix.rstrip("."), _fmt(result)))
    return rows


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def section_markdown(name: str, entry: dict) -> str:
    """One benchmark's section of the report."""
    module, what = BENCHMARKS.get(name, (name, name))
    head = f"### {name}: {what}\n\n"
    if "error" in entry:
        return head + f"**failed** after {entry.get('seconds', '?')} s: {entry['error']}\n"
    if "skipped" in entry:
        return head + f"skipped: {entry['skipped']}\n"
    result = entry["result"]
    head += busy_note(name, entry.get("load_before"))
    try:
        mod = importlib.import_module(module)
        render = getattr(mod, "markdown", None)
    except Exception:
        render = None
    if render is not None:
        body = render(result)
    else:
        rows = generic_markdown(result)
        body = "| figure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    # A result that keeps several invocations (time_to_accuracy) gives each one's own line.
    own_lines = isinstance(result, dict) and WALL in result
    return head + body + ("" if own_lines else "\n" + wall_line(entry))


WALL = "wall"  # where a merged result keeps each invocation's wall_line facts (RUN_FACTS)
RUN_FACTS = ("seconds", "load_before", "load_average_after")


def wall_line(entry: dict) -> str:
    """An invocation's wall time and the load before and after it, as a report's last line."""
    load = "/".join(str(v) for v in entry.get("load_average_after", [])) or "?"
    before = entry.get("load_before") or {}
    started = "/".join(str(v) for v in before.get("load_average", []))
    started = f"load average before: {started}; " if started else ""
    return f"_{entry.get('seconds', '?')} s wall time; {started}load average after: {load}._\n"


def busy_note(name: str, load_before: dict | None) -> str:
    """The warning a section opens with when its benchmark started on a busy machine."""
    if not load_before or load_before.get("quiet", True):
        return ""
    one_minute = (load_before.get("load_average") or ["?"])[0]
    return (
        f"**Measured on a busy machine:** the 1-minute load average was {one_minute} on "
        f"{load_before.get('cores', '?')} cores when it started (after waiting "
        f"{load_before.get('waited_s', 0):g} s for it to fall), so its timings are slower "
        "and more spread than on a quiet machine. Re-run it alone: "
        f"`python -m bench --only {name}`.\n\n"
    )


def quiet_start(size: str, wait_s: float) -> dict:
    """Wait (full size only) for the machine's load to fall to its cores; say how it was."""
    load = timing.load_average()
    if size == "full" and wait_s > 0 and load and load[0] > timing.cores():
        print(
            f"  waiting up to {wait_s:g} s for the 1-minute load ({load[0]}) to fall to "
            f"{timing.cores()}...",
            flush=True,
        )
    return timing.load_check(wait_s=wait_s if size == "full" else 0.0)


def report_markdown(report: dict) -> str:
    """The whole report: machine, then one section per benchmark."""
    info = report["machine"]
    lines = [
        f"## Kestrel benchmarks, {report['date']} ({report['size']})",
        "",
        f"Machine: {machine.summary_line(info)}.",
        "",
    ]
    body = "\n".join(
        section_markdown(name, report["benchmarks"][name])
        for name in _ordered(report["benchmarks"])
    )
    return "\n".join(lines) + body


def _ordered(names) -> list[str]:
    known = [n for n in BENCHMARKS if n in names]
    return known + sorted(n for n in names if n not in BENCHMARKS)


def _merge_entry(name: str, old: dict | None, new: dict) -> dict:
    """A benchmark's new entry, combined with today's earlier one where its module can merge."""
    if not old or "result" not in old or "result" not in new or name not in BENCHMARKS:
        return new
    module = importlib.import_module(BENCHMARKS[name][0])
    merge = getattr(module, "merge", None)
    if merge is None:
        return new
    if getattr(module, "KEEPS_INVOCATIONS", False):
        # Its result keeps earlier invocations beside the new one: each keeps its own wall
        # time and load (``WALL``), which the entry holds only for the newest.
        old_result = {WALL: {k: old[k] for k in RUN_FACTS if k in old}, **old["result"]}
        new_result = {**new["result"], WALL: {k: new[k] for k in RUN_FACTS if k in new}}
        return {**new, "result": merge(old_result, new_result)}
    return {**new, "result": merge(old["result"], new["result"])}


def write_results(
    benchmarks: dict[str, dict],
    *,
    size: str,
    out_dir: Path = RESULTS_DIR,
    info: dict | None = None,
    argv: list[str] | None = None,
) -> tuple[Path, Path]:
    """Merge ``benchmarks`` into today's result file for this machine; write JSON and markdown.

    Returns:
        (json path, markdown path).
    """
    info = info or machine.describe()
    date = time.strftime("%Y-%m-%d")
    base = f"{machine.machine_slug(info)}-{date}"
    suffix = "" if size == "full" else f"-{size}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Several `--only` runs may finish at once: merge under a lock so none is lost.
    with open(out_dir / f".{base}{suffix}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        json_path = _same_machine_file(out_dir, base, suffix, info)
        md_path = json_path.with_suffix(".md")
        return _merge_and_write(benchmarks, json_path, md_path, date, size, info, argv)


def _same_machine_file(out_dir: Path, base: str, suffix: str, info: dict) -> Path:
    """Today's results file of this machine: ``base``, or ``base-2``... where ``base`` holds
    another machine's figures (same name and extensions, other details), so that a file's
    figures always come from the one machine its header names."""
    for n in range(1, 100):
        path = out_dir / f"{base}{'' if n == 1 else f'-{n}'}{suffix}.json"
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return path
        if machine.identity(previous.get("machine") or {}) == machine.identity(info):
            return path
    raise RuntimeError(f"100 machines' results for {base} in {out_dir}: clear some out")


def _merge_and_write(benchmarks, json_path, md_path, date, size, info, argv) -> tuple[Path, Path]:
    previous = {}
    if json_path.is_file():
        try:
            previous = json.loads(json_path.read_text(encoding="utf-8")).get("benchmarks", {})
        except ValueError:
            previous = {}
    merged = dict(previous)
    for name, entry in benchmarks.items():
        merged[name] = _merge_entry(name, previous.get(name), entry)
    report = {
        "date": date,
        # When the file was last written (UTC): orders two machines' files of one date.
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "size": size,
        "machine": info,
        "command": " ".join(argv or []),
        "benchmarks": merged,
    }
    from lib.runstore import atomic_write_bytes

    text = json.dumps(report, indent=2, default=_json_default) + "\n"
    atomic_write_bytes(json_path, text.encode("utf-8"))
    atomic_write_bytes(md_path, report_markdown(report).encode("utf-8"))
    return json_path, md_path


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these (repeat or comma-separate): {', '.join(BENCHMARKS)}",
    )
    p.add_argument(
        "--size",
        choices=("tiny", "full"),
        default="full",
        help="tiny: seconds, to check the benchmarks run; full: the real figures",
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT_S,
        metavar="SECONDS",
        help="longest wait, before each full-size benchmark, for the load to fall to the "
        f"number of cores (default {QUIET_WAIT_S:g}; 0: do not wait)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the benchmarks in this process (for debugging)",
    )
    g = p.add_argument_group("time_to_accuracy")
    g.add_argument("--recipes", help="comma-separated recipes; the tutorial baseline always runs")
    g.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="RECIPE=SECONDS",
        help="training seconds a recipe may use (fast=120, tutorial=300, accurate=600); "
        "gpu_precision: total=SECONDS, after which it starts no further training",
    )
    g.add_argument("--evals-per-epoch", type=int, help="test evaluations per epoch (default 2)")
    g.add_argument("--val-fraction", type=float, help="Kestrel recipes' validation share (0.1)")
    g.add_argument(
        "--repeats", type=int,
        help="trainings per recipe, interleaved (default 1; gpu_precision: 5)",
    )  # fmt: skip
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-options", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def options_from(args: argparse.Namespace) -> dict:
    """The per-benchmark keyword options the command line sets (JSON-ready)."""
    budgets = {}
    for item in args.budget:
        name, _, seconds = item.partition("=")
        try:
            budgets[name.strip()] = float(seconds)
        except ValueError:
            raise SystemExit(f"--budget expects RECIPE=SECONDS, got {item!r}") from None
    return {
        "recipes": [r.strip() for r in args.recipes.split(",")] if args.recipes else None,
        "budgets": budgets or None,
        "evals_per_epoch": args.evals_per_epoch,
        "val_fraction": args.val_fraction,
        "repeats": args.repeats,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return _child(args.child, args.size, json.loads(args.child_options), args.child_out)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    names = names or list(BENCHMARKS)
    options = options_from(args)
    info = machine.describe()
    print(f"machine: {machine.summary_line(info)}", flush=True)
    results: dict[str, dict] = {}
    wait_s = args.quiet_wait
    for name in names:
        if not available(name):
            results[name] = {"skipped": f"{BENCHMARKS[name][0]} is not in this checkout"}
            print(f"[{name}] skipped: not present", flush=True)
            continue
        load_before = quiet_start(args.size, wait_s)
        if not load_before["quiet"] and wait_s > 0 and args.size == "full":
            print(
                "  the machine stayed busy: the next benchmarks start without waiting", flush=True
            )
            wait_s = 0.0
        print(f"[{name}] running ({args.size})...", flush=True)
        if args.in_process:
            start = time.perf_counter()
            try:
                entry = {"result": run_one(name, args.size, options)}
            except Exception as exc:
                traceback.print_exc()
                entry = {"error": f"{type(exc).__name__}: {exc}"}
            entry["seconds"] = round(time.perf_counter() - start, 1)
        else:
            entry = run_child(name, args.size, options)
        entry["load_before"] = load_before
        entry["load_average_after"] = machine.load_average()
        results[name] = entry
        print(
            f"[{name}] {'failed: ' + entry['error'] if 'error' in entry else 'done'} "
            f"in {entry['seconds']} s",
            flush=True,
        )
    json_path, md_path = write_results(
        results,
        size=args.size,
        out_dir=args.out,
        info=info,
        argv=["python", "-m", "bench", *(argv or sys.argv[1:])],
    )
    print(
        f"wrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}"
        f" and {md_path.name}",
        flush=True,
    )
    print(md_path.read_text(encoding="utf-8"))
    if args.size == "full" and args.out == RESULTS_DIR:  # README's tables follow the results
        from bench import readme_tables

        print("README.md: " + ("updated" if readme_tables.update() else "already up to date"))
    return 1 if any("error" in e for e in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
