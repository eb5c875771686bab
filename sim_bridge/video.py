"""Episode videos: the agent's RGB view beside a top-down map with its path and the expert's.

Each frame is ``[RGB | map]``: the map is the simulator's top-down occupancy image (habitat
orientation: -z, the yaw-0 heading, points up), scaled to the RGB height, with the expert's
ground-truth path in green, the agent's path so far in red, the goal and its success circle in
blue, the agent as a dot with a heading tick, and the step and distance to goal written on it.
Frames stream to an H.264 mp4 through imageio-ffmpeg as they come (nothing is kept in memory).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

AGENT_COLOR = (220, 40, 40)
EXPERT_COLOR = (30, 160, 60)
GOAL_COLOR = (40, 80, 220)


def world_to_pixel(top_down: Any, points: Sequence[Sequence[float]]) -> np.ndarray:
    """(col, row) float pixel coordinates of world (x, y, z) points on a top-down map.

    ``top_down`` has ``meters_per_pixel`` and ``origin`` (x, z of the image's top-left corner);
    pixel (r, c) covers x in [x0 + c*m, x0 + (c+1)*m) and z in [z0 + r*m, z0 + (r+1)*m).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    x0, z0 = top_down.origin
    m = float(top_down.meters_per_pixel)
    return np.stack([(pts[:, 0] - x0) / m - 0.5, (pts[:, 2] - z0) / m - 0.5], axis=1)


def _even(n: int) -> int:
    return n + (n % 2)


def compose_frame(
    rgb: np.ndarray,
    top_down: Any,
    agent_path: Sequence[Sequence[float]],
    yaw: float,
    expert_path: Sequence[Sequence[float]] | None = None,
    goal: Sequence[float] | None = None,
    success_distance: float = 3.0,
    text: str = "",
) -> np.ndarray:
    """One video frame: ``rgb`` (HxWx3 uint8) beside the annotated map, even-sized for H.264."""
    import cv2

    h = rgb.shape[0]
    base = np.asarray(top_down.image, dtype=np.uint8)
    scale = h / base.shape[0]
    width = max(1, int(round(base.shape[1] * scale)))
    canvas = np.ascontiguousarray(cv2.resize(base, (width, h), interpolation=cv2.INTER_NEAREST))
    shift = 4  # sub-pixel drawing precision

    def pix(points):
        return np.round(world_to_pixel(top_down, points) * scale * (1 << shift)).astype(np.int32)

    thickness = max(1, int(round(h / 160)))
    if goal is not None:
        g = pix([goal])[0]
        radius = int(round(success_distance / top_down.meters_per_pixel * scale * (1 << shift)))
        cv2.circle(canvas, tuple(int(v) for v in g), radius, GOAL_COLOR, 1, cv2.LINE_AA, shift)
        cv2.circle(canvas, tuple(int(v) for v in g), 3 * thickness << shift, GOAL_COLOR, -1,
                   cv2.LINE_AA, shift)
    if expert_path is not None and len(expert_path) > 1:
        cv2.polylines(canvas, [pix(expert_path)], False, EXPERT_COLOR, thickness, cv2.LINE_AA,
                      shift)
    if len(agent_path) > 1:
        cv2.polylines(canvas, [pix(agent_path)], False, AGENT_COLOR, thickness, cv2.LINE_AA, shift)
    if len(agent_path):
        p = pix([agent_path[-1]])[0]
        cv2.circle(canvas, tuple(int(v) for v in p), 3 * thickness << shift, AGENT_COLOR, -1,
                   cv2.LINE_AA, shift)
        tip = np.asarray(agent_path[-1], dtype=np.float64) + 0.6 * np.array(
            [-math.sin(yaw), 0.0, -math.cos(yaw)])
        cv2.line(canvas, tuple(int(v) for v in p), tuple(int(v) for v in pix([tip])[0]),
                 AGENT_COLOR, thickness, cv2.LINE_AA, shift)
    if text:
        cv2.putText(canvas, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    frame = np.concatenate([np.asarray(rgb, dtype=np.uint8)[..., :3], canvas], axis=1)
    hh, ww = _even(frame.shape[0]), _even(frame.shape[1])
    if (hh, ww) != frame.shape[:2]:
        frame = np.pad(frame, ((0, hh - frame.shape[0]), (0, ww - frame.shape[1]), (0, 0)))
    return frame


class EpisodeVideo:
    """Writes one episode's frames to ``path`` (mp4, ``fps`` frames per second).

    The evaluation runner calls :meth:`add` after reset and after every step with the
    observation, the simulator (for the map and the distance to goal) and the agent's positions
    so far, then :meth:`close` (``discard=True`` deletes a video of a failed episode).
    """

    def __init__(
        self,
        path: str | Path,
        fps: int = 6,
        expert_path: Sequence[Sequence[float]] | None = None,
        goal: Sequence[float] | None = None,
        success_distance: float = 3.0,
    ):
        self.path = Path(path)
        self.fps = int(fps)
        self.expert_path = expert_path
        self.goal = goal
        self.success_distance = success_distance
        self._map = None
        self._writer = None
        self.frames = 0

    def add(self, obs: Any, sim: Any, positions: Sequence[Sequence[float]]) -> None:
        """Append the frame for the agent's current state."""
        if self._map is None:
            self._map = sim.top_down_map()
        try:
            dist = f"  d={float(sim.distance_to_goal()):.2f}m"
        except Exception:  # noqa: BLE001 - the label is cosmetic
            dist = ""
        frame = compose_frame(
            obs.rgb, self._map, positions, float(obs.yaw), self.expert_path, self.goal,
            self.success_distance, text=f"step {len(positions) - 1}{dist}",
        )
        self.append(frame)

    def append(self, frame: np.ndarray) -> None:
        """Append a ready frame (HxWx3 uint8, even sides)."""
        if self._writer is None:
            import imageio.v2 as imageio

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = imageio.get_writer(
                str(self.path), fps=self.fps, codec="libx264", quality=8,
                pixelformat="yuv420p", macro_block_size=2, ffmpeg_log_level="error",
            )
        self._writer.append_data(frame)
        self.frames += 1

    def close(self, discard: bool = False) -> None:
        """Finish the file (or delete it with ``discard``)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if discard and self.path.exists():
            self.path.unlink()
