"""MOCK of ``habitat_sim`` for tests: NOT the real library.

habitat-sim cannot be installed on our machines (conda, Python 3.9), so tests drive the habitat
worker against this stand-in, put on the worker's PYTHONPATH. It exposes a subset of the real
module's names, with the real types where they matter to a caller: numpy-quaternion rotations,
``CameraSensorSpec.resolution`` as ``[H, W]``, RGBA uint8 ``[H, W, 4]`` colour observations that
are flipped views of a reused buffer, ``"collided"`` in ``Simulator.step``'s observations and no
``previous_step_collided`` on ``Simulator``; pybind-like config classes refuse unknown attributes.
Layout and signatures follow habitat-sim v0.2.4's ``src_python/habitat_sim``.

Its world is NOT habitat's: every scene is the same 10 m x 10 m room (x, z in [-5, 5], floor at
y = 0) with one wall along z = 0 from x = -5 to x = 1, and its camera paints the agent's pose
into the pixels (see ``simulator.py``), so a test can tell which frame it received.
"""

__version__ = "0.2.4"

from habitat_sim import agent, errors, nav, sensor, simulator, utils  # noqa: E402
from habitat_sim.agent import (  # noqa: E402
    ActionSpec,
    ActuationSpec,
    Agent,
    AgentConfiguration,
    AgentState,
    SixDOFPose,
)
from habitat_sim.nav import (  # noqa: E402
    GreedyFollowerCodes,
    GreedyGeodesicFollower,
    NavMeshSettings,
    PathFinder,
    ShortestPath,
)
from habitat_sim.sensor import CameraSensorSpec, SensorSubType, SensorType  # noqa: E402
from habitat_sim.simulator import Configuration, Simulator, SimulatorConfiguration  # noqa: E402

__all__ = [
    "agent", "errors", "nav", "sensor", "simulator", "utils", "ActionSpec", "ActuationSpec",
    "Agent", "AgentConfiguration", "AgentState", "SixDOFPose", "GreedyFollowerCodes",
    "GreedyGeodesicFollower", "NavMeshSettings", "PathFinder", "ShortestPath", "CameraSensorSpec",
    "SensorSubType", "SensorType", "Configuration", "Simulator", "SimulatorConfiguration",
]
