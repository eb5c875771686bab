"""A small obstacle-free simulator with the sim_bridge interface, for fast rule-level tests.

Positions are (x, 0, z); yaw 0 looks along -z; forward moves 0.25 m, turns are 15 degrees.
Geodesic distance is the straight-line distance. Frames are tiny images whose colour encodes
the agent's pose, so a model can tell states apart.
"""

import dataclasses
import math

import numpy as np

from janus_core.actions import Action
from sim_bridge.episodes import Episode, Goal, yaw_to_quaternion


@dataclasses.dataclass
class FakeObs:
    rgb: np.ndarray
    position: list
    yaw: float
    depth: None = None
    collided: bool = False


@dataclasses.dataclass
class FakeCfg:
    forward_step: float = 0.25
    turn_angle: float = 15.0


class FakeSim:
    def __init__(self, width=112, height=84, stop_radius=0.25):
        self.cfg = FakeCfg()
        self.width, self.height = width, height
        self.stop_radius = stop_radius
        self.episode = None
        self.steps = 0

    def reset(self, episode):
        self.episode = episode
        self.pos = np.array(episode.start_position, dtype=float)
        q = episode.start_rotation
        self.yaw = 2 * math.atan2(q[1], q[3])
        self.steps = 0
        return self._obs()

    def _obs(self):
        rgb = np.zeros((self.height, self.width, 3), np.uint8)
        rgb[..., 0] = int(self.pos[0] * 40) % 256
        rgb[..., 1] = int(self.pos[2] * 40) % 256
        rgb[..., 2] = int(math.degrees(self.yaw)) % 256
        return FakeObs(rgb=rgb, position=self.pos.tolist(), yaw=self.yaw)

    @property
    def position(self):
        return self.pos.tolist()

    def step(self, action):
        action = Action(int(action))
        self.steps += 1
        if action == Action.MOVE_FORWARD:
            self.pos = self.pos + 0.25 * np.array([-math.sin(self.yaw), 0.0, -math.cos(self.yaw)])
        elif action == Action.TURN_LEFT:
            self.yaw += math.radians(15)
        elif action == Action.TURN_RIGHT:
            self.yaw -= math.radians(15)
        return self._obs()

    def geodesic_distance(self, a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        return float(np.hypot(a[0] - b[0], a[2] - b[2]))

    def distance_to_goal(self):
        return self.geodesic_distance(self.pos, self.episode.goal_position)

    def expert_action(self, goal=None):
        goal = np.asarray(self.episode.goal_position if goal is None else goal, float)
        d = goal - self.pos
        if math.hypot(d[0], d[2]) <= self.stop_radius:
            return Action.STOP
        want = math.atan2(-d[0], -d[2])
        err = (want - self.yaw + math.pi) % (2 * math.pi) - math.pi
        if abs(err) > math.radians(7.5) + 1e-6:
            return Action.TURN_LEFT if err > 0 else Action.TURN_RIGHT
        return Action.MOVE_FORWARD


def make_episodes(n=3):
    """Episodes with an L-shaped reference path (start, corner, goal)."""
    eps = []
    for i in range(n):
        length = 4.0 + 0.5 * i
        start, corner, goal = [0.0, 0.0, 0.0], [0.0, 0.0, -length], [-4.0, 0.0, -length]
        eps.append(Episode(
            episode_id=str(i + 1), scene_id="fake/scene_a.glb", start_position=start,
            start_rotation=yaw_to_quaternion(0.0), goals=[Goal(goal, 3.0)],
            instruction=f"walk forward {i} then turn left to the door",
            reference_path=[start, corner, goal], info={"geodesic_distance": length + 4.0},
        ))
    return eps
