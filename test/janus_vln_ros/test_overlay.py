"""The debug overlay (plain numpy/OpenCV): what it draws, where, and on which frames."""

from __future__ import annotations

import numpy as np
import pytest

from janus_vln_ros.overlay import CHOSEN, draw_overlay


def gray(h=480, w=640) -> np.ndarray:
    return np.full((h, w, 3), 128, np.uint8)


def test_overlay_draws_text_band_and_bars_without_touching_the_input():
    frame = gray()
    probs = {"STOP": 0.05, "MOVE_FORWARD": 0.7, "TURN_LEFT": 0.2, "TURN_RIGHT": 0.05}
    out = draw_overlay(frame, "walk past the sofa and stop at the kitchen door", 12,
                       "MOVE_FORWARD", probs)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.all(frame == 128)  # the input is left alone
    top, middle = out[:40], out[200:280]
    assert top.mean() < 100 and (top == 255).any()  # dark band with white text
    assert np.all(middle == 128)  # the view itself is not covered
    bottom = out[-80:, :340]
    assert (np.abs(bottom.astype(int) - CHOSEN).sum(axis=2) == 0).sum() > 500  # chosen bar
    # the chosen bar: 0.7 of 160 px, right of the 150 px labels
    chosen = np.abs(out[200:].astype(int) - CHOSEN).sum(axis=2) == 0
    cols = np.where(chosen.any(axis=0))[0]
    assert cols.max() == pytest.approx(6 + 150 + 0.7 * 160, abs=1)


def test_overlay_text_changes_with_the_step_and_action():
    a = draw_overlay(gray(), "go", 1, "TURN_LEFT")
    b = draw_overlay(gray(), "go", 2, "TURN_LEFT")
    c = draw_overlay(gray(), "go", 1, "STOP")
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(draw_overlay(gray(), "", None, ""), gray())  # nothing to draw


def test_long_instruction_is_wrapped_to_at_most_three_lines():
    long = " ".join(["walk"] * 200)
    out = draw_overlay(gray(), long, 3, "STOP")
    shaded = np.where(out[:, 5, 0] < 100)[0]
    assert shaded.max() < 4 * 20 + 6 + 2  # three instruction lines + the step line


@pytest.mark.parametrize("shape", [(24, 32), (720, 1280), (480, 480)])
def test_any_frame_size(shape):
    out = draw_overlay(gray(*shape), "go to the door", 5, "MOVE_FORWARD",
                       {"STOP": 0.5, "MOVE_FORWARD": 0.5})
    assert out.shape == (*shape, 3)


def test_bad_frame_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        draw_overlay(np.zeros((4, 4), np.uint8))
