"""Every benchmark runs at size "tiny" and returns the figures it promises, so none can rot.

The figures themselves are not judged here (a loaded CI machine says nothing
about speed); ``make bench`` measures them. Each benchmark module exposes
``run(size)`` returning a JSON-ready dict.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from bench import __main__ as bench_main
from bench import bench_time_to_accuracy, machine
from bench.__main__ import ROOT
from bench.bench_time_to_accuracy import THRESHOLDS, reached


def numbers(value) -> list[float]:
    """Every number in a nested result."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in numbers(v)]
    return []


def check_time_to_accuracy(result: dict) -> None:
    assert set(result["recipes"]) == {"fast", "tutorial"}
    # Each training ran in a process of its own, neither this one nor the other's.
    pids = {result["recipes"][name]["process_id"] for name in ("fast", "tutorial")}
    assert len(pids) == 2 and os.getpid() not in pids and result["process_per_training"]
    assert "each training in a Python process of its own" in bench_time_to_accuracy.markdown(result)
    for name, r in result["recipes"].items():
        assert r["train_seconds"] > 0, name
        assert r["images_per_sec"] > 0, name
        assert r["epochs_done"] == 1.0, name
        assert r["curve"], name
        assert 0.0 < r["final_test_accuracy"] <= 1.0, name
        assert set(r["seconds_to"]) == {f"{t:.2f}" for t in THRESHOLDS}, name
    # Each point says what the process waited for: the disk (its major page faults,
    # the machine's iowait) or the host (steal).
    first = result["recipes"]["fast"]["curve"][0]
    assert first["major_faults"] >= 0 and first["iowait_seconds"] >= 0
    assert first["steal_seconds"] >= 0
    # ...and how much of its wall time the kernel's CPU accounting saw pass.
    assert 0 < first["accounted_seconds"] <= first["train_seconds"] + 1
    assert result["recipes"]["fast"]["unaccounted_seconds"] is not None
    assert isinstance(result["recipes"]["fast"]["stalls"], list)
    assert (
        result["recipes"]["fast"]["steal_seconds"]
        == result["recipes"]["fast"]["curve"][-1]["steal_seconds"]
    )
    assert "(steal)" in bench_time_to_accuracy.markdown(result)
    # The Kestrel recipe really went through the trainer, which wrote its metrics.
    metrics = result["recipes"]["fast"]["trainer_metrics"]
    assert metrics["epochs_done"] == 1
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


def check_augment(result: dict) -> None:
    assert result["preview"]["warm_s"] > 0
    for row in result["throughput"]:
        assert row["kestrel_images_per_s"] > 0 and row["legacy_images_per_s"] > 0
        assert row["ratio"] > 0


def check_app(result: dict) -> None:
    home = result["pages"]["pages/home.py"]
    assert home["cold_s"] > 0 and home["warm_s"] > 0
    assert home["exceptions"] == []
    assert "pages/home.py" in result["pages_in_navigation"]
    server = result["server"]
    assert 0 < server["health_s"] <= server["home_rendered_s"]
    assert server["home_exceptions"] == 0


def check_numbers(result: dict) -> None:
    """For benchmarks whose keys this test does not know: finite, non-negative, some positive."""
    found = numbers(result)
    assert found, "the result holds no figures"
    assert all(math.isfinite(n) and n >= 0 for n in found), found
    assert any(n > 0 for n in found), found


def check_tune(result: dict) -> None:
    """A study's figures include differences (points below the grid's best), which may be negative."""
    found = numbers(result)
    assert found and all(math.isfinite(n) for n in found), found
    assert result["finder_vs_grid"]["at_suggestion"]["learning_rate"] > 0


def check_health(result: dict) -> None:
    """Label figures are the medians of the seeds listed beside them, for both methods."""
    check_numbers(result)
    for method in ("kestrel", "baseline_two_conv_cnn_4fold_4epochs"):
        entry = result["label_noise"][method]
        assert [r["seed"] for r in entry["by_seed"]] == result["seeds"]
        for key in ("recall_at_1_5n", "precision_at_n"):
            values = sorted(r[key] for r in entry["by_seed"])
            assert entry[key] == pytest.approx(values[len(values) // 2], abs=1e-4)
    assert (
        result["label_noise"]["precision_at_n"]
        == result["label_noise"]["kestrel"]["precision_at_n"]
    )


def check_ablation(result: dict) -> None:
    """Mixed precision's CPU form is timed beside float32, and the policy is put back."""
    import keras

    check_numbers(result)
    timed = set(result["variants"]) | set(result["refused"])
    assert {"bfloat16", "fast_cnn_bfloat16", "mobilenetv2", "mobilenetv2_bfloat16"} <= timed
    # Every CNN "auto" trains in bfloat16 is timed in both precisions, and the decision
    # line gives each pair's ratio.
    # Keras' own BatchNorm step is timed beside the fused kernel the trainer uses.
    assert {"keras_batchnorm", "keras_batchnorm_bfloat16"} <= timed
    assert "TensorFlow's fused kernel: " in result["decision"]
    for name in ("lenet5", "vgg_small", "resnet20", "no_batchnorm"):
        assert {name, f"{name}_bfloat16"} <= timed
        if {name, f"{name}_bfloat16"} <= set(result["variants"]):
            assert f" {name} " in result["decision"].split("relative to float32:")[1] + " "
    assert keras.config.dtype_policy().name == "float32"


def check_gpu_precision(result: dict) -> None:
    """Skipped without a GPU; forced onto the CPU, it trains every recipe and policy it names."""
    import keras

    from bench import bench_gpu_precision

    if "skipped" in result:  # this machine has no GPU: say so, and measure nothing
        assert "no GPU" in result["skipped"]
        assert "Skipped: no GPU" in bench_gpu_precision.markdown(result)
    result = bench_gpu_precision.run("tiny", recipes=["fast"], repeats=1, require_gpu=False)
    json.dumps(result)
    keys = {f"fast/{p}" for p in ("float32", "mixed_float16", "mixed_bfloat16")}
    assert set(result["throughput"]) == keys == set(result["time_to_accuracy"])
    for key in keys:
        assert result["throughput"][key]["images_per_sec"]["median"] > 0
        entry = result["time_to_accuracy"][key]
        assert entry["epochs_done"] == 1.0 and entry["repeats"] == 1, key
        assert 0.0 < entry["final_test_accuracy"] <= 1.0, key
        assert 0 < entry["first_epoch_seconds"] <= entry["train_seconds"] + 1e-6, key
    text = bench_gpu_precision.markdown(result)
    assert text.count("\n| fast | ") == 3 and "mixed bfloat16" in text
    assert keras.config.dtype_policy().name == "float32"  # the policy is put back
    # The accurate recipe mirrors its images in the model, and mixed float16 compiles as
    # the trainer does: Keras wraps the optimizer in a LossScaleOptimizer.
    data = {"shape": (28, 28, 1), "classes": 10}
    cfg = bench_gpu_precision.recipe_config("accurate", "tiny")
    model = bench_gpu_precision.build(cfg, "mixed_float16", data, steps=5)
    assert model.get_layer("mirror") is not None
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    core = model.layers[-1]
    assert core.dtype_policy.name == "mixed_float16"
    assert core.layers[-1].dtype_policy.name == "float32"  # logits stay float32
    assert keras.config.dtype_policy().name == "float32"


CHECKS = {
    "time_to_accuracy": check_time_to_accuracy,
    "gpu_precision": check_gpu_precision,
    "ablation": check_ablation,
    "health": check_health,
    "augment": check_augment,
    "app": check_app,
    "tune": check_tune,
}
# Benchmarks whose tiny run a test of their own already makes, with stronger checks
# (and the same JSON and report checks as here): run once per suite, not twice.
TINY_RUN_ELSEWHERE = {"load": ROOT / "tests" / "e2e" / "test_load.py"}
# Every other registered benchmark runs tiny here; those without a check get check_numbers.
CASES = [
    (name, CHECKS.get(name, check_numbers))
    for name in bench_main.BENCHMARKS
    if name not in TINY_RUN_ELSEWHERE
]


def test_every_benchmark_is_covered_and_present():
    assert {name for name, _ in CASES} | set(TINY_RUN_ELSEWHERE) == set(bench_main.BENCHMARKS)
    for name, test_file in TINY_RUN_ELSEWHERE.items():
        text = test_file.read_text(encoding="utf-8")
        assert f'bench_{name}.run("tiny"' in text, f"{test_file} no longer runs {name} tiny"
        assert f'section_markdown("{name}"' in text, f"{test_file} no longer renders {name}"
    missing = [name for name in bench_main.BENCHMARKS if not bench_main.available(name)]
    assert not missing, f"benchmark modules missing: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "check"), CASES, ids=[c[0] for c in CASES])
def test_benchmark_runs_tiny(name, check, tmp_path):
    if not bench_main.available(name):
        pytest.fail(f"{bench_main.BENCHMARKS[name][0]} is missing")
    if name in ("app", "load"):
        # Its own Chromium: Playwright's sync API refuses to start in a process where
        # another sync Playwright (the e2e tier's browser) is still open.
        outcome = bench_main.run_child(name, "tiny", {})
        assert "result" in outcome, outcome.get("error")
        result = outcome["result"]
    else:
        result = bench_main.run_one(name, "tiny", {})
    json.dumps(result)  # JSON-ready, as the results file needs
    check(result)
    # The report renders it and the results files are written.
    json_path, md_path = bench_main.write_results(
        {name: {"result": result, "seconds": 1.0}}, size="tiny", out_dir=tmp_path
    )
    report = json.loads(json_path.read_text())
    assert report["benchmarks"][name]["result"] == json.loads(json.dumps(result))
    assert report["machine"]["cores"] >= 1
    assert f"### {name}" in md_path.read_text()


@pytest.mark.parametrize(
    ("accuracies", "expected_seconds"),
    [
        ([0.80, 0.89, 0.905, 0.93], {"0.88": 2.0, "0.90": 3.0, "0.91": 4.0, "0.93": 4.0}),
        ([0.91, 0.90], {"0.88": 1.0, "0.91": 1.0, "0.92": None}),  # first hit counts
        ([0.5], {"0.88": None, "0.93": None}),
    ],
)
def test_reached_reports_the_first_point_at_each_threshold(accuracies, expected_seconds):
    points = [
        {"epoch": i + 1.0, "train_seconds": i + 1.0, "test_accuracy": a}
        for i, a in enumerate(accuracies)
    ]
    seconds, epochs = reached(points)
    for key, value in expected_seconds.items():
        assert seconds[key] == value
        assert epochs[key] == value  # epochs equal seconds in this table


def _curve(walls, cpus, **waits):
    points, wall, cpu = [], 0.0, 0.0
    for i, (w, c) in enumerate(zip(walls, cpus, strict=True)):
        wall, cpu = wall + w, cpu + c
        point = {"epoch": (i + 1) / 2, "train_seconds": wall, "train_cpu_seconds": cpu}
        points.append({**point, **{k: v[i] for k, v in waits.items()}})
    return points


def test_a_half_epoch_spent_waiting_is_reported_as_a_stall_with_its_waits():
    # Usual pace: 2 CPU-s per wall second. The first half-epoch took 40 s for 9 CPU-s.
    curve = _curve(
        [40, 4, 4.5, 4, 3.8],
        [9, 8, 9, 8, 7.6],
        major_faults=[9000, 9010, 9012, 9012, 9020],
        iowait_seconds=[30.0, 30.5, 30.5, 31.0, 31.0],
        steal_seconds=[0.2, 0.2, 0.3, 0.3, 0.3],
    )
    found = bench_time_to_accuracy.stalls(curve)
    assert len(found) == 1
    stall = found[0]
    assert (stall["from_epoch"], stall["to_epoch"]) == (0.0, 0.5)
    assert stall["wall_seconds"] == 40 and stall["cpu_seconds"] == 9
    assert stall["lost_seconds"] == pytest.approx(35.5, abs=0.1)
    assert stall["major_faults"] == 9000 and stall["iowait_seconds"] == 30.0
    sentence = bench_time_to_accuracy.stall_sentence("accurate", stall)
    assert "40.0 s of wall time for 9.0 CPU-s" in sentence and "9,000 major page faults" in sentence


def test_a_stall_the_cpu_accounting_missed_is_time_the_machine_was_paused(tmp_path):
    # /proc/stat: 2 cores; user..steal sum to 2 x 1000 ticks, so 1000 ticks of accounted time.
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  600 0 200 1000 100 0 0 100 50 0\n"
        "cpu0 300 0 100 500 50 0 0 50 25 0\ncpu1 300 0 100 500 50 0 0 50 25 0\nintr 1\n"
    )
    hz = os.sysconf("SC_CLK_TCK")
    waits = machine.waiting_seconds(stat)
    assert waits == {"iowait": 100 / hz, "steal": 100 / hz, "accounted": 1000 / hz}
    assert machine.waiting_seconds(tmp_path / "absent") == {}
    # A half-epoch of 40 s wall time for which the kernel accounted only 6 s: 34 s paused.
    curve = _curve(
        [40, 4, 4, 4], [9, 8, 8, 8], accounted_seconds=[6.0, 10.0, 14.0, 18.0],
        major_faults=[0, 0, 0, 0], iowait_seconds=[0.0] * 4, steal_seconds=[0.0] * 4,
    )  # fmt: skip
    (stall,) = bench_time_to_accuracy.stalls(curve)
    assert stall["unaccounted_seconds"] == 34.0
    sentence = bench_time_to_accuracy.stall_sentence("accurate", stall)
    assert "not accounted to any CPU state (as a paused machine leaves) 34.0 s" in sentence
    assert bench_time_to_accuracy._unaccounted(curve[-1]) == 34.0
    assert bench_time_to_accuracy._unaccounted({"train_seconds": 3.0}) is None


def test_ordinary_jitter_is_not_a_stall_and_old_curves_without_cpu_time_have_none():
    # 3 s over the usual pace is noise on a shared machine, not a stall.
    assert bench_time_to_accuracy.stalls(_curve([4, 7, 4, 4], [8, 8, 8, 8])) == []
    old = [{"epoch": 1.0, "train_seconds": 50.0, "test_accuracy": 0.9}]
    assert bench_time_to_accuracy.stalls(old) == []


def test_the_report_lists_each_repetitions_stalls():
    stalled = {"seconds_to": {}, "epochs_to": {}, "cpu_seconds_to": {}}
    runs = []
    for walls in ([40, 4, 4], [4, 4, 4]):
        curve = _curve(walls, [9 if w == 40 else 8 for w in walls])
        runs.append(
            {
                **stalled,
                **{k: 1.0 for k in ("train_seconds", "train_cpu_seconds", "images_per_sec")},
                **{k: 0.9 for k in ("final_test_accuracy", "best_test_accuracy", "epochs_done")},
                "stalls": bench_time_to_accuracy.stalls(curve),
                "curve": curve,
            }
        )
    combined = bench_time_to_accuracy._combine(runs)
    assert [s["repeat"] for s in combined["stalls"]] == [1]
    assert "(training 1) between epochs 0 and 0.5" in bench_time_to_accuracy.stall_sentence(
        "accurate", combined["stalls"][0]
    )


def test_a_target_missed_by_some_repetitions_says_which_reached_it():
    """A median needs every training to reach the accuracy; the verdict says who came close."""

    def one(seconds_to_93):
        to = {"0.93": seconds_to_93, "0.94": None}
        return {
            "seconds_to": to, "epochs_to": dict(to), "cpu_seconds_to": dict(to),
            **{k: 1.0 for k in ("train_seconds", "train_cpu_seconds", "images_per_sec")},
            **{k: 0.93 for k in ("final_test_accuracy", "best_test_accuracy", "epochs_done")},
            "description": "a recipe", "load_average": {"before": [1.0]},
        }  # fmt: skip

    recipes = {
        "accurate": bench_time_to_accuracy._combine([one(100.0), one(None), one(None)]),
        "fast": bench_time_to_accuracy._combine([one(None)] * 3),
        "precise": bench_time_to_accuracy._combine([one(90.0), one(110.0), one(100.0)]),
    }
    assert recipes["accurate"]["seconds_to"]["0.93"] is None  # 1 of 3 is no median
    result = {"recipes": recipes, "repeats": 3, "order": [], "thresholds": [0.93, 0.94]}
    result["targets"] = bench_time_to_accuracy.target_verdicts(recipes)[1:]
    text = bench_time_to_accuracy.markdown(result)
    # Not called met, but when the trainings that reached it did is shown.
    assert "| accurate | not by all (1/3: 100 s) | not reached | 93.00% (every training) |" in text
    assert "| precise | 100 s (100 ep; 90–110 s, 3/3) |" in text  # the median and its spread
    assert (
        "target ≥ 94% within 600 s: **not met** (none of accurate, fast, precise reached it)"
    ) in text
    assert "target ≥ 93% within 120 s: **met** by precise" in text
    without = {"recipes": {k: v for k, v in recipes.items() if k != "precise"}}
    assert bench_time_to_accuracy._none_reached(without, 0.93) == (
        " (none of accurate, fast reached it in every training; reached by accurate in 1/3, "
        "at 100 s)"
    )


def test_the_machine_line_names_proactive_page_reclaim(tmp_path):
    ctx = tmp_path / "0" / "contexts" / "0"
    scheme = ctx / "schemes" / "0"
    (scheme / "access_pattern" / "age").mkdir(parents=True)
    (ctx / "monitoring_attrs" / "intervals").mkdir(parents=True)
    (tmp_path / "0" / "state").write_text("on\n")
    (ctx / "monitoring_attrs" / "intervals" / "aggr_us").write_text("5000000\n")
    (scheme / "action").write_text("pageout\n")
    (scheme / "access_pattern" / "age" / "min").write_text("12\n")
    found = machine.page_reclaim(tmp_path)
    assert found == "DAMON pages out memory idle for 60 s or more"
    info = {**machine.describe(), "page_reclaim": found}
    assert machine.summary_line(info).endswith("; DAMON pages out memory idle for 60 s or more")
    (tmp_path / "0" / "state").write_text("off\n")
    assert machine.page_reclaim(tmp_path) is None
    assert machine.page_reclaim(tmp_path / "absent") is None


def test_results_of_a_day_are_merged(tmp_path):
    info = machine.describe()
    bench_main.write_results(
        {"a": {"result": {"x": 1.5}, "seconds": 1}}, size="tiny", out_dir=tmp_path, info=info
    )
    json_path, md_path = bench_main.write_results(
        {"b": {"error": "boom", "seconds": 2}}, size="tiny", out_dir=tmp_path, info=info
    )
    report = json.loads(json_path.read_text())
    assert set(report["benchmarks"]) == {"a", "b"}
    assert json_path.name.startswith(machine.machine_slug(info)) and json_path.stem.endswith("tiny")
    text = md_path.read_text()
    assert "| x | 1.5 |" in text and "**failed** after 2 s: boom" in text
    assert f"{info['cores']} cores" in text


def _machine(model: str, flags: list[str], cores: int = 2) -> dict:
    return {
        **machine.describe(),
        "cores": cores,
        "cpu_model": model,
        "cpu_flags": flags,
        "gpus": [],
    }


@pytest.mark.parametrize(
    ("flags", "slug"),
    [
        (["avx2", "avx512f", "amx_tile", "amx_bf16", "fma"], "2cpu-intel-xeon-amx"),
        (["avx2", "avx512f", "avx512_bf16", "fma"], "2cpu-intel-xeon-avx512bf16"),
        (["avx2", "avx512f", "fma"], "2cpu-intel-xeon-avx512"),
        (["avx2", "fma"], "2cpu-intel-xeon-avx2"),
        ([], "2cpu-intel-xeon"),
    ],
)
def test_the_slug_names_the_vector_extensions(flags, slug):
    assert machine.machine_slug(_machine("Intel(R) Xeon(R) Processor @ 2.1GHz", flags)) == slug


def test_two_machines_of_one_name_never_share_a_results_file(tmp_path):
    # Both "AMD EPYC" with AVX2; one also has VNNI: same slug, other machines.
    first, second = _machine("AMD EPYC", ["avx2", "fma"]), _machine("AMD EPYC", ["avx2", "fma"])
    second["cpu_flags"] = ["avx2", "avx512_vnni", "fma"]
    assert machine.machine_slug(first) == machine.machine_slug(second)
    a, _ = bench_main.write_results(
        {"a": {"result": {"x": 1}, "seconds": 1}}, size="full", out_dir=tmp_path, info=first
    )
    b, b_md = bench_main.write_results(
        {"b": {"result": {"x": 2}, "seconds": 1}}, size="full", out_dir=tmp_path, info=second
    )
    again, _ = bench_main.write_results(
        {"c": {"result": {"x": 3}, "seconds": 1}}, size="full", out_dir=tmp_path, info=first
    )
    assert a == again and b == a.with_name(a.stem + "-2.json") and b_md.suffix == ".md"
    assert set(json.loads(a.read_text())["benchmarks"]) == {"a", "c"}
    report_b = json.loads(b.read_text())
    assert set(report_b["benchmarks"]) == {"b"}
    assert report_b["machine"]["cpu_flags"] == ["avx2", "avx512_vnni", "fma"]
    assert (
        "avx512_vnni" in b_md.read_text() and "avx512_vnni" not in a.with_suffix(".md").read_text()
    )


def test_of_two_files_of_one_date_the_later_written_is_newest(tmp_path):
    from bench import readme_tables
    from lib import measured

    older = _machine("Intel Xeon", ["avx2", "amx_bf16"])
    newer = _machine("AMD EPYC", ["avx2"])
    # "2cpu-intel-..." sorts after "2cpu-amd-..." by name; the time written decides.
    bench_main.write_results({"a": {"result": {}, "seconds": 1}}, size="full", out_dir=tmp_path,
                             info=older)  # fmt: skip
    path_old = next(tmp_path.glob("2cpu-intel-*.json"))
    report = json.loads(path_old.read_text())
    report["written"] = "2000-01-01T00:00:00Z"
    path_old.write_text(json.dumps(report))
    newest, _ = bench_main.write_results(
        {"a": {"result": {}, "seconds": 1}}, size="full", out_dir=tmp_path, info=newer
    )
    assert readme_tables.latest_results(tmp_path)[0] == newest
    assert measured.latest_results(tmp_path)["_source"].endswith(newest.name)
    # A file from before the field ranks below one of its date that has it.
    del report["written"]
    path_old.write_text(json.dumps(report))
    assert readme_tables.all_results(tmp_path)[-1][0] == path_old


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"recipes": None, "budgets": None}),
        (
            ["--recipes", "fast, tutorial", "--budget", "fast=90", "--budget", "tutorial=300"],
            {"recipes": ["fast", "tutorial"], "budgets": {"fast": 90.0, "tutorial": 300.0}},
        ),
    ],
)
def test_command_line_options(argv, expected):
    options = bench_main.options_from(bench_main.parse_args(argv))
    for key, value in expected.items():
        assert options[key] == value


def test_unknown_benchmark_is_refused():
    with pytest.raises(SystemExit, match="unknown benchmark"):
        bench_main.main(["--only", "nope"])


def test_time_to_accuracy_always_trains_the_tutorial_with_the_recipes(monkeypatch):
    calls = []
    times = {"0.90": 10.0, "0.91": 15.0, "0.93": None, "0.94": None}
    fake = {"seconds_to": times, "epochs_to": times, "cpu_seconds_to": times,
            "train_seconds": 30.0, "train_cpu_seconds": 50.0, "images_per_sec": 9.0,
            "final_test_accuracy": 0.92, "best_test_accuracy": 0.92, "epochs_done": 3.0}  # fmt: skip
    monkeypatch.setattr(
        bench_time_to_accuracy, "train_tutorial", lambda **k: calls.append("tutorial") or fake
    )
    monkeypatch.setattr(
        bench_time_to_accuracy, "train_kestrel", lambda name, **k: calls.append(name) or fake
    )
    # In this process (each training normally gets a process of its own: _fresh).
    monkeypatch.setattr(
        bench_time_to_accuracy, "_fresh", lambda f, **k: getattr(bench_time_to_accuracy, f)(**k)
    )
    result = bench_time_to_accuracy.run("full", recipes=["fast"], repeats=1)
    assert calls == ["tutorial", "fast"] and set(result["recipes"]) == {"tutorial", "fast"}
    assert result["ratio_time_to_90"] == 1.0 and result["repeats"] == 1
    by_target = {(t["accuracy"], t["within_s"]): t for t in result["targets"]}
    assert by_target[(0.91, 20.0)]["met_by"] == ["fast"]
    assert not by_target[(0.93, 120.0)]["met"] and by_target[(0.93, 120.0)]["fastest"] is None
    calls.clear()
    result = bench_time_to_accuracy.run("full", recipes=["fast"], repeats=2)
    assert calls == ["tutorial", "fast", "fast", "tutorial"]  # interleaved, order rotated
    assert result["recipes"]["fast"]["repeats"] == 2
    assert result["recipes"]["fast"]["reached_in"]["0.90"] == "2/2"


def _recipe_result(seconds_to_90):
    """The parts of a time_to_accuracy recipe result that the ratio reads."""
    return {"seconds_to": {"0.90": seconds_to_90}, "train_seconds": 100.0}


def test_time_to_accuracy_results_are_never_mixed_across_invocations():
    def result(times):
        return {"size": "full", "recipes": {k: _recipe_result(v) for k, v in times.items()}}

    old, new = result({"fast": 20.0, "tutorial": 80.0}), result({"fast": 25.0, "tutorial": 90.0})
    assert bench_time_to_accuracy.merge(old, new) == new  # a recipe measured again: replaced
    # An invocation that trained other recipes is kept whole beside the new one, never mixed.
    precise = result({"precise": 300.0, "tutorial": 85.0})
    both = bench_time_to_accuracy.merge(old, precise)
    assert both["recipes"] == precise["recipes"] and both["other_invocations"] == [old]
    # A third invocation that measures fast again drops the old one (fast, with its baseline)
    # and keeps precise's.
    third = bench_time_to_accuracy.merge(both, new)
    assert third["recipes"] == new["recipes"]
    assert third["other_invocations"] == [precise]
    assert [set(one["recipes"]) for one in bench_time_to_accuracy.invocations(third)] == [
        {"fast", "tutorial"}, {"precise", "tutorial"}
    ]  # fmt: skip


def _tta_recipe(name: str, seconds: float) -> dict:
    """A time_to_accuracy recipe row with every field its report reads, naming what it
    trained as the benchmark does (lib.measured quotes only rows of the recipe as it is)."""
    from lib import measured
    from lib.recipes import RECIPES

    trained = {"config": measured.recipe_identity(RECIPES[name])} if name in RECIPES else {}
    return {
        **json.loads(json.dumps(trained)),
        "description": name, "final_test_accuracy": 0.9, "train_seconds": seconds,
        "train_cpu_seconds": seconds * 1.5, "epochs_done": 2.0, "epochs_planned": 2,
        "images_per_sec": 100.0, "load_average": {"before": [1.0], "after": [1.0]},
        "stalls": [], "seconds_to": {"0.90": seconds}, "epochs_to": {"0.90": 2.0},
        "cpu_seconds_to": {"0.91": None},
    }  # fmt: skip


def _tta_result(*names: str) -> dict:
    """One invocation's result: the tutorial baseline and ``names``."""
    recipes = {n: _tta_recipe(n, 10.0 * (i + 1)) for i, n in enumerate(("tutorial", *names))}
    return {
        "dataset": "fashion_mnist", "thresholds": [0.90], "recipes": recipes,
        "order": list(recipes),
    }  # fmt: skip


def test_each_invocation_of_the_day_gets_its_own_table_with_its_own_baseline():
    text = bench_time_to_accuracy.markdown(
        bench_time_to_accuracy.merge(_tta_result("accurate"), _tta_result("precise"))
    )
    tables = text.split("earlier invocation the same day")
    assert len(tables) == 2
    assert "| precise |" in tables[0] and "| accurate |" not in tables[0]
    assert "| accurate |" in tables[1] and "| precise |" not in tables[1]
    assert all(t.count("| tutorial |") == 1 for t in tables)


def test_a_days_second_invocation_of_other_recipes_keeps_the_first_in_the_file(
    tmp_path, monkeypatch
):
    """Through the file the benchmark writes: measuring precise alone after fast and
    accurate keeps their table, and the recipes' descriptions quote both."""
    info = machine.describe()
    for seconds, result in ((111, _tta_result("fast", "accurate")), (222, _tta_result("precise"))):
        json_path, md_path = bench_main.write_results(
            {"time_to_accuracy": {"result": result, "seconds": seconds}},
            size="full", out_dir=tmp_path, info=info,
        )  # fmt: skip
    kept = json.loads(json_path.read_text())["benchmarks"]["time_to_accuracy"]["result"]
    assert set(kept["recipes"]) == {"tutorial", "precise"}
    assert [set(one["recipes"]) for one in kept["other_invocations"]] == [
        {"tutorial", "fast", "accurate"}
    ]
    newest, earlier = md_path.read_text().split("earlier invocation the same day")
    assert newest.count("| tutorial |") == earlier.count("| tutorial |") == 1
    # Each table ends with its own invocation's wall time, not the newest one's.
    assert "_222 s wall time" in newest and "_111 s wall time" not in newest
    assert "_111 s wall time" in earlier and "_222 s wall time" not in earlier
    from lib import measured

    monkeypatch.setattr(measured, "RESULTS_DIR", tmp_path)
    measured.clear_cache()
    try:
        seconds = {r: measured.recipe_figures(r).train_seconds for r in ("fast", "precise")}
        assert seconds == {"fast": 20.0, "precise": 20.0}
        assert measured.recipe_figures("balanced") is None  # measured by neither
    finally:
        measured.clear_cache()


def test_a_benchmark_started_on_a_busy_machine_says_so_at_the_top(monkeypatch):
    monkeypatch.setattr(bench_main.timing, "load_average", lambda: [7.5, 6.0, 4.0])
    monkeypatch.setattr(bench_main.timing, "cores", lambda: 2)
    monkeypatch.setattr(bench_main.timing.time, "sleep", lambda s: None)
    busy = bench_main.quiet_start("full", wait_s=0.0)
    assert busy["quiet"] is False and busy["load_average"] == [7.5, 6.0, 4.0]
    entry = {"result": {"x": 1.5}, "seconds": 3.0, "load_before": busy}
    text = bench_main.section_markdown("example", entry)  # no module: the generic table
    first_lines = text.split("\n\n")[1]
    assert first_lines.startswith("**Measured on a busy machine:** the 1-minute load average")
    assert "7.5 on 2 cores" in first_lines and "`python -m bench --only example`" in first_lines
    assert "load average before: 7.5/6.0/4.0; load average after" in text
    quiet = {**busy, "quiet": True, "load_average": [0.5, 0.5, 0.5]}
    text = bench_main.section_markdown("example", {**entry, "load_before": quiet})
    assert "busy machine" not in text


def test_tiny_runs_never_wait_for_a_quiet_machine(monkeypatch):
    monkeypatch.setattr(bench_main.timing, "load_average", lambda: [9.0, 9.0, 9.0])
    monkeypatch.setattr(bench_main.timing.time, "sleep", lambda s: pytest.fail("a tiny run waited"))
    out = bench_main.quiet_start("tiny", wait_s=600.0)
    assert out["waited_s"] == 0.0 and out["quiet"] is False


def test_full_runs_wait_until_the_load_falls(monkeypatch):
    loads = iter([[5.0, 4, 3], [5.0, 4, 3], [3.0, 4, 3], [1.2, 4, 3]])
    monkeypatch.setattr(bench_main.timing, "load_average", lambda: next(loads))
    monkeypatch.setattr(bench_main.timing, "cores", lambda: 2)
    slept = []
    monkeypatch.setattr(bench_main.timing.time, "sleep", slept.append)
    out = bench_main.quiet_start("full", wait_s=600.0)
    assert out["quiet"] is True and out["load_average"] == [1.2, 4, 3]
    assert len(slept) == 2  # polled until the load fell to the cores, no longer


def test_the_results_keep_the_load_each_benchmark_started_under(monkeypatch, tmp_path):
    monkeypatch.setattr(
        bench_main, "run_child", lambda name, size, options: {"result": {"x": 1.0}, "seconds": 0.1}
    )
    monkeypatch.setattr(bench_main.timing, "load_average", lambda: [0.4, 0.3, 0.2])
    # tune has no markdown of its own, so the made-up result renders as a generic table.
    assert bench_main.main(["--only", "tune", "--out", str(tmp_path), "--quiet-wait", "0"]) == 0
    (path,) = tmp_path.glob("*.json")
    entry = json.loads(path.read_text())["benchmarks"]["tune"]
    assert entry["load_before"]["load_average"] == [0.4, 0.3, 0.2]
    assert entry["load_before"]["quiet"] is True


def test_once_a_wait_runs_out_the_rest_of_the_invocation_does_not_wait(monkeypatch, tmp_path):
    monkeypatch.setattr(
        bench_main, "run_child", lambda name, size, options: {"result": {"x": 1.0}, "seconds": 0.1}
    )
    monkeypatch.setattr(bench_main.timing, "load_average", lambda: [9.0, 9.0, 9.0])
    monkeypatch.setattr(bench_main.timing, "cores", lambda: 2)
    waits = []
    real_check = bench_main.timing.load_check

    def load_check(max_load=None, wait_s=0.0, poll_s=5.0):
        waits.append(wait_s)
        return real_check(max_load, 0.0, poll_s)  # as if the wait had run out

    monkeypatch.setattr(bench_main.timing, "load_check", load_check)
    argv = ["--only", "tune,tune", "--out", str(tmp_path), "--quiet-wait", "300"]
    assert bench_main.main(argv) == 0
    assert waits == [300.0, 0.0]
    entry = json.loads(next(tmp_path.glob("*.json")).read_text())["benchmarks"]["tune"]
    assert entry["load_before"]["quiet"] is False
    assert "**Measured on a busy machine:**" in next(tmp_path.glob("*.md")).read_text()
