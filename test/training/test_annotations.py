import json

import numpy as np
import pytest

from janus_core.actions import Action
from training.annotations import (
    AnnotationError,
    TrajectoryWriter,
    actions_from_executed,
    frame_labels,
    load_annotations,
    merge_shards,
    read_shards,
    trajectory_name,
    write_annotations,
)


def _write_set(root, records, frames=None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.json").write_text(json.dumps(records))
    for rec in records:
        n = len(rec["actions"]) if frames is None else frames
        d = root / rec["video"] / "rgb"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (d / f"{i:03d}.jpg").write_bytes(b"x")


def test_labels_follow_release_rule():
    assert frame_labels([-1, 1, 2, 1]) == [Action.MOVE_FORWARD, Action.TURN_LEFT,
                                           Action.MOVE_FORWARD, Action.STOP]
    assert frame_labels([-1]) == [Action.STOP]
    executed = [1, 2, 1, 0]
    assert frame_labels(actions_from_executed(executed)) == [Action(a) for a in executed]


def test_trajectory_name_release_style():
    assert trajectory_name("mp3d/17DRP5sb8fy/17DRP5sb8fy.glb", "r2r", 577) == \
        "17DRP5sb8fy_r2r_000577"
    assert trajectory_name("scene a", "rxr", "ep/1") == "scene-a_rxr_ep-1"


def test_load_valid_set_and_extra_fields(tmp_path):
    recs = [{"id": 0, "video": "images/a", "instructions": ["go"], "actions": [-1, 1, 3],
             "scene_id": "s"}]
    _write_set(tmp_path, recs)
    s = load_annotations(tmp_path)
    assert len(s) == 1 and s.num_frames == 3
    t = s.trajectories[0]
    assert t.instruction == "go" and t.extra == {"scene_id": "s"}
    assert s.frame_path(t, 2) == tmp_path / "images/a/rgb/002.jpg"
    assert t.to_json() == recs[0]


def test_missing_frame_names_the_file(tmp_path):
    recs = [{"id": 7, "video": "images/traj", "instructions": ["go"], "actions": [-1, 1, 1, 2]}]
    _write_set(tmp_path, recs)
    (tmp_path / "images/traj/rgb/002.jpg").unlink()
    with pytest.raises(AnnotationError) as err:
        load_annotations(tmp_path)
    msg = str(err.value)
    assert "002.jpg" in msg and "images/traj" in msg and "annotations.json" in msg
    assert "id 7" in msg
    load_annotations(tmp_path, verify_frames=False)  # the check is optional


def test_missing_frame_dir(tmp_path):
    _write_set(tmp_path, [])
    (tmp_path / "annotations.json").write_text(json.dumps(
        [{"id": 0, "video": "images/nope", "instructions": ["x"], "actions": [-1]}]))
    with pytest.raises(AnnotationError, match="images/nope/rgb does not exist"):
        load_annotations(tmp_path)


@pytest.mark.parametrize("actions, field", [
    ([-1, 1, 7], "actions[2]"),
    ([-1, "MOVE_FORWARD"], "actions[1]"),
    ([0, 1], "actions[0]"),
    ([-1, True], "actions[1]"),
])
def test_unknown_action_is_named(tmp_path, actions, field):
    _write_set(tmp_path, [{"id": 3, "video": "images/b", "instructions": ["go"],
                           "actions": actions}], frames=len(actions))
    with pytest.raises(AnnotationError) as err:
        load_annotations(tmp_path)
    assert field in str(err.value) and "id 3" in str(err.value)


@pytest.mark.parametrize("record, field", [
    ({"video": "images/a", "instructions": ["x"], "actions": [-1]}, "'id'"),
    ({"id": 0, "video": "/abs/a", "instructions": ["x"], "actions": [-1]}, "'video'"),
    ({"id": 0, "video": "images/a", "instructions": "x", "actions": [-1]}, "'instructions'"),
    ({"id": 0, "video": "images/a", "instructions": [""], "actions": [-1]}, "'instructions'"),
    ({"id": 0, "video": "images/a", "instructions": ["x"], "actions": []}, "'actions'"),
])
def test_bad_records(tmp_path, record, field):
    (tmp_path / "annotations.json").write_text(json.dumps([record]))
    with pytest.raises(AnnotationError, match=field):
        load_annotations(tmp_path, verify_frames=False)


def test_bad_file(tmp_path):
    with pytest.raises(AnnotationError, match="does not exist"):
        load_annotations(tmp_path)
    (tmp_path / "annotations.json").write_text("[{")
    with pytest.raises(AnnotationError, match="invalid JSON"):
        load_annotations(tmp_path)
    (tmp_path / "annotations.json").write_text("{}")
    with pytest.raises(AnnotationError, match="expected a JSON list"):
        load_annotations(tmp_path)


def test_duplicate_video(tmp_path):
    rec = {"id": 0, "video": "images/a", "instructions": ["x"], "actions": [-1]}
    (tmp_path / "annotations.json").write_text(json.dumps([rec, dict(rec, id=1)]))
    with pytest.raises(AnnotationError, match="duplicates record #0"):
        load_annotations(tmp_path, verify_frames=False)


def test_writer_resume_and_merge(tmp_path):
    rgb = np.zeros((8, 10, 3), np.uint8)
    w0 = TrajectoryWriter(tmp_path, rank=0)
    rec = w0.begin("ep_b")
    for _ in range(3):
        rec.add_frame(rgb)
    rec.finish(["walk"], [-1, 1, 2], scene_id="s")
    # an interrupted trajectory: frames but no record
    part = w0.begin("ep_x")
    part.add_frame(rgb)
    w1 = TrajectoryWriter(tmp_path, rank=1)
    rec = w1.begin("ep_a")
    rec.add_frame(rgb)
    rec.finish(["turn"], [-1])
    assert w0.finished() == {"ep_a", "ep_b"}
    # a torn last line (killed mid-write) is skipped
    with open(tmp_path / "annotations.rank1.jsonl", "a") as fh:
        fh.write('{"id": "ep_c", "vid')
    assert {t.name for t in read_shards(tmp_path)} == {"ep_a", "ep_b"}
    merged = merge_shards(tmp_path)
    assert [t.video for t in merged.trajectories] == ["images/ep_a", "images/ep_b"]
    assert [t.id for t in merged.trajectories] == [0, 1]
    s = load_annotations(tmp_path)
    assert s.trajectories[1].extra == {"scene_id": "s"} and s.num_frames == 4
    # restarting ep_x clears its partial frames
    again = w0.begin("ep_x")
    assert list(again.dir.iterdir()) == []
    again.discard()
    assert not (tmp_path / "images/ep_x").exists()


def test_finish_checks_frame_count(tmp_path):
    rec = TrajectoryWriter(tmp_path).begin("e")
    rec.add_frame(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(AnnotationError, match="1 frames written but len"):
        rec.finish(["x"], [-1, 1])


def test_write_annotations_roundtrip(tmp_path):
    recs = [{"id": 0, "video": "images/a", "instructions": ["x", "y"], "actions": [-1, 2]}]
    _write_set(tmp_path, recs)
    s = load_annotations(tmp_path)
    write_annotations(tmp_path / "annotations.json", s.trajectories)
    assert json.loads((tmp_path / "annotations.json").read_text()) == recs
