"""Training JanusVLN: expert data collection, supervised fine-tuning and DAgger.

Imports ``janus_core`` and ``sim_bridge``, never ROS. Entry points (also ``janus-vln collect``,
``janus-vln train`` and ``janus-vln dagger``): :func:`training.collect.main`,
:func:`training.sft.main`, :func:`training.dagger.main`.
"""
