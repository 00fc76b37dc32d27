"""What the form shows is what trains, and nothing starts by accident (Chromium, as a person).

- Enter in the Epochs and Run-name fields starts nothing; the values are kept through a
  reload, Back, a second tab on the same address; a second browser has its own draft.
- "Use recipe" fills the visible form at once; a double click on Start makes one run whose
  config.json equals, field by field, what the page showed.
- The run being watched stays in the box when it completes (another run then trains);
  Delete asks first and says what goes.
- Weights that cannot be had here are refused at Start with the Model page's words.
- On the default shapes set, the Train page offers the shapes-demo model's recipe: one
  click fills the form with it, a reload keeps it, and nothing starts.
- A live panel's timer that fires between that click and the page's answer (its request
  carries the form from before the click) does not undo the recipe.
- On digits, a recipe that mirrors images gets one click that turns mirroring off: the
  form, the Augmentation page and, after a reload, the run's config.json all have it off.
"""

from __future__ import annotations

import re
import time

import pytest
from helpers import (
    TimerEcho,
    act,
    assert_healthy,
    choose_radio,
    click,
    errors,
    main_text,
    navigate,
    open_page,
    select,
    use_digits,
    wait_for_text,
    wait_idle,
    wait_without_text,
)

from lib import drafts, hardware, jobs, measured, runstore
from lib.config import (
    AugmentConfig,
    ConvBlock,
    DataConfig,
    HeadConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from lib.recipes import RECIPE_INFO, RECIPES

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 300


def _run_ids() -> set[str]:
    return {p.name for p in runstore.list_run_dirs()}


def _type_enter(page, role: str, label: str, value) -> None:
    """Type into a field and press Enter, as a person does."""
    box = page.get_by_role(role, name=label).first
    box.fill(str(value))
    act(page, lambda: box.press("Enter"))


def _number(page, label: str) -> str:
    return page.get_by_role("spinbutton", name=label).first.input_value()


def _text(page, label: str) -> str:
    return page.get_by_role("textbox", name=label).first.input_value()


def _combo(page, label: str) -> str:
    return page.get_by_role("combobox", name=label).first.input_value()


def _sidebar(page) -> str:
    return page.inner_text('[data-testid="stSidebar"]')


def _use_recipe_on_digits(page, server, title: str) -> None:
    """Digits on the Dataset page, then the recipe ``title`` on the Train page, as a person."""
    open_page(page, server, "dataset")
    use_digits(page)
    navigate(page, "Train")
    select(page, "Start from a recipe", title)
    click(page, "Use recipe")


def _open_more_options(page) -> None:
    expander = page.locator('[data-testid="stExpander"]').filter(has_text="More options").first
    if not expander.get_by_role("spinbutton", name="Momentum").first.is_visible():
        expander.locator("summary").first.click()
        wait_idle(page)
    expander.get_by_role("spinbutton", name="Momentum").first.wait_for()


def test_enter_starts_nothing_and_the_draft_survives_reload_back_and_tabs(
    streamlit_server, page, new_page, steps
):
    before = _run_ids()
    open_page(page, streamlit_server, "")
    navigate(page, "Dataset")
    use_digits(page)
    navigate(page, "Model")
    select(page, "Architecture", "LeNet-5")
    navigate(page, "Train")
    _type_enter(page, "spinbutton", "Epochs", 3)
    _type_enter(page, "textbox", "Run name (optional)", "typed then enter")
    steps(page, "typed-and-entered")
    assert _run_ids() == before, "Enter in a field started a run"
    assert "Not started" not in main_text(page)

    url = page.url
    assert re.search(r"[?&]draft=[a-z0-9]{8}", url), url
    page.reload()
    wait_idle(page)
    assert_healthy(page)
    steps(page, "reloaded")
    assert _number(page, "Epochs") == "3"
    assert _text(page, "Run name (optional)") == "typed then enter"
    assert "digits" in _sidebar(page) and "lenet5" in _sidebar(page), _sidebar(page)

    navigate(page, "Dataset")
    page.go_back()
    wait_for_text(page, r"Start training", timeout_s=30)
    wait_idle(page)
    assert_healthy(page)
    steps(page, "back")
    assert _number(page, "Epochs") == "3", "Back lost the draft"

    # Under load Streamlit records a page change in two steps, the new page without the
    # address's parameters and then with them, as two history entries; Back then took two
    # presses. The same two steps, made here at once, leave one entry: Back returns here.
    train_url = page.url
    dataset = re.sub(r"/train(?=[?#]|$)", "/dataset", train_url)
    assert dataset != train_url, train_url
    page.evaluate(
        "([bare, full]) => { history.pushState({}, '', bare); history.pushState({}, '', full); }",
        [dataset.split("?")[0], dataset],
    )
    assert page.url == dataset
    page.go_back()
    page.wait_for_function("url => location.href === url", arg=train_url)

    second_tab = page.context.new_page()
    second_tab.goto(url, wait_until="domcontentloaded")
    wait_idle(second_tab)
    assert _number(second_tab, "Epochs") == "3" and "digits" in _sidebar(second_tab)
    second_tab.close()

    other = new_page()  # another person, another browser
    open_page(other, streamlit_server, "train")
    steps(other, "second-browser")
    assert _number(other, "Epochs") == str(TrainConfig().epochs)
    assert "shapes" in _sidebar(other) and "digits" not in _sidebar(other)
    # and theirs does not leak back into the first browser's draft
    _type_enter(other, "spinbutton", "Epochs", 11)
    page.reload()
    wait_idle(page)
    assert _number(page, "Epochs") == "3"
    assert _run_ids() == before


def test_use_recipe_then_double_click_start_trains_exactly_what_the_form_shows(
    streamlit_server, page, steps
):
    _use_recipe_on_digits(page, streamlit_server, "Accurate")
    steps(page, "recipe-used")
    recipe = RECIPES["accurate"]
    assert _number(page, "Epochs") == str(recipe.train.epochs)
    assert float(_number(page, "Learning rate")) == recipe.train.learning_rate
    assert float(_number(page, "Warm-up epochs")) == recipe.train.warmup_epochs
    _open_more_options(page)
    tta = page.get_by_role("checkbox", name="Flip test-time augmentation").first
    assert tta.is_checked() == recipe.train.tta_flip
    assert recipe.model.preset in _sidebar(page)
    assert f"Augmentation · {recipe.augment.preset}" in _sidebar(page), _sidebar(page)

    _type_enter(page, "spinbutton", "Epochs", 2)
    _type_enter(page, "spinbutton", "Batch size", 64)
    _open_more_options(page)
    steps(page, "form-before-start")
    shown = {
        "epochs": int(_number(page, "Epochs")),
        "batch_size": int(_number(page, "Batch size")),
        "learning_rate": float(_number(page, "Learning rate")),
        "warmup_epochs": float(_number(page, "Warm-up epochs")),
        "momentum": float(_number(page, "Momentum")),
        "weight_decay": float(_number(page, "Weight decay")),
        "label_smoothing": float(_number(page, "Label smoothing")),
        "seed": int(_number(page, "Seed")),
        "tta_flip": tta.is_checked(),
        "optimizer": _combo(page, "Optimizer"),
        "schedule": _combo(page, "LR schedule"),
    }
    before = _run_ids()
    page.get_by_role("button", name="Start training").first.dblclick()
    wait_idle(page)
    page.wait_for_timeout(1500)
    wait_idle(page)
    steps(page, "double-clicked-start")
    new = _run_ids() - before
    assert len(new) == 1, f"a double click made {len(new)} runs"
    (run_id,) = new
    try:
        config = runstore.read_config(runstore.run_dir(run_id))
        expected = recipe.train.replace(epochs=2, batch_size=64)
        assert config.train == expected
        assert config.model == recipe.model and config.augment == recipe.augment
        assert config.data == DataConfig(source="digits")
        words = {"Adam": "adam", "warm-up + cosine": "warmup_cosine"}
        for name, value in shown.items():
            got = getattr(config.train, name)
            value = words.get(value, value)
            assert got == value, f"{name}: the form showed {value!r}, the run has {got!r}"
    finally:
        jobs.request_stop(run_id)


def test_on_the_default_shapes_set_one_click_puts_the_shapes_recipe_in_the_form(
    streamlit_server, page, steps
):
    before = _run_ids()
    open_page(page, streamlit_server, "train")  # a new draft: shapes and the Fast CNN
    assert "Generated shapes" in main_text(page), main_text(page)
    click(page, "Use the Shapes demo recipe")
    steps(page, "shapes-recipe-used")
    shapes = RECIPES["shapes"].train
    assert (_number(page, "Epochs"), _number(page, "Batch size")) == (
        str(shapes.epochs),
        str(shapes.batch_size),
    )
    assert float(_number(page, "Warm-up epochs")) == shapes.warmup_epochs
    assert "custom CNN (4 blocks)" in _sidebar(page), _sidebar(page)
    assert _combo(page, "Start from a recipe") == "Shapes demo"

    page.reload()
    wait_idle(page)
    assert_healthy(page)
    steps(page, "reloaded")
    assert _number(page, "Epochs") == str(shapes.epochs)
    assert "custom CNN (4 blocks)" in _sidebar(page)
    assert _combo(page, "Start from a recipe") == "Shapes demo"  # not Fast beside it
    assert "Generated shapes" not in main_text(page)  # offered while it applies only
    assert _run_ids() == before, "choosing a recipe started a run"


def test_on_digits_turning_off_a_recipes_mirroring_is_what_trains(streamlit_server, page, steps):
    _use_recipe_on_digits(page, streamlit_server, "Precise")
    wait_for_text(page, "Mirroring digits")
    steps(page, "precise-on-digits")
    assert "Horizontal flip" in main_text(page)
    assert "The form below holds this recipe." in main_text(page)
    # The recipe is sized on CPUs that compute bfloat16: the page says whether this one does.
    slow = "This server's CPU has no native bfloat16"
    assert (slow in main_text(page)) is hardware.emulates_bfloat16()
    # ... and, where a CPU of this server's kind measured it, how long its epochs take here.
    here = measured.schedule_sentence("precise", hardware.server_tier())
    shown = bool(here) and here in main_text(page)
    assert shown is (hardware.emulates_bfloat16() and bool(here)), here
    navigate(page, "Augmentation")  # the switch reads on while the recipe mirrors
    page.get_by_role("switch", name="Horizontal flip").first.wait_for()
    assert page.get_by_role("switch", name="Horizontal flip").first.is_checked()
    navigate(page, "Train")
    wait_for_text(page, "Mirroring digits")
    before = _run_ids()
    click(page, "Turn off mirroring")
    wait_without_text(page, "Mirroring digits")
    steps(page, "mirroring-off")
    assert "Mirroring is off" in main_text(page)
    assert "The form below holds other values than this recipe" in main_text(page)
    _open_more_options(page)
    assert not page.get_by_role("checkbox", name="Flip test-time augmentation").first.is_checked()
    if hardware.nvidia_driver_present():  # the GPU decides; the page claims nothing
        assert "Here it trains in" not in main_text(page)
    else:
        policy = "float32" if hardware.emulates_bfloat16() else "bfloat16 (mixed)"
        assert f"Here it trains in {policy}" in main_text(page)
    assert "Augmentation · none" in _sidebar(page), _sidebar(page)
    assert "vgg_small" in _sidebar(page)

    page.reload()
    wait_idle(page)
    assert_healthy(page)
    assert "Mirroring digits" not in main_text(page)
    # The picker starts on Fast again (no recipe equals the changed form): it says so.
    assert _combo(page, "Start from a recipe") == "Fast (default)"
    assert "The form below holds other values than this recipe" in main_text(page)
    assert "The form below holds this recipe." not in main_text(page)
    navigate(page, "Augmentation")
    flip = page.get_by_role("switch", name="Horizontal flip").first
    flip.wait_for()
    steps(page, "augmentation-page")
    assert not flip.is_checked()
    navigate(page, "Train")
    _type_enter(page, "spinbutton", "Epochs", 1)
    assert _run_ids() == before, "turning off mirroring or Enter started a run"
    click(page, "Start training")
    deadline = time.time() + 30
    while not (_run_ids() - before) and time.time() < deadline:
        time.sleep(0.5)
    (run_id,) = _run_ids() - before
    try:
        config = runstore.read_config(runstore.run_dir(run_id))
        precise = RECIPES["precise"]
        assert config.augment == AugmentConfig(preset="none")
        assert config.train == precise.train.replace(tta_flip=False, epochs=1)
        assert config.model == precise.model and config.data == DataConfig(source="digits")
    finally:
        jobs.request_stop(run_id)


def test_a_live_panel_tick_in_flight_does_not_undo_a_recipe(streamlit_server, page, steps):
    """The live panel's timer fires between the click and the page's answer.

    The tick carries the form as it was before the click (6 epochs, Fast); the page
    must not take those for edits: the form, the picker, its description and the
    draft keep the Shapes demo recipe, through the next edit and a reload.
    """
    echo = TimerEcho(page)
    before = _run_ids()
    open_page(page, streamlit_server, "train")  # a new draft: shapes and the Fast CNN
    assert _number(page, "Epochs") == str(RECIPES["fast"].train.epochs)
    echo.arm(page)
    click(page, "Use the Shapes demo recipe")
    page.wait_for_timeout(2000)  # the echoed tick's run follows the click's
    wait_idle(page)
    steps(page, "recipe-used-with-a-tick-in-flight")
    assert echo.sent == 1
    shapes = RECIPES["shapes"].train
    assert (_number(page, "Epochs"), _number(page, "Batch size")) == (
        str(shapes.epochs),
        str(shapes.batch_size),
    )
    draft_id = re.search(r"draft=(\w+)", page.url).group(1)
    assert drafts.load(draft_id).train == shapes

    # The next edit reruns the whole page from the state the echo left behind.
    _type_enter(page, "textbox", "Run name (optional)", "after the tick")
    steps(page, "next-edit")
    assert _number(page, "Epochs") == str(shapes.epochs)
    assert _combo(page, "Start from a recipe") == "Shapes demo"
    assert RECIPE_INFO["shapes"].description[:60] in main_text(page)
    stored = drafts.load(draft_id)
    assert (stored.train, stored.run_name) == (shapes, "after the tick")

    page.reload()
    wait_idle(page)
    assert _number(page, "Epochs") == str(shapes.epochs)
    assert _run_ids() == before, "choosing a recipe started a run"


def _tiny(epochs: int, name: str) -> RunConfig:
    return RunConfig(
        name=name,
        data=DataConfig(source="digits"),
        model=ModelConfig(
            preset="custom", blocks=(ConvBlock(filters=8),), head=HeadConfig(dense=(16,))
        ),
        train=TrainConfig(epochs=epochs, batch_size=32, schedule="constant"),
    )


def _wait_state(run_id: str, states: tuple[str, ...], timeout: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while runstore.read_status(runstore.run_dir(run_id)).state not in states:
        assert time.monotonic() < deadline, runstore.read_status(runstore.run_dir(run_id))
        time.sleep(0.5)


def test_the_watched_run_stays_when_it_completes_and_delete_asks_first(
    streamlit_server, page, steps
):
    short = jobs.start_run(_tiny(1, "short one"), validate=False)
    long = jobs.start_run(_tiny(500, "long one"), validate=False)  # queued behind the short one
    try:
        open_page(page, streamlit_server, "train")
        select(page, "Watching run", next(o for o in _options(page) if o.startswith("short one")))
        _wait_state(short, ("completed",))
        _wait_state(long, ("running",))  # another run is active now: the old bug jumped to it
        wait_for_text(page, r"Completed · test accuracy", timeout_s=60)
        page.wait_for_timeout(5000)  # several refreshes of the live panel
        steps(page, "completed-still-watched")
        assert _combo(page, "Watching run").startswith("short one"), _combo(page, "Watching run")
        assert "Completed · test accuracy" in main_text(page)

        # The live panel reruns on its own every second, so the rerun act() waits for
        # may be the timer's: each step waits for what the click shows.
        click(page, "Delete")
        wait_for_text(page, r"Delete run short one\?")
        steps(page, "delete-asked")
        text = main_text(page)
        assert "Delete run short one?" in text and "trained model" in text, text
        assert runstore.run_dir(short).exists()
        click(page, "Keep it")
        wait_without_text(page, "Delete run short one?")
        assert runstore.run_dir(short).exists()
        click(page, "Delete")
        wait_for_text(page, r"Delete run short one\?")
        click(page, "Delete for good")
        wait_for_text(page, rf"Deleted run {short}")
        steps(page, "deleted")
        assert not runstore.run_dir(short).exists()
        assert "Delete run short one?" not in main_text(page)
        assert_healthy(page)
    finally:
        jobs.request_stop(long)


def _options(page) -> list[str]:
    from helpers import options

    return options(page, "Watching run")


def test_weights_that_cannot_be_had_are_refused_at_start_in_the_model_pages_words(
    streamlit_server, page, steps
):
    before = _run_ids()
    open_page(page, streamlit_server, "model")
    select(page, "Architecture", "MobileNetV2 (transfer)")
    choose_radio(page, "Initial weights", "ImageNet")
    wait_for_text(page, r"cannot be downloaded from here")
    model_page_words = re.search(r"ImageNet weights for .*?copy it to \S+", main_text(page), re.S)
    assert model_page_words, main_text(page)
    steps(page, "model-warns")
    navigate(page, "Train")
    click(page, "Start training")
    steps(page, "start-refused")
    refusal = " ".join(errors(page))
    assert "Not started" in refusal and "Initial weights to 'random'" in refusal, refusal
    assert model_page_words.group(0).split(" (")[0] in refusal
    assert _run_ids() == before, "a run was queued although its weights cannot be had"


def _zip_of_pngs(path, classes: dict[str, int]) -> None:
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for name, n in classes.items():
            for i in range(n):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
                zf.writestr(f"{name}/{i}.png", buf.getvalue())


def test_an_upload_keeps_its_name_and_survives_a_reload_and_a_rename(
    streamlit_server, page, steps, tmp_path
):
    from helpers import upload

    archive = tmp_path / "holiday pets.zip"
    _zip_of_pngs(archive, {"cats": 12, "dogs": 12})
    open_page(page, streamlit_server, "dataset")
    page.get_by_text("Upload images").first.click()
    wait_idle(page)
    upload(page, "Zip archive", str(archive))
    click(page, "Store zip")
    wait_for_text(page, r"Stored holiday pets\.zip and selected it")
    steps(page, "uploaded")
    assert _combo(page, "Upload").startswith("holiday pets · 2 classes · 24 images"), _combo(
        page, "Upload"
    )
    assert "uploaded set" in _sidebar(page)

    page.reload()  # the bug this guards against: a reload went back to the shapes
    wait_idle(page)
    assert_healthy(page)
    assert "uploaded set" in _sidebar(page) and "shapes" not in _sidebar(page), _sidebar(page)
    assert _combo(page, "Upload").startswith("holiday pets")

    _type_enter(page, "textbox", "Name of this upload", "pets, renamed")
    steps(page, "renamed")
    assert _combo(page, "Upload").startswith("pets, renamed · 2 classes"), _combo(page, "Upload")
    navigate(page, "Train")
    wait_for_text(page, r"Dataset · uploaded set")
