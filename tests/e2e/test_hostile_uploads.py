"""Scenario 4: hostile uploads in the browser give a message, and the app keeps working.

Each case uploads one file through the real file uploader (an HTTP upload to the
server, then a rerun), expects an error alert and no traceback, checks nothing was
left behind (refused uploads store nothing; nothing lands outside the workspace),
and then opens another page to see that the session still works.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from helpers import (
    ROOT,
    assert_healthy,
    click,
    errors,
    open_page,
    segment,
    upload,
    wait_for_text,
)

pytestmark = pytest.mark.e2e


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _png(side: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cats/1.png", _png())
        link = zipfile.ZipInfo("cats/passwd.png")
        link.external_attr = (0o120777 << 16) | 0x10  # S_IFLNK: a symlink entry
        zf.writestr(link, "/etc/passwd")
    return buf.getvalue()


# (file name, bytes) — each must be refused with a message. The unit tier
# (test_archives.py, test_images.py, test_hostile_models.py) has the full batteries;
# here one of each kind proves the browser path.
HOSTILE_ZIPS = {
    "not-a-zip": ("dataset.zip", b"this is plain text with a .zip name\n" * 10),
    "traversal": (
        "escape.zip",
        _zip({"cats/1.png": _png(), "../../kestrel-e2e-escape.txt": b"escaped"}),
    ),
    "symlink": ("link.zip", _symlink_zip()),
}

# Images that are not images: each must be refused by the augmentation preview.
HOSTILE_IMAGES = {
    "truncated-png": ("photo.png", _png(64)[:40]),
    "text-as-png": ("notes.png", b"hello, I am not a picture\n"),
}


def _keras_zip(layer: dict) -> bytes:
    """A .keras archive (config.json + metadata.json) whose model holds ``layer``."""
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "config": {"batch_shape": [None, 8, 8, 1], "name": "input"},
                },
                layer,
            ],
        },
    }
    meta = {"keras_version": "3.15.1", "date_saved": "2026-01-01@00:00:00"}
    return _zip(
        {
            "config.json": json.dumps(config).encode(),
            "metadata.json": json.dumps(meta).encode(),
            "model.weights.h5": b"",
        }
    )


LAMBDA_LAYER = {
    "module": "keras.layers",
    "class_name": "Lambda",
    "config": {
        "name": "evil",
        "function": {"class_name": "__lambda__", "config": {"code": "YQ==", "defaults": None}},
    },
}
CUSTOM_LAYER = {
    "module": "evil_module",
    "class_name": "Exfiltrate",
    "registered_name": "evil>Exfiltrate",
    "config": {"name": "x"},
}

# Model files that must never load (the predict page's "Upload .keras").
HOSTILE_MODELS = {
    "not-a-zip": ("model.keras", b"PK? no, just text pretending to be a model\n" * 20),
    "legacy-h5": ("model.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 512),
    "lambda-layer": ("lambda.keras", _keras_zip(LAMBDA_LAYER)),
    "custom-class": ("custom.keras", _keras_zip(CUSTOM_LAYER)),
}


def _uploads_in(workspace: Path) -> set[str]:
    folder = workspace / "uploads"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _escaped_files(workspace: Path) -> list[Path]:
    """Files a traversal could have written, anywhere we can think of."""
    names = ("kestrel-e2e-escape.txt", "kestrel-e2e-absolute.txt")
    places = (workspace, workspace.parent, workspace.parent.parent, ROOT, Path("/tmp"))
    return [p / n for p in places for n in names if (p / n).exists()]


def _still_works(page, base_url: str) -> None:
    """Another page opens and shows its content: the session survived."""
    open_page(page, base_url, "")
    assert_healthy(page)
    wait_for_text(page, r"Latest run")
    wait_for_text(page, r"Dataset · ", where='[data-testid="stSidebar"]')


@pytest.mark.parametrize("case", list(HOSTILE_ZIPS))
def test_hostile_zip_is_refused_and_the_app_keeps_working(
    case, streamlit_server, page, steps, workspace, tmp_path
):
    name, data = HOSTILE_ZIPS[case]
    path = tmp_path / name
    path.write_bytes(data)
    before = _uploads_in(workspace)

    open_page(page, streamlit_server, "dataset")
    page.get_by_text("Upload images").first.click()  # the expander
    steps(page, "dataset-open")
    upload(page, "Zip archive", str(path))
    click(page, "Store zip")
    steps(page, "after-store")

    wait_for_text(page, r"Upload refused")
    assert any("refused" in e.lower() for e in errors(page)), errors(page)
    assert_healthy(page)
    # The upload went through XSRF protection (the token cookie exists).
    assert any(c["name"] == "_streamlit_xsrf" for c in page.context.cookies())
    assert _uploads_in(workspace) == before, "a refused archive left files in the workspace"
    assert not _escaped_files(workspace)
    # The active dataset did not switch to a half-made upload.
    assert "In use: shapes" in page.inner_text('[data-testid="stMain"]')

    _still_works(page, streamlit_server)
    steps(page, "navigated-away")


@pytest.mark.parametrize("case", list(HOSTILE_IMAGES))
def test_hostile_image_is_refused_and_the_app_keeps_working(
    case, streamlit_server, page, steps, tmp_path
):
    name, data = HOSTILE_IMAGES[case]
    path = tmp_path / name
    path.write_bytes(data)

    open_page(page, streamlit_server, "augmentation")
    steps(page, "augmentation-open")
    upload(page, re.compile("image file", re.I), str(path))
    steps(page, "after-upload")

    wait_for_text(page, r"Cannot preview this upload")
    assert any(name in e for e in errors(page)), errors(page)  # the message names the file
    assert_healthy(page)

    _still_works(page, streamlit_server)
    steps(page, "navigated-away")


@pytest.mark.parametrize("case", list(HOSTILE_MODELS))
def test_hostile_model_is_refused_and_the_app_keeps_working(
    case, streamlit_server, page, steps, tmp_path
):
    name, data = HOSTILE_MODELS[case]
    path = tmp_path / name
    path.write_bytes(data)

    open_page(page, streamlit_server, "predict")
    segment(page, "Upload .keras")
    steps(page, "predict-upload-mode")
    upload(page, "Model file", str(path))
    steps(page, "after-upload")

    wait_for_text(page, r"(?i)refused|cannot load|not a")
    assert errors(page), "no error message for a hostile model"
    assert_healthy(page)
    # Nothing was classified with it: the page stopped before the image inputs.
    assert "Images from" not in page.inner_text('[data-testid="stMain"]')

    _still_works(page, streamlit_server)
    steps(page, "navigated-away")


def test_a_labels_file_typed_in_loads_lists_missing_rows_and_bad_ones_say_what_to_do(
    streamlit_server, page, steps, workspace
):
    """Images + labels file: typed as a person types it, Enter; spreadsheet-style semicolons."""
    from helpers import main_text, select, wait_idle

    from lib.data.sources import data_roots

    (shared,) = data_roots()  # the workspace's datasets/ folder unless the operator set others
    folder = shared / "labelled"
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    rows = ["file;label"]
    for i in range(36):
        (folder / "imgs" / f"{i}.png").write_bytes(_png())
        rows.append(f"imgs/{i}.png;{('cat', 'dog', 'bird')[i % 3]}")
    rows += ["imgs/gone.png;cat", "imgs/lost.png;dog"]  # two rows name images that are not there
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    (folder / "broken.csv").write_text("file,label,colour\nimgs/0.png,cat,red\n")

    open_page(page, streamlit_server, "dataset")
    select(page, "Source", "Images + labels file (CSV/TSV)")
    box = page.get_by_role("textbox", name="CSV file on the server")

    def type_path(path: str) -> None:
        box.fill(path)
        box.press("Enter")

    type_path(str(folder / "labels.csv"))
    wait_for_text(page, r"In use: csv files labels\.csv")
    wait_for_text(page, r"Skipped files \(2\)")
    for kind in ("bird", "cat", "dog"):  # the sample grid follows (its training images)
        wait_for_text(page, rf"{kind} · \d+ images")
    wait_idle(page)
    shown = main_text(page)
    assert "2 file(s) were skipped: missing or unreadable" in shown, shown
    assert re.search(r"Classes\s+3\b", shown), shown
    assert "triangle" not in shown, shown  # nothing left of the shapes set it replaced
    page.get_by_text("Skipped files (2)").click()  # the expander: which rows, and why
    # The table of rows and reasons (drawn on a canvas; its text is checked in the unit tests).
    page.locator('[data-testid="stExpander"] [data-testid="stDataFrame"]').first.wait_for()
    steps(page, "labels file loaded")
    assert not errors(page), errors(page)

    type_path(str(folder / "broken.csv"))
    wait_for_text(page, r"line 1: unknown column 'colour'")
    type_path("/etc/passwd")
    wait_for_text(page, r"outside the folders this server shares")
    steps(page, "refused labels files")
    assert_healthy(page)
    assert "Traceback" not in main_text(page)
