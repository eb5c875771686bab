"""MOCK habitat_sim.simulator: SimulatorConfiguration, Configuration, Simulator.

The camera paints the pose into the RGBA frame: R = (x + 5) * 20, G = (z + 5) * 20,
B = heading in degrees / 360 * 255, A = 255; depth is the distance ahead to the room's outer
walls along the view direction, the same in every pixel.
"""

import math
import os

import numpy as np

from habitat_sim.agent import Agent, AgentState
from habitat_sim.nav import ROOM, NavMeshSettings, PathFinder
from habitat_sim.sensor import SensorType
from habitat_sim.utils.common import quat_from_angle_axis, quat_to_coeffs

__all__ = ["Configuration", "Simulator", "SimulatorConfiguration"]


class SimulatorConfiguration:
    """pybind class in habitat-sim: setting an attribute it does not have raises."""

    __slots__ = ("scene_dataset_config_file", "scene_id", "random_seed", "default_agent_id",
                 "gpu_device_id", "allow_sliding", "create_renderer",
                 "leave_context_with_background_renderer", "frustum_culling", "enable_physics",
                 "use_semantic_textures", "enable_gfx_replay_save", "physics_config_file",
                 "override_scene_light_defaults", "scene_light_setup", "load_semantic_mesh",
                 "force_separate_semantic_scene_graph", "requires_textures")

    def __init__(self):
        self.scene_dataset_config_file = "default"
        self.scene_id = ""
        self.random_seed = 0
        self.default_agent_id = 0
        self.gpu_device_id = 0
        self.allow_sliding = True
        self.create_renderer = False
        self.leave_context_with_background_renderer = False
        self.frustum_culling = True
        self.enable_physics = False
        self.use_semantic_textures = True
        self.enable_gfx_replay_save = False
        self.physics_config_file = "./data/default.physics_config.json"
        self.override_scene_light_defaults = False
        self.scene_light_setup = ""
        self.load_semantic_mesh = False
        self.force_separate_semantic_scene_graph = False
        self.requires_textures = True

    def __eq__(self, other):
        return isinstance(other, SimulatorConfiguration) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)


class Configuration:
    """attrs(slots=True) in habitat-sim."""

    __slots__ = ("sim_cfg", "agents", "metadata_mediator", "enable_batch_renderer")

    def __init__(self, sim_cfg, agents, metadata_mediator=None, enable_batch_renderer=False):
        self.sim_cfg = sim_cfg
        self.agents = agents
        self.metadata_mediator = metadata_mediator
        self.enable_batch_renderer = enable_batch_renderer

    def __eq__(self, other):
        return isinstance(other, Configuration) and self.sim_cfg == other.sim_cfg and \
            self.agents == other.agents


class Simulator:
    def __init__(self, config):
        self.config = config
        self.agents = []
        self._pathfinder = None
        self._buffers = {}
        self._initialized = False
        self._set_from_config(config)

    def _set_from_config(self, config):
        if len(config.agents) == 0:
            raise RuntimeError("Config has not agents specified.  Must specify at least 1 agent")
        scene = config.sim_cfg.scene_id
        if not os.path.isfile(scene):
            raise RuntimeError(f"MOCK habitat_sim: scene {scene} not found")
        self._pathfinder = PathFinder()
        navmesh = os.path.splitext(scene)[0] + ".navmesh"
        if os.path.isfile(navmesh):  # habitat-sim loads the navmesh beside the scene
            self._pathfinder.load_nav_mesh(navmesh)
        self._pathfinder.seed(config.sim_cfg.random_seed)
        self.agents = [Agent(cfg) for cfg in config.agents]
        for agent in self.agents:
            agent._move_filter = self.step_filter
        self._buffers = {}
        for spec in config.agents[config.sim_cfg.default_agent_id].sensor_specifications:
            h, w = (int(v) for v in spec.resolution)
            if spec.sensor_type == SensorType.DEPTH:
                self._buffers[spec.uuid] = (spec, np.empty((h, w), np.float32))
            else:
                self._buffers[spec.uuid] = (spec, np.empty((h, w, spec.channels), np.uint8))
        for i in range(len(self.agents)):
            self.initialize_agent(i)
        self._initialized = True

    @property
    def pathfinder(self):
        return self._pathfinder

    def initialize_agent(self, agent_id, initial_state=None):
        agent = self.get_agent(agent_id)
        if initial_state is None:
            initial_state = AgentState()
            if self._pathfinder.is_loaded:
                initial_state.position = self._pathfinder.get_random_navigable_point()
                initial_state.rotation = quat_from_angle_axis(0.0, np.array([0, 1, 0]))
        agent.set_state(initial_state, is_initial=True)
        return agent

    def get_agent(self, agent_id):
        return self.agents[agent_id]

    def seed(self, new_seed):
        self._pathfinder.seed(new_seed)

    def reconfigure(self, config):
        if self.config != config:
            self._set_from_config(config)
            self.config = config

    def recompute_navmesh(self, pathfinder, navmesh_settings, include_static_objects=False):
        for name in NavMeshSettings.__slots__:
            setattr(pathfinder._settings, name, getattr(navmesh_settings, name))
        pathfinder._loaded = True
        return True

    def step_filter(self, start_pos, end_pos):
        if self._pathfinder.is_loaded:
            if self.config.sim_cfg.allow_sliding:
                return self._pathfinder.try_step(start_pos, end_pos)
            return self._pathfinder.try_step_no_sliding(start_pos, end_pos)
        return end_pos

    def _render(self):
        state = self.get_agent(self.config.sim_cfg.default_agent_id).get_state()
        x, y, z, w = quat_to_coeffs(state.rotation)
        yaw = 2.0 * math.atan2(y, w)
        fx, fz = -math.sin(yaw), -math.cos(yaw)
        px, pz = float(state.position[0]), float(state.position[2])
        ahead = min((ROOM * (1 if f > 0 else -1) - p) / f
                    for p, f in ((px, fx), (pz, fz)) if abs(f) > 1e-9)
        observations = {}
        for uuid, (spec, buffer) in self._buffers.items():
            if spec.sensor_type == SensorType.DEPTH:
                buffer[...] = ahead
            else:
                buffer[..., 0] = int(np.clip(round((px + 5) * 20), 0, 255))
                buffer[..., 1] = int(np.clip(round((pz + 5) * 20), 0, 255))
                buffer[..., 2] = int(round(math.degrees(yaw) % 360 / 360 * 255)) % 256
                buffer[..., 3] = 255
            observations[uuid] = np.flip(buffer, axis=0)  # like habitat-sim: a view, reused
        return observations

    def get_sensor_observations(self, agent_ids=0):
        return self._render()

    def step(self, action, dt=1.0 / 60.0):
        collided = self.get_agent(self.config.sim_cfg.default_agent_id).act(action)
        observations = self._render()
        observations["collided"] = collided
        return observations

    def close(self, destroy=True):
        if not self._initialized:
            return
        self.agents = []
        self._buffers = {}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.close(destroy=True)
