import gzip
import json
import math

import pytest

from sim_bridge.episodes import (
    R2R,
    RXR,
    Episode,
    EpisodeFormatError,
    Goal,
    build_vocab,
    encode_instruction,
    episode_sort_key,
    find_gt_path,
    gt_path_for,
    load_split,
    quaternion_to_yaw,
    read_split_file,
    save_split,
    yaw_to_quaternion,
)


def r2r_episode(eid=1, scene="mp3d/abc/abc.glb"):
    return {
        "episode_id": eid,
        "trajectory_id": 7,
        "scene_id": scene,
        "start_position": [1.0, 0.1, -2.0],
        "start_rotation": [0.0, 0.7071, 0.0, 0.7071],
        "info": {"geodesic_distance": 9.87},
        "goals": [{"position": [4.0, 0.1, -8.0], "radius": 3.0}],
        "instruction": {"instruction_text": "Walk past the sofa and stop.",
                        "instruction_tokens": [5, 6, 7, 0, 0]},
        "reference_path": [[1.0, 0.1, -2.0], [2.0, 0.1, -5.0], [4.0, 0.1, -8.0]],
    }


def rxr_episode(eid, lang):
    ep = r2r_episode(eid)
    ep["instruction"] = {"instruction_id": f"i{eid}", "instruction_text": f"go {lang}",
                         "language": lang, "annotator_id": "a1", "edit_distance": 0.1,
                         "timed_instruction": [{"word": "go", "start_time": 0.5}]}
    return ep


def write(path, data):
    raw = json.dumps(data).encode()
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)


def test_r2r_read_fields_and_gt(tmp_path):
    split = tmp_path / "val_unseen.json.gz"
    write(split, {"episodes": [r2r_episode(1), r2r_episode(2)],
                  "instruction_vocab": {"word_list": ["<PAD>", "<UNK>", "walk"]}})
    gt = gt_path_for(split)
    assert gt.name == "val_unseen_gt.json.gz"
    write(gt, {"1": {"locations": [[1, 0.1, -2], [1, 0.1, -2.25]], "actions": [1, 0],
                     "forward_steps": 1}})
    assert find_gt_path(split) == gt
    eps = load_split(split, gt_path=gt)
    assert [e.episode_id for e in eps] == ["1", "2"]
    e = eps[0]
    assert e.scene_id == "mp3d/abc/abc.glb" and e.trajectory_id == 7
    assert e.goal_position == [4.0, 0.1, -8.0] and e.goals[0].radius == 3.0
    assert e.instruction == "Walk past the sofa and stop."
    assert e.instruction_tokens == [5, 6, 7, 0, 0]
    assert e.geodesic_distance == pytest.approx(9.87)
    assert e.gt_locations == [[1, 0.1, -2], [1, 0.1, -2.25]] and e.gt_actions == [1, 0]
    assert e.gt_forward_steps == 1
    assert eps[1].gt_locations is None  # missing in gt: warned, not fatal
    assert read_split_file(split).format == R2R


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_r2r_round_trip(tmp_path, suffix):
    src = tmp_path / f"a{suffix}"
    vocab = {"word_list": ["<PAD>", "<UNK>", "walk"], "num_vocab": 3}
    data = {"episodes": [r2r_episode(3), r2r_episode(10)], "instruction_vocab": vocab}
    write(src, data)
    eps = load_split(src)
    out = tmp_path / f"b{suffix}"
    save_split(out, eps, instruction_vocab=vocab)
    again = json.loads(gzip.decompress(out.read_bytes()) if suffix.endswith("gz")
                       else out.read_bytes())
    assert again == data


def test_rxr_round_trip_and_language_filter(tmp_path):
    split = tmp_path / "val_unseen_guide.json.gz"
    data = {"episodes": [rxr_episode(1, "en-US"), rxr_episode(2, "hi-IN"),
                         rxr_episode(3, "en-IN"), rxr_episode(4, "te-IN")]}
    write(split, data)
    gt = gt_path_for(split)
    assert gt.name == "val_unseen_guide_gt.json.gz"
    write(gt, {str(i): {"locations": [[0, 0, 0]], "actions": [0]} for i in range(1, 5)})
    sf = read_split_file(split)
    assert sf.format == RXR and sf.instruction_vocab is None
    eps = load_split(split, gt_path=gt, languages=["en"])
    assert [(e.episode_id, e.language) for e in eps] == [("1", "en-US"), ("3", "en-IN")]
    assert eps[0].instruction_id == "i1"
    assert eps[0].instruction_extra["annotator_id"] == "a1"
    assert load_split(split, languages=["hi-IN"])[0].episode_id == "2"
    everything = load_split(split)
    out = tmp_path / "out_guide.json.gz"
    out_gt = tmp_path / "out_guide_gt.json.gz"
    save_split(out, everything, gt_path=out_gt)
    assert json.loads(gzip.decompress(out.read_bytes())) == data
    assert json.loads(gzip.decompress(out_gt.read_bytes())) == {}  # no gt loaded -> none saved
    save_split(out, load_split(split, gt_path=gt), gt_path=out_gt)
    assert json.loads(gzip.decompress(out_gt.read_bytes()))["4"] == {
        "locations": [[0.0, 0.0, 0.0]], "actions": [0], "forward_steps": 0}


def test_save_builds_vocab_and_tokens(tmp_path):
    ep = Episode(episode_id="5", scene_id="embedded:apt_00001", start_position=[0, 0, 0],
                 start_rotation=yaw_to_quaternion(0.3), goals=[Goal([1, 0, 1])],
                 instruction="Turn left, then stop by the lamp.",
                 gt_locations=[[0, 0, 0], [0, 0, -0.25]], gt_actions=[1, 0])
    path = tmp_path / "train.json.gz"
    save_split(path, [ep], gt_path=gt_path_for(path))
    raw = json.loads(gzip.decompress(path.read_bytes()))
    vocab = raw["instruction_vocab"]
    assert vocab["word_list"][:2] == ["<PAD>", "<UNK>"]
    tokens = raw["episodes"][0]["instruction"]["instruction_tokens"]
    assert len(tokens) == 200 and tokens[0] == vocab["stoi"]["turn"]
    assert [vocab["itos"][t] for t in tokens[:7]] == ["turn", "left", "then", "stop", "by",
                                                      "the", "lamp"]
    assert raw["episodes"][0]["episode_id"] == 5  # numeric ids written as integers
    back = load_split(path, gt_path=gt_path_for(path))[0]
    assert back.gt_forward_steps == 1 and back.gt_actions == [1, 0]
    assert encode_instruction("zebra", build_vocab(["a b"]), length=None) == [1]


def test_yaw_quaternion_round_trip():
    for yaw in (-3.0, -1.2, 0.0, 0.5, 2.9):
        assert quaternion_to_yaw(yaw_to_quaternion(yaw)) == pytest.approx(yaw)
    assert yaw_to_quaternion(math.pi / 2) == pytest.approx([0, math.sqrt(0.5), 0, math.sqrt(0.5)])


def test_sort_key_numeric_ids():
    eps = [Episode(str(i), s, [0, 0, 0], [0, 0, 0, 1], [Goal([0, 0, 0])], "x")
           for s, i in [("b", 2), ("a", 10), ("a", 9), ("a", "x1")]]
    assert [(e.scene_id, e.episode_id) for e in sorted(eps, key=episode_sort_key)] == [
        ("a", "9"), ("a", "10"), ("a", "x1"), ("b", "2")]


# ---- bad files ----------------------------------------------------------------------------------

def test_truncated_gzip_names_file(tmp_path):
    path = tmp_path / "val.json.gz"
    full = gzip.compress(json.dumps({"episodes": [r2r_episode(1)] * 50}).encode())
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(EpisodeFormatError, match=r"val\.json\.gz.*(truncated|corrupt)"):
        load_split(path)


def test_truncated_json_names_file(tmp_path):
    path = tmp_path / "val.json"
    path.write_text(json.dumps({"episodes": [r2r_episode(1)]})[:-20])
    with pytest.raises(EpisodeFormatError, match=r"val\.json: invalid or truncated JSON"):
        load_split(path)


def test_missing_file(tmp_path):
    with pytest.raises(EpisodeFormatError, match="does not exist"):
        load_split(tmp_path / "nope.json.gz")


@pytest.mark.parametrize("mutate, field", [
    (lambda e: e.pop("goals"), "'goals': missing"),
    (lambda e: e.__setitem__("start_position", [1, 2]), "'start_position': expected a list of 3"),
    (lambda e: e["goals"][0].__setitem__("position", [1, "x", 3]),
     "'goals\\[0\\].position\\[1\\]'"),
    (lambda e: e["instruction"].pop("instruction_text"), "'instruction.instruction_text': missing"),
    (lambda e: e.__setitem__("start_rotation", [0, 0, 0, float("nan")]), "finite"),
    (lambda e: e.__setitem__("reference_path", [[0, 0]]), "'reference_path\\[0\\]'"),
    (lambda e: e.__setitem__("goals", []), "non-empty list of goals"),
    (lambda e: e["instruction"].__setitem__("instruction_tokens", [1, "go"]),
     "'instruction.instruction_tokens': expected a list of integers \\(R2R\\) or of strings"),
])
def test_malformed_episode_names_file_episode_and_field(tmp_path, mutate, field):
    bad = r2r_episode(42)
    mutate(bad)
    path = tmp_path / "train.json"
    write(path, {"episodes": [r2r_episode(1), bad]})
    with pytest.raises(EpisodeFormatError) as info:
        load_split(path)
    msg = str(info.value)
    assert "train.json" in msg and "episode 42" in msg
    import re
    assert re.search(field, msg), msg


def test_missing_episode_id_and_duplicates(tmp_path):
    path = tmp_path / "x.json"
    bad = r2r_episode(1)
    bad.pop("episode_id")
    write(path, {"episodes": [bad]})
    with pytest.raises(EpisodeFormatError, match=r"episode #0: field 'episode_id': missing"):
        load_split(path)
    write(path, {"episodes": [r2r_episode(1), r2r_episode(1)]})
    with pytest.raises(EpisodeFormatError, match="duplicate"):
        load_split(path)
    write(path, {"items": []})
    with pytest.raises(EpisodeFormatError, match="'episodes': missing"):
        load_split(path)


def test_bad_gt(tmp_path):
    split = tmp_path / "v.json"
    write(split, {"episodes": [r2r_episode(1)]})
    gt = tmp_path / "v_gt.json"
    write(gt, {"1": {"locations": [[0, 0, 0]], "actions": [1, 9]}})
    with pytest.raises(EpisodeFormatError, match=r"v_gt\.json: episode 1: field 'actions\[1\]'"):
        load_split(split, gt_path=gt)
    write(gt, {"1": {"actions": [0]}})
    with pytest.raises(EpisodeFormatError, match="'locations': missing"):
        load_split(split, gt_path=gt)


def test_rxr_string_tokens_are_kept_as_vln_ce_reads_them(tmp_path):
    ep = rxr_episode(3, "en-US")
    ep["instruction"]["instruction_tokens"] = ["go", "to", "the", "sofa"]  # VLN-CE: List[str]
    path = tmp_path / "val_unseen_guide.json.gz"
    write(path, {"episodes": [ep, rxr_episode(4, "en-IN")]})
    episodes = load_split(path)
    assert episodes[0].instruction_tokens == ["go", "to", "the", "sofa"]
    save_split(tmp_path / "again.json.gz", episodes)
    again = load_split(tmp_path / "again.json.gz")
    assert again[0].instruction_tokens == episodes[0].instruction_tokens
