"""README.md's performance figures are the newest results file's, generated, never typed."""

from __future__ import annotations

import json
import re
import shutil

from bench import readme_tables
from bench.__main__ import BENCHMARKS
from lib.workspace import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
# A measured figure: a number with a unit of time, rate, share or ratio.
FIGURE = re.compile(r"\d[\d,.]*\s?(%|ms\b|s\b|min\b|×|x\b|images/s|img/s)")


def _performance_section(text: str) -> str:
    start = text.index("## Performance")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_readme_tables_match_the_newest_results():
    expected = readme_tables.expected_readme()
    assert expected is not None, "bench/results/ holds no full-size results file"
    assert README.read_text(encoding="utf-8") == expected, (
        "README.md's generated blocks disagree with the newest bench/results file: "
        "run `python -m bench.readme_tables`"
    )


def test_the_performance_section_types_no_figure_outside_generated_blocks():
    section = _performance_section(README.read_text(encoding="utf-8"))
    names = [m.group("name") for m in readme_tables.BLOCK.finditer(section)]
    assert {"machine", "all"} <= set(names)
    from lib.hardware import VECTOR_TIERS

    benchmarks = {n.split("@")[0] for n in names} - {"machine", "all"}
    assert benchmarks <= set(BENCHMARKS)
    assert {n.split("@")[1] for n in names if "@" in n} <= {t for _, t, _ in VECTOR_TIERS}
    typed = readme_tables.BLOCK.sub("", section)
    assert not FIGURE.search(typed), FIGURE.search(typed).group(0)


def _fixture(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    found = readme_tables.all_results()
    assert found
    source, report = found[readme_tables.primary(found)]  # the machine block's file
    for path, _ in found:  # README draws on every one of them
        shutil.copy(path, results / path.name)
    readme = tmp_path / "README.md"
    shutil.copy(README, readme)
    return readme, results, results / source.name, report


def test_an_entry_added_later_is_rendered_and_the_check_notices_it(tmp_path):
    readme, results, path, report = _fixture(tmp_path)
    assert readme_tables.main(["--check", "--readme", str(readme), "--results", str(results)]) == 0
    report["benchmarks"]["zz_added_later"] = {
        "result": {"speed": {"images_per_s": 1234.5}, "decision": "keep it"},
        "seconds": 3.0,
        "load_average_after": [1.0, 2.0, 3.0],
    }
    path.write_text(json.dumps(report), encoding="utf-8")
    assert readme_tables.main(["--check", "--readme", str(readme), "--results", str(results)]) == 1
    assert readme_tables.update(readme, results)
    text = readme.read_text(encoding="utf-8")
    block = text[text.index("<!-- bench:begin all -->") : text.index("<!-- bench:end all -->")]
    assert "### zz_added_later" in block and "| speed.images_per_s | 1234 |" in block
    assert "load average after: 1.0/2.0/3.0" in block
    assert readme_tables.main(["--check", "--readme", str(readme), "--results", str(results)]) == 0


def test_the_newest_file_wins_and_tiny_runs_are_ignored(tmp_path):
    readme, results, _, report = _fixture(tmp_path)
    newer = {**report, "date": "2999-01-01", "benchmarks": {"only_this": {"result": {"x": 7.5}}}}
    (results / "other-2999-01-01.json").write_text(json.dumps(newer), encoding="utf-8")
    tiny = {**newer, "date": "3000-01-01", "benchmarks": {"tiny_one": {"result": {"y": 1}}}}
    (results / "other-3000-01-01-tiny.json").write_text(json.dumps(tiny), encoding="utf-8")
    readme_tables.update(readme, results)
    section = _performance_section(readme.read_text(encoding="utf-8"))
    assert "other-2999-01-01.json" in section and "| x | 7.5 |" in section
    assert "tiny_one" not in section
    # A benchmark the newest file lacks comes from the newest file that has it, named.
    own = {m.group("name"): m.group("body") for m in readme_tables.BLOCK.finditer(section)}
    measured = next(
        p
        for p, r in readme_tables.all_results()
        if "time_to_accuracy" in r["benchmarks"] and readme_tables._tier(r) == "avx512bf16"
    )
    assert (
        own["time_to_accuracy@avx512bf16"]
        .lstrip()
        .startswith(f"_From `bench/results/{measured.name}` (")
    )
    assert "_From `" not in own["all"].split("### only_this")[1].split("\n### ")[0]


def test_a_newer_gpu_file_gives_its_section_but_not_the_machine_block(tmp_path):
    readme, results, path, report = _fixture(tmp_path)
    gpu = {
        **report,
        "date": "2999-01-01",
        "machine": {**report["machine"], "cores": 16, "gpus": ["NVIDIA H200, 143771 MiB"]},
        "benchmarks": {"gpu_precision": {"result": {"skipped": "stand-in"}, "seconds": 1.0}},
    }
    (results / "16cpu-gpu-2999-01-01.json").write_text(json.dumps(gpu), encoding="utf-8")
    readme_tables.update(readme, results)
    blocks = {
        m.group("name"): m.group("body")
        for m in readme_tables.BLOCK.finditer(readme.read_text(encoding="utf-8"))
    }
    # The machine block still names the newest file without a GPU, whose figures most
    # sections are...
    assert f"`bench/results/{path.name}`" in blocks["machine"]
    assert "NVIDIA H200" not in blocks["machine"]
    assert "No GPU was used for this file's figures." in blocks["machine"]
    # ...and the GPU section says which file and machine it comes from.
    assert (
        blocks["gpu_precision"]
        .lstrip()
        .startswith(
            "_From `bench/results/16cpu-gpu-2999-01-01.json` (2999-01-01; machine: 16 cores"
        )
    )
    assert "NVIDIA H200, 143771 MiB" in blocks["gpu_precision"]
    assert "Skipped: stand-in." in blocks["gpu_precision"]
    # With only GPU files, the newest of them is the machine block's.
    assert readme_tables.primary([(results / "a.json", gpu), (results / "b.json", gpu)]) == 0


def test_a_benchmark_no_file_measured_says_how_to_measure_it(tmp_path):
    readme, results, _, _ = _fixture(tmp_path)
    for path in results.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        data["benchmarks"].pop("time_to_accuracy", None)
        path.write_text(json.dumps(data), encoding="utf-8")
    readme_tables.update(readme, results)
    section = _performance_section(readme.read_text(encoding="utf-8"))
    assert "run `python -m bench --only time_to_accuracy`" in section


def test_a_newer_file_of_one_benchmark_keeps_the_other_sections_naming_their_file(tmp_path):
    readme, results, _, _ = _fixture(tmp_path)
    # The older side: one file holding every benchmark (the fullest of the stored ones).
    full_path, report = max(readme_tables.all_results(), key=lambda r: len(r[1]["benchmarks"]))
    for other in results.glob("*.json"):
        other.unlink()
    path = results / full_path.name
    path.write_text(json.dumps(report), encoding="utf-8")
    name = "compress"
    newer = {
        **report,
        "date": "2999-01-01",
        "machine": {**report["machine"], "cpu": "Another CPU"},
        "benchmarks": {name: report["benchmarks"][name]},
    }
    (results / "2cpu-another-2999-01-01.json").write_text(json.dumps(newer), encoding="utf-8")
    assert readme_tables.update(readme, results)
    text = readme.read_text(encoding="utf-8")
    blocks = {m.group("name"): m.group("body") for m in readme_tables.BLOCK.finditer(text)}
    assert "`bench/results/2cpu-another-2999-01-01.json` (2999-01-01" in blocks["machine"]
    assert "names which file and machine" not in blocks["machine"]
    assert "comes from the newest earlier file that measured it" in blocks["machine"]
    # The new file's section has no source line; every other one names the older file.
    everything = "".join(blocks.values())
    before = everything[: everything.index(f"### {name}:")].rstrip("\n").rsplit("\n", 1)[-1]
    assert not before.startswith("_From `"), before
    older = f"_From `bench/results/{path.name}` ({report['date']}; machine: "
    others = [n for n in report["benchmarks"] if n != name]
    assert len(others) > 10 and everything.count(older) == len(others)
    assert readme_tables.main(["--check", "--readme", str(readme), "--results", str(results)]) == 0


def test_a_tier_block_keeps_its_machines_section_when_another_machine_measures_later(tmp_path):
    readme, results, _, report = _fixture(tmp_path)
    text = readme.read_text(encoding="utf-8")
    assert "<!-- bench:begin ablation@amx -->" in text
    amx = next(
        p
        for p, r in readme_tables.all_results()
        if "ablation" in r["benchmarks"] and "amx_bf16" in r["machine"]["cpu_flags"]
    )
    # A newer ablation from a machine with AVX2 only: it fills the avx2 block, not amx's,
    # and "all" does not show it a second time.
    later = {
        **report,
        "date": "2999-01-01",
        "machine": {**report["machine"], "cpu_model": "Other CPU", "cpu_flags": ["avx2", "fma"]},
        "benchmarks": {"ablation": report["benchmarks"].get("ablation")
                       or json.loads(amx.read_text())["benchmarks"]["ablation"]},
    }  # fmt: skip
    (results / "2cpu-other-avx2-2999-01-01.json").write_text(json.dumps(later), encoding="utf-8")
    readme_tables.update(readme, results)
    blocks = {
        m.group("name"): m.group("body")
        for m in readme_tables.BLOCK.finditer(readme.read_text(encoding="utf-8"))
    }
    assert blocks["ablation@amx"].lstrip().startswith(f"_From `bench/results/{amx.name}` (")
    assert "2cpu-other-avx2-2999-01-01.json" in blocks["ablation@avx2"]
    assert "### ablation" not in blocks["all"]
    # A tier no file measured says how to measure it.
    for path in results.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "amx_bf16" in (data["machine"].get("cpu_flags") or []):
            path.unlink()
    readme_tables.update(readme, results)
    text = readme.read_text(encoding="utf-8")
    body = text[text.index("<!-- bench:begin ablation@amx -->") :]
    assert body.split("\n")[2].startswith("_Not measured on a machine with AMX yet")


def _tier_blocks(readme) -> dict[str, str]:
    text = readme.read_text(encoding="utf-8")
    return {m.group("name"): m.group("body") for m in readme_tables.BLOCK.finditer(text)}


def test_a_newer_run_of_one_recipe_keeps_the_tiers_earlier_tables_of_the_others(tmp_path):
    readme, results, _, _ = _fixture(tmp_path)
    # A stored file of AVX-512 BF16 cores whose one invocation measured Fast and Accurate
    # but not Precise; the tier's other files are set aside, so that the later one below
    # is the only newer one.
    same_tier = [
        (p, r)
        for p, r in readme_tables.all_results(results)
        if "time_to_accuracy" in r["benchmarks"] and readme_tables._tier(r) == "avx512bf16"
    ]
    older_path, older = next(
        (p, r)
        for p, r in same_tier
        if {"fast", "accurate"} <= set(r["benchmarks"]["time_to_accuracy"]["result"]["recipes"])
        and "precise" not in r["benchmarks"]["time_to_accuracy"]["result"]["recipes"]
        and not r["benchmarks"]["time_to_accuracy"]["result"].get("other_invocations")
    )
    for p, _ in same_tier:
        if p != older_path:
            p.unlink()
    entry = older["benchmarks"]["time_to_accuracy"]
    assert "precise" not in entry["result"]["recipes"]
    # A later day on a machine of the same tier measures only Precise (and its baseline).
    result = json.loads(json.dumps(entry["result"]))
    result["recipes"] = {
        "tutorial": result["recipes"]["tutorial"],
        "precise": {**result["recipes"]["accurate"], "description": "PRECISE ROW"},
    }
    result.pop("other_invocations", None)
    newer = {
        **older,
        "date": "2999-01-01",
        "written": "2999-01-01T00:00:00Z",
        "benchmarks": {"time_to_accuracy": {**entry, "result": result, "seconds": 4321.0}},
    }
    newer_name = "2cpu-same-tier-2999-01-01.json"
    (results / newer_name).write_text(json.dumps(newer), encoding="utf-8")
    readme_tables.update(readme, results)
    block = _tier_blocks(readme)["time_to_accuracy@avx512bf16"]
    # The newest file's table first, under its own line, with its own wall time...
    assert block.lstrip().startswith(f"_From `bench/results/{newer_name}` (2999-01-01;")
    first, _, rest = block.partition("_Recipes measured earlier on this kind of CPU")
    assert "PRECISE ROW" in first and "4321.0 s wall time" in first
    assert "| fast |" not in first
    # ...then the earlier file's table of the recipes it did not measure, naming that file,
    # with that invocation's own baseline and wall time.
    assert rest.startswith(
        f" and not since, from `bench/results/{older_path.name}` ({older['date']};"
    )
    assert "| fast |" in rest and "| accurate |" in rest and "| tutorial |" in rest
    assert f"{entry['seconds']} s wall time" in rest and "PRECISE ROW" not in rest
    assert readme_tables.main(["--check", "--readme", str(readme), "--results", str(results)]) == 0
    # An earlier invocation sharing any recipe with a newer one is left out whole.
    result["recipes"]["fast"] = entry["result"]["recipes"]["fast"]
    (results / newer_name).write_text(json.dumps(newer), encoding="utf-8")
    readme_tables.update(readme, results)
    block = _tier_blocks(readme)["time_to_accuracy@avx512bf16"]
    assert "_Recipes measured earlier" not in block and "| accurate |" not in block
    assert block.count("| tutorial |") == 1
    # So is one that trained a recipe as it was before a change (lib.measured quotes
    # neither): here Accurate's stored settings differ from the recipe's now.
    del result["recipes"]["fast"]
    (results / newer_name).write_text(json.dumps(newer), encoding="utf-8")
    changed = json.loads(json.dumps(older))
    accurate = changed["benchmarks"]["time_to_accuracy"]["result"]["recipes"]["accurate"]
    accurate["config"]["train"]["epochs"] += 1
    older_path.write_text(json.dumps(changed), encoding="utf-8")
    readme_tables.update(readme, results)
    assert "_Recipes measured earlier" not in _tier_blocks(readme)["time_to_accuracy@avx512bf16"]
    older_path.write_text(json.dumps(older), encoding="utf-8")  # as measured: shown again
    readme_tables.update(readme, results)
    assert "_Recipes measured earlier" in _tier_blocks(readme)["time_to_accuracy@avx512bf16"]
