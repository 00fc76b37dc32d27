"""The command line: `python -m lib runs` and the refusals of `python -m lib train`."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lib import cli, runstore
from lib.config import DataConfig, ModelConfig, RunConfig
from lib.workspace import PROJECT_ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "lib", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def make_run(name: str, source: str, preset: str, state: str, val_acc: list[float]) -> str:
    path = runstore.create_run(
        RunConfig(name=name, data=DataConfig(source=source), model=ModelConfig(preset=preset))
    )
    now = time.time()
    runstore.update_status(path, state=state, started=now - 75, ended=now)
    rows = "".join(f"{i},0.5,0.001,1.0,{a},1.0\r\n" for i, a in enumerate(val_acc))
    (path / runstore.HISTORY_FILE).write_text(
        "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\r\n" + rows
    )
    return path.name


def test_runs_lists_the_workspace_runs():
    a = make_run("a", "digits", "lenet5", "completed", [0.5, 0.875, 0.75])
    b = make_run("b", "shapes", "fast_cnn", "stopped", [0.25])
    result = run_cli("runs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["ID", "STATE", "DATASET", "MODEL"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert set(by_id) == {a, b}
    assert "completed" in by_id[a] and "digits" in by_id[a] and "lenet5" in by_id[a]
    epochs = RunConfig().train.epochs  # planned epochs: the default recipe's
    assert "0.8750" in by_id[a] and f"3/{epochs}" in by_id[a] and "0:01:15" in by_id[a]
    assert "stopped" in by_id[b] and "shapes 64px" in by_id[b] and "0.2500" in by_id[b]


def test_runs_on_an_empty_workspace():
    result = run_cli("runs")
    assert result.returncode == 0 and "no runs yet" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"train": {"epochs": 0}}', "TrainConfig.epochs must be between 1 and 1000"),
        ('{"trian": {}}', "RunConfig has no field(s) trian"),
    ],
)
def test_train_refuses_a_bad_recipe_without_creating_a_run(tmp_path, content, message, capsys):
    recipe = tmp_path / "run.json"
    recipe.write_text(content)
    assert cli.main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(recipe) in err
    assert runstore.list_run_dirs() == []


def test_train_refuses_a_non_empty_run_dir(tmp_path, capsys):
    recipe = tmp_path / "run.json"
    RunConfig(data=DataConfig(source="digits")).save(str(recipe))
    target = tmp_path / "busy"
    target.mkdir()
    (target / "something").write_text("x")
    assert cli.main(["train", str(recipe), "--run-dir", str(target)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_train_without_a_run_folder_says_so(tmp_path, capsys):
    assert cli.main(["train", "--run-dir", str(tmp_path)]) == 2
    assert "holds no config.json" in capsys.readouterr().err


def test_stop_of_an_unknown_run_is_a_message(capsys):
    assert cli.main(["stop", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_dataset_subcommands_build_a_dataset_like_the_page(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from lib import datasets

    files = []
    for i in range(4):
        path = tmp_path / f"photo{i}.png"
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(path)
        files.append(str(path))
    (tmp_path / "folder" / "owls").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "folder" / "owls" / "o.png")
    assert cli.main(["dataset", "create", "birds", "--classes", "crows,gulls"]) == 0
    assert cli.main(["dataset", "add", "birds", "crows", *files[:2]]) == 0
    assert cli.main(["dataset", "add", "birds", "gulls", *files[2:]]) == 0
    assert cli.main(["dataset", "import", "birds", str(tmp_path / "folder")]) == 0
    assert cli.main(["dataset", "rename", "birds", "gulls", "seagulls"]) == 0
    assert cli.main(["dataset", "merge", "birds", "crows", "owls"]) == 0
    assert cli.main(["dataset", "remove", "birds", "crows", "000001.png"]) == 0
    assert cli.main(["dataset", "add-class", "birds", "ducks"]) == 0
    assert cli.main(["dataset", "delete-class", "birds", "ducks"]) == 0
    out = capsys.readouterr().out
    assert "now: birds@9 (crows 2, seagulls 2)" in out
    assert datasets.versions("birds") == list(range(1, 10))
    assert cli.main(["dataset", "list"]) == 0
    assert "birds@9  4 images" in capsys.readouterr().out
    assert cli.main(["dataset", "rename", "birds", "nope", "x"]) == 2
    assert "no class 'nope'" in capsys.readouterr().err
