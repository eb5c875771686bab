"""MOCK habitat_sim.utils.common: the quaternion helpers, on numpy-quaternion as in habitat-sim."""

import numpy as np
import quaternion as qt


def quat_from_coeffs(coeffs):
    """[x, y, z, w] -> numpy-quaternion."""
    quat = qt.quaternion(1, 0, 0, 0)
    quat.real = coeffs[3]
    quat.imag = coeffs[0:3]
    return quat


def quat_to_coeffs(quat):
    """numpy-quaternion -> [x, y, z, w] array."""
    coeffs = np.empty(4)
    coeffs[0:3] = quat.imag
    coeffs[3] = quat.real
    return coeffs


def quat_from_angle_axis(theta, axis):
    """Rotation by ``theta`` radians about ``axis``."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    return qt.from_rotation_vector(theta * axis)


def quat_rotate_vector(q, v):
    """``v`` rotated by ``q``."""
    vq = qt.quaternion(0, 0, 0, 0)
    vq.imag = v
    return (q * vq * q.inverse()).imag
