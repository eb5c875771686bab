"""``janus-vln demo``: one episode, metrics printed, an mp4 and a top-down map written."""

import dataclasses

import imageio.v2 as imageio
import pytest
from PIL import Image

from janus_vln_ros import demo


@pytest.fixture(scope="module")
def short_split(tmp_path_factory):
    """Two short val_unseen-style episodes (generated, 1.5-3 m) for fast demo runs."""
    from sim_bridge.generate import GenerateConfig, generate_dataset

    out = tmp_path_factory.mktemp("demo_split")
    cfg = GenerateConfig(splits={"val_unseen": 2}, seed=0, min_geodesic=1.5, max_geodesic=3.0,
                         mean_geodesic=2.2, std_geodesic=0.3, episodes_per_scene=2)
    return generate_dataset(out, cfg)["val_unseen"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random-weight tiny JanusVLN saved in the release layout, camera 160x120."""
    from janus_core.checkpoint import save_checkpoint
    from janus_core.config import ImageConfig, load_config
    from janus_core.model import build_model
    from janus_core.tokenizer import build_tokenizer

    cfg = load_config("tiny").replace(
        image=ImageConfig(input_width=160, input_height=120, target_width=112), max_new_tokens=3)
    path = tmp_path_factory.mktemp("ckpt") / "janusvln-tiny"
    save_checkpoint(build_model(cfg, device="cpu", dtype="float32"), build_tokenizer(cfg), cfg,
                    path)
    return path


def _frames(path):
    with imageio.get_reader(str(path)) as reader:
        return reader.count_frames()


def test_missing_weights_fall_back_to_the_expert(tmp_path, short_split, capsys, caplog,
                                                 monkeypatch):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    monkeypatch.setattr(demo, "DEFAULT_MODEL", empty)  # the shipped folder, weights not in git
    out = tmp_path / "out"
    code = demo.main(["--split", str(short_split), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert "has no trained weights (model.safetensors): no checkpoint beats the forward" in (
        caplog.text) and "EXPERT" in caplog.text
    assert "Outcome: SUCCESS" in captured.out and "| Episodes |" in captured.out
    record = demo.episode_record(out / "run")
    video, png = out / "episode_1.mp4", out / "episode_1_map.png"
    assert _frames(video) == len(record["positions"])  # one frame per pose, the start included
    assert Image.open(png).size[1] == 720
    # the --ros run's files (rendered from its poses) do not replace the in-process run's
    episode = demo.find_episode(short_split, "1")
    ros_video, ros_png = demo.write_outputs(episode, record, out, 64, 48, 79.0, 8, None,
                                            suffix="_ros")
    assert (ros_video.name, ros_png.name) == ("episode_1_ros.mp4", "episode_1_ros_map.png")
    assert _frames(ros_video) == _frames(video) and video.exists()


def test_demo_video_carries_the_debug_overlay(tmp_path, short_split):
    """Instruction band on every frame; the probability bars when the policy gave some."""
    import numpy as np

    from janus_vln_ros.overlay import CHOSEN

    out = tmp_path / "out"
    assert demo.main(["--model", "expert", "--split", str(short_split), "--out", str(out)]) == 0
    record = demo.episode_record(out / "run")
    episode = demo.find_episode(short_split, None)
    probs = [{"STOP": 0.1, "MOVE_FORWARD": 0.6, "TURN_LEFT": 0.2, "TURN_RIGHT": 0.1}
             for _ in record["actions"]]
    plain, _ = demo.write_outputs(episode, record, tmp_path / "plain", 640, 480, 79.0, 8)
    video, _ = demo.write_outputs(episode, {**record, "actions": [1] * len(record["actions"])},
                                  tmp_path / "probs", 640, 480, 79.0, 8, probs)
    with imageio.get_reader(str(plain)) as reader:
        first = np.asarray(reader.get_data(0))[:, :640].astype(int)
    with imageio.get_reader(str(video)) as reader:
        with_bars = np.asarray(reader.get_data(0))[:, :640].astype(int)
    assert first[:20].mean() < 0.7 * first[200:280].mean()  # the shaded instruction band
    near = np.abs(with_bars[-80:, :340] - np.array(CHOSEN)).sum(axis=2) < 60
    assert near.sum() > 300  # the chosen action's bar (MOVE_FORWARD, 60 %)
    assert (np.abs(first[-80:, :340] - np.array(CHOSEN)).sum(axis=2) < 60).sum() < 50


def test_demo_runs_a_checkpoint_on_the_cpu(tmp_path, short_split, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    code = demo.main(["--model", str(tiny_checkpoint), "--split", str(short_split),
                      "--episode", "2", "--out", str(out), "--max-steps", "6", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Policy: janusvln-tiny" in captured.out and "Episode 2" in captured.out
    record = demo.episode_record(out / "run")
    assert 1 <= record["metrics"]["steps"] <= 6
    assert (out / "episode_2.mp4").stat().st_size > 0 and (out / "episode_2_map.png").exists()
    # a second run replaces the first
    assert demo.main(["--model", str(tiny_checkpoint), "--split", str(short_split),
                      "--episode", "2", "--out", str(out), "--max-steps", "2"]) == 0
    assert demo.episode_record(out / "run")["metrics"]["steps"] <= 2


def test_bad_input_is_one_clear_error(tmp_path, short_split, capsys):
    assert demo.main(["--model", "expert", "--split", str(short_split), "--episode", "99",
                      "--out", str(tmp_path)]) == 2
    assert "episode 99 is not in" in capsys.readouterr().err
    assert demo.main(["--model", "expert", "--split", str(tmp_path / "none.json.gz"),
                      "--out", str(tmp_path)]) == 2
    capsys.readouterr()
    # an explicit --model folder without weights is an error, not a silent expert run
    empty = tmp_path / "empty-model"
    empty.mkdir()
    assert demo.main(["--model", str(empty), "--split", str(short_split),
                      "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"janus-vln demo: error: --model {empty}: not a checkpoint folder")
    assert not (tmp_path / "o").exists()
    with pytest.raises(demo.DemoError, match="no such folder"):
        demo.choose_policy(str(tmp_path / "missing"))


def test_shipped_demo_episodes_are_the_first_val_unseen_episodes(tmp_path):
    """The committed split is what ``sim_bridge.generate --splits val_unseen:N --seed 0`` makes."""
    from sim_bridge.episodes import find_gt_path, load_split
    from sim_bridge.generate import GenerateConfig, generate_dataset

    shipped = load_split(demo.DEFAULT_SPLIT, gt_path=find_gt_path(demo.DEFAULT_SPLIT))
    fresh_path = generate_dataset(tmp_path, GenerateConfig(splits={"val_unseen": len(shipped)},
                                                           seed=0))["val_unseen"]
    fresh = load_split(fresh_path, gt_path=find_gt_path(fresh_path))
    fields = ("episode_id", "scene_id", "start_position", "start_rotation", "instruction",
              "reference_path", "gt_actions")
    for a, b in zip(shipped, fresh):
        assert {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}
        assert dataclasses.asdict(a.goals[0]) == dataclasses.asdict(b.goals[0])
    assert {ep.scene_id for ep in shipped} == {"embedded:apt_10000", "embedded:apt_10001"}


@pytest.mark.slow
def test_demo_through_the_ros_nodes(tmp_path, short_split, capsys):
    pytest.importorskip("rclpy")
    out = tmp_path / "out"
    code = demo.main(["--model", "expert", "--split", str(short_split), "--out", str(out),
                      "--ros"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "through the ROS nodes" in captured.out
    record = demo.episode_record(out / "ros")
    assert record["metrics"]["sr"] == 1.0
    assert _frames(out / "episode_1_ros.mp4") == len(record["positions"])
    assert (out / "episode_1_ros_map.png").exists() and not (out / "episode_1.mp4").exists()
