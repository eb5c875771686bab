"""JanusVLN policy core: config, model, memory, processor and policy (torch + transformers only)."""
