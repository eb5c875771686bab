"""Helpers shared by the training tests: tiny annotation sets, tiny model config."""

import dataclasses

import numpy as np

from janus_core.config import load_config
from training.annotations import TrajectoryWriter, actions_from_executed

WIDTH, HEIGHT = 112, 84  # the tiny preset at a reduced camera size (config/train_tiny.yaml)


def tiny_model_config():
    cfg = load_config("tiny")
    return cfg.replace(image=dataclasses.replace(cfg.image, input_width=WIDTH,
                                                 input_height=HEIGHT, target_width=WIDTH))


def write_set(root, trajectories, seed=0, size=(HEIGHT, WIDTH)):
    """Write {name: executed actions} as an annotation set with random frames; merge it."""
    rng = np.random.default_rng(seed)
    writer = TrajectoryWriter(root)
    for name, executed in trajectories.items():
        rec = writer.begin(name)
        for _ in executed:
            rec.add_frame(rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        rec.finish([f"walk forward then turn, episode {name}"], actions_from_executed(executed))
    return writer.merge()


TRAJECTORIES = {
    "ep_a": [1, 1, 2, 1, 1, 1, 3, 1, 1, 1, 1, 0],
    "ep_b": [2, 2, 1, 1, 0],
}
