"""The named recipes are valid RunConfigs that fit Fashion-MNIST and describe themselves."""

import json
import re
from pathlib import Path

import pytest

from lib import architectures, hardware, measured, recipes
from lib.architectures import check_model_config
from lib.config import RunConfig
from lib.recipes import FAST_TRAIN, RECIPE_INFO, RECIPES


def test_every_recipe_has_a_description():
    assert set(RECIPE_INFO) == set(RECIPES)
    for name, info in RECIPE_INFO.items():
        assert info.title and info.description, name


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_round_trips_and_fits_fashion_mnist(name):
    cfg = RECIPES[name]
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert cfg.name == name
    check_model_config(cfg.model, (28, 28, 1), 10)  # raises if it cannot be built
    assert cfg.train.warmup_epochs < cfg.train.epochs


def test_fast_is_the_app_default():
    # The benchmark's "fast" row measures what a user gets without changing anything.
    assert RECIPES["fast"].replace(name="") == RunConfig()
    assert RunConfig().train == FAST_TRAIN


def test_accurate_mirrors_in_training_whenever_it_mirrors_at_test_time():
    # Flip TTA on a model never trained on mirrored images costs accuracy (measured:
    # 6-10 points on Fashion-MNIST), so a recipe must not have one without the other.
    for name, cfg in RECIPES.items():
        if cfg.train.tta_flip:
            assert cfg.augment.horizontal_flip, name


# --- Measured figures come from bench/results only ------------------------------------------

PERCENT = re.compile(r"\d+(\.\d+)? ?%")


def _results(folder, name, date, fast_accuracy, cpu_flags=None):
    report = {
        "date": date,
        "machine": {"cores": 2, "gpus": [], **({"cpu_flags": cpu_flags} if cpu_flags else {})},
        "benchmarks": {
            "time_to_accuracy": {
                "result": {
                    "dataset": "fashion_mnist",
                    "recipes": {
                        "fast": {
                            "final_test_accuracy": fast_accuracy,
                            "epochs_done": 6.0,
                            "train_seconds": 38.7,
                        }
                    },
                }
            }
        },
    }
    (folder / name).write_text(json.dumps(report))


def test_no_measured_figure_is_typed_into_the_code():
    for module in (recipes, architectures):
        source = Path(module.__file__).read_text(encoding="utf-8")
        assert not PERCENT.search(source), module.__name__
    texts = [i.description for i in RECIPE_INFO.values()]
    texts += [i.summary for i in architectures.PRESET_INFO.values()]
    for text in texts:
        assert not PERCENT.search(
            re.split(r"Measured( \(medians of \d+ trainings\))?:", text)[0]
        ), text


def test_descriptions_quote_the_newest_results(tmp_path, monkeypatch):
    _results(tmp_path, "old-2026-01-01.json", "2026-01-01", 0.5)
    _results(tmp_path, "new-2026-02-01.json", "2026-02-01", 0.9234)
    _results(tmp_path, "newest-2026-03-01-tiny.json", "2026-03-01", 0.1)  # a smoke run
    # The newest file measured something else only: the figures come from the one before.
    (tmp_path / "other-2026-04-01.json").write_text(
        json.dumps({"date": "2026-04-01", "benchmarks": {"gradcam": {"result": {}}}})
    )
    (tmp_path / "broken.json").write_text("{not json")
    monkeypatch.setattr(measured, "RESULTS_DIR", tmp_path)
    measured.clear_cache()
    fig = measured.recipe_figures("fast")
    assert (fig.test_accuracy, fig.date, fig.cores) == (0.9234, "2026-02-01", 2)
    text = RECIPE_INFO["fast"].description
    assert "92.3% test accuracy on Fashion-MNIST after 6 epochs" in text
    assert "39 s of training on 2 CPU cores, 2026-02-01" in text
    assert architectures.PRESET_INFO["fast_cnn"].description.endswith(
        measured.recipe_sentence("fast")
    )
    # Nothing measured for a recipe, or no results at all: the text says where to look.
    assert RECIPE_INFO["accurate"].description.endswith(measured.SEE_RESULTS)
    monkeypatch.setattr(measured, "RESULTS_DIR", tmp_path / "none")
    assert RECIPE_INFO["fast"].description.endswith("see bench/results.")
    measured.clear_cache()


def test_descriptions_quote_a_machine_with_this_servers_cpu_first(tmp_path, monkeypatch):
    _results(tmp_path, "avx2-2026-01-01.json", "2026-01-01", 0.911, ["avx2", "fma"])
    _results(tmp_path, "amx-2026-02-01.json", "2026-02-01", 0.922, ["avx2", "amx_bf16"])
    monkeypatch.setattr(measured, "RESULTS_DIR", tmp_path)
    measured.clear_cache()
    try:
        on_avx2 = measured.recipe_sentence("fast", tier="avx2")
        assert (
            "91.1% test accuracy" in on_avx2 and "on 2 CPU cores with AVX2, 2026-01-01" in on_avx2
        )
        on_amx = measured.recipe_sentence("fast", tier="amx")
        assert "92.2% test accuracy" in on_amx and "on 2 CPU cores with AMX, 2026-02-01" in on_amx
        # No file of this server's kind: the newest, named by its kind.
        assert measured.recipe_sentence("fast", tier="avx512") == on_amx
        # The page's description follows this server's CPU.
        monkeypatch.setattr(hardware, "server_tier", lambda: "avx2")
        assert RECIPE_INFO["fast"].description.endswith(on_avx2)
    finally:
        measured.clear_cache()


def test_a_recipe_changed_since_its_measurement_does_not_quote_it(tmp_path, monkeypatch):
    """Results name what they measured; the old recipe's figures never describe a new one."""
    from dataclasses import replace

    _results(tmp_path, "old-2026-01-01.json", "2026-01-01", 0.5)  # names nothing: taken
    path = tmp_path / "new-2026-02-01.json"
    _results(tmp_path, path.name, "2026-02-01", 0.9234)
    monkeypatch.setattr(measured, "RESULTS_DIR", tmp_path)

    def newest_date(**entry_fields) -> str:
        report = json.loads(path.read_text())
        entry = report["benchmarks"]["time_to_accuracy"]["result"]["recipes"]["fast"]
        entry.update(entry_fields)
        path.write_text(json.dumps(report))
        measured.clear_cache()
        return measured.recipe_figures("fast").date

    fast = RECIPES["fast"]
    longer = fast.replace(train=replace(fast.train, epochs=fast.train.epochs + 1))
    try:
        assert newest_date(config=measured.recipe_identity(fast)) == "2026-02-01"
        assert newest_date(config=measured.recipe_identity(longer)) == "2026-01-01"
        # Results older than the stored settings: their description says what they trained.
        report = json.loads(path.read_text())
        del report["benchmarks"]["time_to_accuracy"]["result"]["recipes"]["fast"]["config"]
        path.write_text(json.dumps(report))
        said = f"{measured.describe_recipe(fast)}, val fraction 0.1"
        assert newest_date(description=said) == "2026-02-01"
        old_said = f"{measured.describe_recipe(longer)}, val fraction 0.1"
        assert newest_date(description=old_said) == "2026-01-01"
        assert "92.3%" not in RECIPE_INFO["fast"].description
    finally:
        measured.clear_cache()


def test_the_shipped_results_are_read():
    measured.clear_cache()
    fig = measured.recipe_figures("fast", tier=hardware.server_tier())  # as the page reads it
    assert fig is not None and fig.source.startswith("bench/results/")
    report = json.loads((measured.PROJECT_ROOT / fig.source).read_text())
    newest = report["benchmarks"]["time_to_accuracy"]["result"]
    # The day's table that measured it: the newest invocation's or an earlier one's.
    (entry, *_) = [one["recipes"]["fast"] for one in [newest, *newest.get("other_invocations", [])]
                   if "fast" in one["recipes"]]  # fmt: skip
    assert f"{entry['final_test_accuracy']:.1%}" in RECIPE_INFO["fast"].description


def test_the_sentence_gives_the_load_and_the_highest_threshold_reached(tmp_path, monkeypatch):
    _results(tmp_path, "new-2026-02-01.json", "2026-02-01", 0.9312)
    path = tmp_path / "new-2026-02-01.json"
    report = json.loads(path.read_text())
    entry = report["benchmarks"]["time_to_accuracy"]["result"]["recipes"]["fast"]
    entry["seconds_to"] = {"0.91": 20.5, "0.93": 101.2, "0.94": None}
    entry["load_average"] = {"before": [12.5, 10.0, 8.0], "after": [13.0, 11.0, 9.0]}
    path.write_text(json.dumps(report))
    monkeypatch.setattr(measured, "RESULTS_DIR", tmp_path)
    measured.clear_cache()
    try:
        text = measured.recipe_sentence("fast")
        assert (
            "on 2 CPU cores, 2026-02-01, load average 12.5; 93% first reached after 1.7 min" in text
        )
        assert text.startswith("Measured: ")  # one training
        entry["repeats"] = 5  # the figures are medians: the sentence says of how many
        path.write_text(json.dumps(report))
        measured.clear_cache()
        assert measured.recipe_sentence("fast").startswith("Measured (medians of 5 trainings): ")
    finally:
        measured.clear_cache()


def test_a_recipe_of_the_days_other_invocation_is_quoted_and_a_budget_cut_says_so(
    tmp_path, monkeypatch
):
    """A day's results keep an earlier invocation that trained other recipes beside the
    newest; its figures describe its recipes, and a run the time budget stopped says how far
    it got rather than passing for the recipe's end."""
    _results(tmp_path, "new-2026-02-01.json", "2026-02-01", 0.9208)
    path = tmp_path / "new-2026-02-01.json"
    report = json.loads(path.read_text())
    newest = report["benchmarks"]["time_to_accuracy"]["result"]
    precise = {"final_test_accuracy": 0.9287, "epochs_done": 8.94, "train_seconds": 600.1,
               "epochs_planned": 24}  # fmt: skip
    newest["other_invocations"] = [
        {"dataset": "fashion_mnist", "recipes": {"precise": precise, "fast": dict(
            newest["recipes"]["fast"], final_test_accuracy=0.5)}},  # an older measurement
    ]  # fmt: skip
    path.write_text(json.dumps(report))
    monkeypatch.setattr(measured, "RESULTS_DIR", tmp_path)
    measured.clear_cache()
    try:
        assert measured.recipe_figures("fast").test_accuracy == 0.9208  # the newest first
        text = measured.recipe_sentence("precise")
        assert text.startswith(
            "Measured: 92.9% test accuracy on Fashion-MNIST after 8.9 of its 24 epochs, when the "
            "benchmark's time budget ran out (10.0 min of training on 2 CPU cores, 2026-02-01"
        ), text
        assert "after 6 epochs (39 s" in measured.recipe_sentence("fast")  # no budget cut
        # How long the whole schedule takes on a CPU like the one measured: the pace of the
        # epochs the budget allowed, carried over the rest; the time itself where it finished.
        assert measured.schedule_sentence("precise", "") == (
            f"its 24 epochs take about 27 min on 2 CPU cores ({path}), at the pace of the 8.9 "
            "epochs its benchmark trained in 10.0 min."
        )
        precise["epochs_planned"] = 9  # a run the budget stopped in its last epoch
        path.write_text(json.dumps(report))
        measured.clear_cache()
        assert measured.schedule_sentence("precise", "").startswith("its 9 epochs took 10.0 min")
        assert measured.schedule_sentence("precise", "avx2") == ""  # no figures of that CPU
    finally:
        measured.clear_cache()


def test_the_shapes_recipe_is_the_shipped_shapes_demo_models():
    card = json.loads(recipes.SHAPES_CARD.read_text(encoding="utf-8"))
    trained = RunConfig.from_dict(card["training_config"])
    shapes = RECIPES["shapes"]
    assert (shapes.model, shapes.train, shapes.augment) == (
        trained.model,
        trained.train,
        trained.augment,
    )
    assert shapes.data == RunConfig().data  # a recipe leaves the dataset to the user
    text = RECIPE_INFO["shapes"].description
    assert f"{card['metrics']['test_accuracy']:.1%} test accuracy" in text
    assert f"after {card['metrics']['epochs_done']} epochs" in text
    assert "models/shapes-demo/card.json" in text
