"""The debug view: a camera frame with the instruction, the step, the action and its probabilities.

Plain numpy + OpenCV (no rclpy), so the navigator's ``~/debug_image`` and the demo video draw the
same overlay. :func:`draw_overlay` returns a new HxWx3 uint8 RGB image the size of the frame:

* a dark band at the top with the instruction (word-wrapped, at most ``MAX_LINES`` lines, the
  last one ending in "..." when cut) and ``step N: ACTION``;
* when the policy gave probabilities, one bar per action at the bottom left, the chosen action's
  bar highlighted, with its value in percent.

Text and bars scale with the frame width (the layout is designed at 640 px wide); frames too
small for text (under 64x48) get only the action bars.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

ACTIONS = ("STOP", "MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT")
MAX_LINES = 3
TEXT = (255, 255, 255)
CHOSEN = (255, 200, 40)
BAR = (120, 190, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _wrap(text: str, max_width: int, scale: float, thickness: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; at most MAX_LINES lines ("..." when cut)."""
    lines: list[str] = []
    current = ""
    words = text.split()
    for word in words:
        trial = f"{current} {word}".strip()
        if cv2.getTextSize(trial, FONT, scale, thickness)[0][0] <= max_width or not current:
            current = trial
            continue
        lines.append(current)
        current = word
        if len(lines) == MAX_LINES:
            break
    else:
        if current:
            lines.append(current)
        return lines
    last = lines[-1]
    while last and cv2.getTextSize(last + "...", FONT, scale, thickness)[0][0] > max_width:
        last = last[:-1]
    lines[-1] = last.rstrip() + "..."
    return lines


def _shade(image: np.ndarray, y0: int, y1: int, x0: int, x1: int, alpha: float = 0.55) -> None:
    """Darken a rectangle in place so that text on it stays readable."""
    region = image[y0:y1, x0:x1]
    region[:] = (region.astype(np.float32) * (1.0 - alpha)).astype(np.uint8)


def draw_overlay(
    rgb: np.ndarray,
    instruction: str = "",
    step: int | None = None,
    action: str = "",
    probs: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The frame with the debug overlay (see the module docstring); ``rgb`` is not modified."""
    frame = np.asarray(rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"draw_overlay needs an HxWx3 uint8 RGB frame, got {frame.shape} "
                         f"{frame.dtype}")
    out = np.ascontiguousarray(frame).copy()
    height, width = out.shape[:2]
    unit = width / 640.0
    scale = 0.5 * unit
    thickness = max(1, round(unit))
    line_h = max(1, round(20 * unit))
    pad = max(1, round(6 * unit))
    if height >= 48 and width >= 64:
        lines = _wrap(instruction, width - 2 * pad, scale, thickness) if instruction else []
        head = f"step {step}" if step is not None else ""
        if action:
            head = f"{head}: {action}" if head else action
        if head:
            lines.append(head)
        if lines:
            band = min(height, pad + line_h * len(lines))
            _shade(out, 0, band, 0, width)
            for i, line in enumerate(lines):
                color = CHOSEN if head and i == len(lines) - 1 else TEXT
                cv2.putText(out, line, (pad, (i + 1) * line_h - pad // 2), FONT, scale, color,
                            thickness, cv2.LINE_AA)
    if probs:
        names = [a for a in ACTIONS if a in probs] + sorted(set(probs) - set(ACTIONS))
        bar_h = max(1, round(14 * unit))
        label_w = round(150 * unit) if width >= 64 else 0
        bar_w = max(1, round(160 * unit))
        y_top = height - pad - bar_h * len(names)
        _shade(out, max(0, y_top - pad), height, 0, min(width, label_w + bar_w + 2 * pad + 1))
        for i, name in enumerate(names):
            p = min(1.0, max(0.0, float(probs[name])))
            y = y_top + i * bar_h
            chosen = name == action
            x0 = pad + label_w
            cv2.rectangle(out, (x0, y + 1), (x0 + max(1, round(p * bar_w)), y + bar_h - 2),
                          CHOSEN if chosen else BAR, -1)
            if label_w:
                cv2.putText(out, f"{name} {100 * p:.0f}%", (pad, y + bar_h - 3), FONT,
                            0.4 * unit, CHOSEN if chosen else TEXT, thickness, cv2.LINE_AA)
    return out
