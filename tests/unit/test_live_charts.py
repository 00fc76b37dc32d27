"""The Train page's live charts: what they draw, and how often they redraw while a run trains."""

from __future__ import annotations

from lib.plots.training import held_for_redraw, live_curves_figure, lr_figure


def test_a_training_runs_charts_redraw_at_most_every_hold_and_at_once_for_a_new_state():
    store: dict = {}
    run = ("20260101-000000-a", "running", 1)
    assert held_for_redraw(store, run, "epoch 1", now=100.0, hold_s=5.0) == "epoch 1"
    # Refreshes within the hold send what was drawn, so the browser keeps the chart.
    assert held_for_redraw(store, run, "epoch 1.2", now=101.5, hold_s=5.0) == "epoch 1"
    assert held_for_redraw(store, run, "epoch 1.5", now=104.9, hold_s=5.0) == "epoch 1"
    assert held_for_redraw(store, run, "epoch 1.6", now=105.0, hold_s=5.0) == "epoch 1.6"
    assert held_for_redraw(store, run, "epoch 1.7", now=106.0, hold_s=5.0) == "epoch 1.6"
    # An epoch ends: its point draws at once.
    epoch_2 = ("20260101-000000-a", "running", 2)
    assert held_for_redraw(store, epoch_2, "epoch 2", now=106.5, hold_s=5.0) == "epoch 2"
    assert held_for_redraw(store, epoch_2, "epoch 2.1", now=107.0, hold_s=5.0) == "epoch 2"
    # The run ends: its final curves draw at once, and are never held (hold 0).
    done = ("20260101-000000-a", "completed", 3)
    assert held_for_redraw(store, done, "final", now=107.5, hold_s=0.0) == "final"
    assert held_for_redraw(store, done, "final 2", now=107.6, hold_s=0.0) == "final 2"
    # Another run watched: its curves at once.
    other = ("20260101-000000-b", "running", 3)
    assert held_for_redraw(store, other, "b", now=107.7, hold_s=5.0) == "b"


def test_held_data_draws_the_same_figures():
    history = {"epoch": [1.0, 2.0], "loss": [1.0, 0.5], "accuracy": [0.6, 0.8],
               "learning_rate": [1e-3, 5e-4]}  # fmt: skip
    store: dict = {}
    first = held_for_redraw(store, ("r", "running", 2), (history, None, 2.0), now=0.0, hold_s=5.0)
    # Later in the same epoch (the page's key counts finished epochs): training is at 2.6.
    held = held_for_redraw(store, ("r", "running", 2), (history, None, 2.6), now=1.5, hold_s=5.0)
    plan = {"epoch": [0.0, 3.0], "learning_rate": [1e-3, 0.0]}
    # The spec sent to the browser is byte for byte the earlier one.
    assert (
        live_curves_figure(held[0], held[1]).to_json()
        == live_curves_figure(first[0], first[1]).to_json()
    )
    assert (
        lr_figure(plan, held[0], held[2]).to_json() == lr_figure(plan, first[0], first[2]).to_json()
    )
    assert lr_figure(plan, history, 2.6).to_json() != lr_figure(plan, held[0], held[2]).to_json()
