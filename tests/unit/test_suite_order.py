"""`make test` hands the longest test modules to its workers first (tests/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from tests import conftest

ROOT = Path(__file__).resolve().parents[2]


def test_every_listed_module_exists_and_the_list_is_longest_first():
    missing = [m for m in conftest.MODULE_SECONDS if not (ROOT / m).is_file()]
    assert not missing, f"tests/conftest.py lists modules that no longer exist: {missing}"
    seconds = list(conftest.MODULE_SECONDS.values())
    assert seconds == sorted(seconds, reverse=True)


def test_make_test_keeps_the_collected_order():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    xdist = re.search(r"^XDIST := (.*)$", makefile, re.M).group(1).split()
    assert "loadfile" in xdist and "--no-loadscope-reorder" in xdist


def test_collection_puts_the_longest_modules_first_and_keeps_each_modules_order():
    def item(module, name):
        return SimpleNamespace(path=ROOT / module, name=name)

    items = [
        item("tests/unit/test_config.py", "a"),
        item("tests/e2e/test_tune.py", "b1"),
        item("tests/unit/test_bench_smoke.py", "c1"),
        item("tests/e2e/test_tune.py", "b2"),
        item("tests/unit/test_bench_smoke.py", "c2"),
        item("tests/unit/test_images.py", "d"),
    ]
    conftest.pytest_collection_modifyitems(None, SimpleNamespace(rootpath=ROOT), items)
    assert [i.name for i in items] == ["c1", "c2", "b1", "b2", "a", "d"]
