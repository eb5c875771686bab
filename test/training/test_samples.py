import pytest
from train_helpers import TRAJECTORIES, tiny_model_config, write_set

from janus_core.actions import Action
from janus_core.processor import IGNORE_INDEX, JanusProcessor
from janus_core.tokenizer import build_tokenizer
from training.annotations import AnnotationError, load_annotations
from training.dataset import DataSource, NavSFTDataset, SFTCollator, load_sources
from training.samples import export_release_json, iter_samples, release_sample


def test_history_sampling_and_labels(tiny_set):
    samples = list(iter_samples(tiny_set))
    assert len(samples) == tiny_set.num_frames == 17
    a = [s for s in samples if s.trajectory == "images/ep_a"]
    names = [[p.name for p in s.frame_paths] for s in a]
    assert names[0] == ["000.jpg"]
    assert names[8] == [f"{i:03d}.jpg" for i in range(9)]  # i <= 8: every frame
    # i = 11 > 8: linspace(0, 11, 9) as int = 0 1 2 4 5 6 8 9 11
    assert names[11] == [f"{i:03d}.jpg" for i in (0, 1, 2, 4, 5, 6, 8, 9, 11)]
    assert [s.action for s in a] == [Action(x) for x in TRAJECTORIES["ep_a"]]
    assert a[-1].action == Action.STOP


def test_release_json(tiny_set, tmp_path):
    s = list(iter_samples(tiny_set))[6]
    row = release_sample(s, relative_to=tiny_set.root)
    human, gpt = row["conversations"]
    assert human["from"] == "human" and gpt == {"from": "gpt", "value": "TURN_RIGHT"}
    assert human["value"].count("<image>") == len(row["images"]) == 7
    assert "This is your current observation:<image>" in human["value"]
    assert row["images"][0] == "images/ep_a/rgb/000.jpg"
    assert export_release_json(tiny_set, tmp_path / "train.json") == 17


def test_dataset_item_masks_all_but_the_answer(tiny_set):
    cfg = tiny_model_config()
    tok = build_tokenizer(cfg)
    ds = NavSFTDataset([tiny_set], JanusProcessor(cfg, tok))
    assert len(ds) == 17
    item = ds[11]  # ep_a step 11: 9 frames, label STOP
    supervised = item["input_ids"][item["labels"] != IGNORE_INDEX]
    assert tok.decode(supervised) == "STOP<|im_end|>\n"
    n_img = 9
    assert item["vggt_frames"].shape == (n_img, 3, 84, 112)
    assert item["image_grid_thw"].tolist() == [[1, 6, 8]] * n_img
    assert item["pixel_values"].shape[0] == n_img * 48
    pads = int((item["input_ids"] == cfg.qwen.image_token_id).sum())
    assert pads == n_img * 12
    batch = SFTCollator(cfg.qwen.pad_token_id)([ds[0], ds[11]])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0].sum() == len(ds[0]["input_ids"])
    assert (batch["labels"][0, len(ds[0]["input_ids"]):] == IGNORE_INDEX).all()
    assert len(batch["vggt_frames"]) == 2


def test_missing_frame_at_load_time_names_it(tmp_path):
    aset = write_set(tmp_path / "s", {"ep": [1, 1, 0]})
    (tmp_path / "s/images/ep/rgb/001.jpg").unlink()
    cfg = tiny_model_config()
    ds = NavSFTDataset([load_annotations(tmp_path / "s", verify_frames=False)],
                       JanusProcessor(cfg, build_tokenizer(cfg)))
    with pytest.raises(AnnotationError, match=r"missing frame .*images/ep/rgb/001.jpg"):
        ds[1]
    with pytest.raises(AnnotationError, match="001.jpg"):
        load_sources([aset.root])


def test_wrong_frame_size_names_the_frame(tmp_path):
    write_set(tmp_path / "s", {"ep": [1, 0]}, size=(48, 64))
    cfg = tiny_model_config()
    ds = NavSFTDataset(load_sources([tmp_path / "s"]), JanusProcessor(cfg, build_tokenizer(cfg)))
    with pytest.raises(AnnotationError, match=r"000.jpg.*64x48"):
        ds[0]


def test_data_source_percent(tmp_path):
    write_set(tmp_path / "s", {f"e{i}": [1, 0] for i in range(10)})
    assert DataSource.parse("a/b%30") == DataSource(tmp_path.__class__("a/b"), 30.0)
    (s,) = load_sources([f"{tmp_path / 's'}%30"])
    assert len(s) == 3
    (again,) = load_sources([f"{tmp_path / 's'}%30"])
    assert [t.video for t in s.trajectories] == [t.video for t in again.trajectories]
    with pytest.raises(ValueError, match="percent"):
        DataSource.parse("x%0")
