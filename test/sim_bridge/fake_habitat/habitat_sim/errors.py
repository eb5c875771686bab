"""MOCK habitat_sim.errors (habitat-sim v0.2.4 src_python/habitat_sim/errors.py)."""


class InvalidAttachedObject(RuntimeError):
    pass


class GreedyFollowerError(RuntimeError):
    pass
