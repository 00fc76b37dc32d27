"""Shared test set-up: every test gets its own empty workspace."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """Point KESTREL_HOME at a fresh folder so nothing touches the real workspace."""
    home = tmp_path / "kestrel-home"
    home.mkdir()
    monkeypatch.setenv("KESTREL_HOME", str(home))
    # The folder source reads only shared folders; tests share their own tmp folder.
    monkeypatch.setenv("KESTREL_DATA_ROOTS", str(tmp_path))
    return home


# Seconds each of the longest modules took in a full run on 2 cores (pytest --junitxml,
# summed per module). `make test` runs modules whole on two workers (--dist loadfile), and
# hands them out in collection order (--no-loadscope-reorder): longest first, so that no
# worker starts a two-minute browser module while the other has nothing left. By default
# xdist orders modules by their number of tests, which put the browser modules (one to
# eight long tests each) last, and the suite ended on one busy worker. Unlisted modules
# follow in their usual order; a listed one that no longer exists fails
# tests/unit/test_suite_order.py.
MODULE_SECONDS = {
    "tests/unit/test_bench_smoke.py": 461,
    "tests/e2e/test_screen_is_truth.py": 191,
    "tests/e2e/test_reload_and_contexts.py": 152,
    "tests/e2e/test_tune.py": 113,
    "tests/e2e/test_hostile_uploads.py": 106,
    "tests/slow/test_faults.py": 100,
    "tests/e2e/test_result_pages.py": 96,
    "tests/e2e/test_fine_tune_browser.py": 85,
    "tests/slow/test_tuning_postgres.py": 83,
    "tests/e2e/test_whole_path.py": 82,
    "tests/e2e/test_builder.py": 78,
    "tests/unit/test_transfer_cache.py": 76,
    "tests/unit/test_fine_tune.py": 69,
    "tests/e2e/test_batchnorm_run.py": 68,
    "tests/e2e/test_health_browser.py": 63,
    "tests/app/test_tune_page.py": 58,
    "tests/e2e/test_mixed_precision_export.py": 56,
    "tests/unit/test_architectures.py": 54,
    "tests/e2e/test_load.py": 46,
    "tests/app/test_evaluate_page.py": 45,
    "tests/slow/test_jobs_processes.py": 33,
    "tests/e2e/test_confusion_click.py": 32,
    "tests/e2e/test_unknown.py": 32,
    "tests/app/test_predict_page.py": 31,
}


def pytest_collection_modifyitems(session, config, items):
    """Longest modules first (a stable sort: tests keep their order within a module)."""
    root = config.rootpath

    def seconds(item) -> int:
        try:
            module = item.path.relative_to(root).as_posix()
        except ValueError:
            return 0
        return MODULE_SECONDS.get(module, 0)

    items.sort(key=lambda item: -seconds(item))
