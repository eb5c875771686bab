"""StageGraphs: eager where graphs cannot run, and a failed capture falls back to eager once."""

import contextlib

import torch

from janus_core.cuda_graphs import StageGraphs


def test_off_cuda_every_call_is_eager():
    graphs = StageGraphs(torch.device("cpu"), enabled=True)
    assert not graphs.enabled
    calls = []
    for _ in range(3):
        assert graphs.run(("llm", 128, 1), lambda: calls.append(1)) is False
    assert len(calls) == 3 and graphs.num_graphs == 0 and graphs.replays == 0
    assert graphs.status() == {"llm": "eager"}


def test_a_failed_capture_is_recorded_and_the_stage_stays_eager():
    """Forced on where capture cannot work (no CUDA): the stage runs eagerly, never retried."""
    retries = []
    graphs = StageGraphs(torch.device("cpu"), enabled=True,
                         retry_context=lambda: retries.append(1) or contextlib.nullcontext())
    graphs.enabled = True
    calls = []
    for _ in range(3):
        assert graphs.run(("vggt", True), lambda: calls.append(1)) is False
    assert len(calls) == 3 and graphs.num_graphs == 0  # no CUDA stream: fails before warm-up
    status = graphs.status()["vggt"]
    # two failures recorded: AssertionError from a CPU build of torch, RuntimeError (no driver)
    # from a CUDA build on a machine without a GPU
    assert status.startswith("eager (capture failed: ") and status.count("Error: ") == 2
    assert retries == []  # the retry failed before entering its context
    graphs.drop("vggt")
    graphs.clear()
    assert graphs.num_graphs == 0
