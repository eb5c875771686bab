"""MOCK habitat_sim.sensor: the sensor enums and CameraSensorSpec (pybind in habitat-sim)."""

import enum

import numpy as np


class SensorType(enum.Enum):
    NONE = 0
    COLOR = 1
    DEPTH = 2
    NORMAL = 3
    SEMANTIC = 4
    PATH = 5
    GOAL = 6
    FORCE = 7
    TENSOR = 8
    TEXT = 9
    AUDIO = 10


class SensorSubType(enum.Enum):
    NONE = 0
    PINHOLE = 1
    ORTHOGRAPHIC = 2
    FISHEYE = 3
    EQUIRECTANGULAR = 4


class CameraSensorSpec:
    """Like habitat-sim's (declared with py::dynamic_attr()): unknown attributes are allowed."""

    def __init__(self):
        self.uuid = ""
        self.sensor_type = SensorType.NONE
        self.sensor_subtype = SensorSubType.NONE
        self._position = np.array([0.0, 1.5, 0.0], np.float32)
        self.orientation = np.zeros(3, np.float32)
        self._resolution = np.array([128, 128], np.int32)
        self.channels = 4
        self._hfov = 90.0
        self.near = 0.01
        self.far = 1000.0
        self.noise_model = "None"
        self.gpu2gpu_transfer = False

    @property
    def resolution(self):
        """[H, W]."""
        return self._resolution.copy()

    @resolution.setter
    def resolution(self, value):
        arr = np.asarray(value)
        if arr.shape != (2,) or arr.dtype.kind not in "iu":
            raise TypeError(f"resolution: expected 2 integers [H, W], got {value!r}")
        self._resolution = arr.astype(np.int32)

    @property
    def position(self):
        """The sensor's offset from the agent (a Magnum Vector3 in habitat-sim)."""
        return self._position.copy()

    @position.setter
    def position(self, value):
        arr = np.asarray(value, dtype=np.float32)
        if arr.shape != (3,):
            raise TypeError(f"position: expected 3 numbers, got {value!r}")
        self._position = arr

    @property
    def hfov(self):
        """Degrees (magnum.Deg in habitat-sim; set from a number)."""
        return self._hfov

    @hfov.setter
    def hfov(self, value):
        self._hfov = float(value)
