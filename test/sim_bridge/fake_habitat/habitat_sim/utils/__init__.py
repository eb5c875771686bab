"""MOCK habitat_sim.utils (only ``common``)."""
