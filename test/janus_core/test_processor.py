"""Golden tests for janus_core.processor and janus_core.tokenizer: the release's exact geometry,
prompts, history sampling and reply parsing."""

import numpy as np
import pytest
import torch
from janus_test_utils import frames, small_cfg, tokenizer_for
from PIL import Image
from transformers import Qwen2VLImageProcessor

from janus_core.actions import Action
from janus_core.config import ConfigError, load_config
from janus_core.processor import (
    EVAL_MAX_PIXELS,
    EVAL_MIN_PIXELS,
    IGNORE_INDEX,
    QWEN2_5_VL_CHAT_TEMPLATE,
    JanusProcessor,
    compute_geometry,
    crop_box,
    qwen_crop,
    qwen_pixel_values,
    regroup_vggt_features,
    resize_frame,
    sample_history,
    to_tensor,
    train_user_text,
    validate_rgb,
)
from janus_core.tokenizer import (
    QWEN_SPECIAL_TOKENS,
    build_tokenizer,
    load_chat_template,
    load_tokenizer,
)

FULL = compute_geometry(640, 480)


# ---- geometry --------------------------------------------------------------------------------
def test_geometry_640x480_is_the_release_geometry():
    g = FULL
    assert (g.resize_height, g.vggt_height, g.vggt_width) == (490, 490, 644)
    assert (g.qwen_height, g.qwen_width) == (476, 644)
    assert g.vggt_grid == (35, 46) and g.qwen_grid == (34, 46) and g.merged_grid == (17, 23)
    assert g.tokens_per_image == 391 and g.grid_thw == (1, 34, 46)
    assert g.vggt_tokens_per_frame(num_register_tokens=4) == 1615


def test_height_rounding_follows_the_release_float_order():
    # The release computes round(h * (644 / w) / 14): 34.50000000000001 -> 35 (490 px).
    assert 480 * (644 / 640) / 14 == 34.50000000000001
    # Integer-first arithmetic gives exactly 34.5, which Python rounds to 34 (476 px): wrong.
    assert round(480 * 644 / 640 / 14) * 14 == 476
    assert compute_geometry(640, 480).vggt_height == 490


def test_taller_frames_are_centre_cropped_like_the_release():
    g = compute_geometry(480, 640)  # portrait: 644 x 854 after resize -> crop to 644
    assert g.resize_height == 854 and g.vggt_height == 644 and g.qwen_height == 644
    rgb = np.zeros((640, 480, 3), np.uint8)
    rgb[:, :, 0] = np.arange(640)[:, None] // 3  # rows encode their height
    out = resize_frame(rgb, g)
    assert out.shape == (644, 644, 3)
    full = np.asarray(Image.fromarray(rgb).resize((644, 854), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(out, full[105 : 105 + 644])


def test_resize_is_pil_bicubic_and_to_tensor_gives_k_over_255():
    rgb = frames(load_config("tiny"), 1)[0]
    out = resize_frame(rgb, FULL)
    assert out.shape == (490, 644, 3) and out.dtype == np.uint8 and out.flags.writeable
    ref = np.asarray(Image.fromarray(rgb).resize((644, 490), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(out, ref)
    t = to_tensor(out)
    assert t.shape == (3, 490, 644) and t.dtype == torch.float32
    assert torch.equal(t, torch.from_numpy(ref.copy()).permute(2, 0, 1).float() / 255)
    assert qwen_crop(t, FULL).shape == (3, 476, 644)
    assert torch.equal(qwen_crop(t, FULL), t[:, :476, :644])  # bottom rows cut, same tensor


def test_small_test_geometry_exercises_both_crops():
    g = JanusProcessor(small_cfg(), tokenizer_for(small_cfg())).geometry
    assert g.vggt_grid == (7, 9) and g.qwen_grid == (6, 8) and g.tokens_per_image == 12


def test_geometry_that_smart_resize_would_change_is_rejected():
    with pytest.raises(ConfigError, match="smart_resize"):
        JanusProcessor(
            small_cfg(image=load_config("tiny").image.__class__(
                input_width=2048, input_height=1536, target_width=2044)),
            tokenizer_for(small_cfg()),
        )


# ---- Qwen pixel values -----------------------------------------------------------------------
def test_qwen_pixel_values_equal_transformers_image_processor_bit_for_bit():
    cams = frames(load_config("tiny"), 2)
    imgs = [qwen_crop(to_tensor(resize_frame(f, FULL)), FULL) for f in cams]
    ours, grid = qwen_pixel_values(imgs)
    hf = Qwen2VLImageProcessor(min_pixels=EVAL_MIN_PIXELS, max_pixels=EVAL_MAX_PIXELS)
    ref = hf(images=imgs, do_rescale=False, do_resize=False, return_tensors="pt")
    # the release leaves do_resize on; for 476x644 that is a no-op too, bit for bit
    ref_resize = hf(images=imgs, do_rescale=False, return_tensors="pt")
    assert ours.shape == (2 * 34 * 46, 3 * 2 * 14 * 14)
    assert torch.equal(grid, torch.tensor([[1, 34, 46], [1, 34, 46]]))
    assert torch.equal(ours, ref["pixel_values"]) and torch.equal(grid, ref["image_grid_thw"])
    assert torch.equal(ours, ref_resize["pixel_values"])


def test_qwen_pixel_values_rejects_odd_sizes():
    with pytest.raises(ValueError, match="multiple of 28"):
        qwen_pixel_values([torch.zeros(3, 490, 644)])
    with pytest.raises(ValueError, match="3xHxW"):
        qwen_pixel_values([torch.zeros(490, 644)])


# ---- VGGT fusion features: crop and 2x2 order ------------------------------------------------
def _position_coded_tokens(g):
    hv, wv = g.vggt_grid
    r, c = torch.meshgrid(torch.arange(hv), torch.arange(wv), indexing="ij")
    return torch.stack([r, c], -1).reshape(hv * wv, 2).float()  # token (r, c) carries (r, c)


def test_regroup_crops_bottom_right_and_orders_2x2_blocks_row_major_dy_dx():
    out = regroup_vggt_features(_position_coded_tokens(FULL), FULL)
    assert out.shape == (391, 4 * 2)
    blocks = out.reshape(17, 23, 2, 2, 2)  # [i, j, dy, dx, (r, c)]
    for i, j, dy, dx in [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0), (16, 22, 1, 1), (7, 11, 1, 0)]:
        assert blocks[i, j, dy, dx].tolist() == [2 * i + dy, 2 * j + dx]
    assert out[:, 0::2].max() == 33  # row 34 of the 35-row VGGT grid is cropped away
    assert out[:, 1::2].max() == 45


def test_regroup_order_equals_qwen_merged_token_order():
    """Patch (r, c) lands in the same merged token and 2x2 slot on both sides.

    The Qwen side comes from transformers' own image processor on a position-coded image: its
    rows are in the order the ViT consumes, 4 consecutive rows per merged token (the ViT undoes
    its window permutation at the end, see test_model.py for the tower itself).
    """
    g = FULL
    img = torch.zeros(3, g.qwen_height, g.qwen_width)
    rows = torch.arange(g.qwen_height) // 14
    cols = torch.arange(g.qwen_width) // 14
    img[0] = (rows[:, None] * 5).float().expand(-1, g.qwen_width) / 255
    img[1] = (cols[None, :] * 5).float().expand(g.qwen_height, -1) / 255
    hf = Qwen2VLImageProcessor()(
        images=[img], do_rescale=False, do_resize=False, return_tensors="pt"
    )
    pv = hf["pixel_values"].reshape(-1, 3, 2, 14, 14)  # channel, temporal, patch
    mean = torch.tensor([0.48145466, 0.4578275])
    std = torch.tensor([0.26862954, 0.26130258])
    rc = (pv[:, :2, 0, 0, 0] * std + mean) * 255 / 5  # decode (r, c) of each Qwen patch row
    qwen_order = rc.round().reshape(g.tokens_per_image, 4 * 2)
    ours = regroup_vggt_features(_position_coded_tokens(g), g)
    assert torch.equal(qwen_order, ours)


def test_regroup_rejects_a_wrong_token_count():
    with pytest.raises(ValueError, match=r"\[1610, C\]"):
        regroup_vggt_features(torch.zeros(1615, 8), FULL)  # specials not removed


# ---- history sampling ------------------------------------------------------------------------
def test_history_indices():
    assert sample_history(0, 8) == [0]
    assert sample_history(8, 8) == list(range(9))
    assert sample_history(9, 8) == [0, 1, 2, 3, 4, 5, 6, 7, 9]
    assert sample_history(100, 8) == [0, 12, 25, 37, 50, 62, 75, 87, 100]
    assert sample_history(3, 1) == [0, 3] and sample_history(1, 1) == [0, 1]
    for t in range(9, 500):  # same as the release's np.linspace(..., dtype=int)
        idx = sample_history(t, 8)
        assert idx == np.linspace(0, t, 9, dtype=int).tolist()
        assert idx[0] == 0 and idx[-1] == t and len(idx) == 9
    with pytest.raises(ValueError):
        sample_history(-1, 8)
    with pytest.raises(ValueError, match="num_history"):
        sample_history(3, -1)


def test_history_zero_is_current_frame_only():
    # the "without history" ablation; linspace(0, t, 1) would have kept frame 0 instead
    for t in (0, 1, 5, 9, 123):
        assert sample_history(t, 0) == [t]


# ---- prompts ---------------------------------------------------------------------------------
NAV = (
    "You are a visual language navigation model, and your should go to the locations to complete "
    "the given task. Compare the observation and instruction to infer your current progress, and "
    "then select the correct direction from the candidates to go to the target location and "
    "finish the task."
)


def test_eval_prompt_text_is_the_release_layout():
    cfg = small_cfg()
    proc = JanusProcessor(cfg, tokenizer_for(cfg), chat_template=QWEN2_5_VL_CHAT_TEMPLATE)
    text = proc.render_prompt("Walk to the door.", 2)
    img = "<|vision_start|><|image_pad|><|vision_end|>"
    expected = (
        f"<|im_start|>system\n{NAV}<|im_end|>\n<|im_start|>user\n{img}{img}"
        "These images are your historical observations and your current observation.\n"
        " Your task is to Walk to the door. \n You should take one of the following actions:\n"
        " MOVE_FORWARD\n TURN_LEFT\n TURN_RIGHT\n STOP.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert text == expected


def test_train_prompt_text_is_the_release_layout():
    expected = (
        f"{NAV}\n This is your historical observation:<image><image>\n"
        " This is your current observation:<image>\n Your task is to go left\n"
        " You should take one of the following actions:\n MOVE_FORWARD\n TURN_LEFT\n"
        " TURN_RIGHT\n STOP."
    )
    assert train_user_text("go left", 3) == expected
    cfg = small_cfg(prompt_style="train")
    text = JanusProcessor(cfg, tokenizer_for(cfg)).render_prompt("go left", 1)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert "observation:\n This is your current observation:<|vision_start|><|image_pad|>" in text
    assert text.endswith("STOP.<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_ids_expand_each_image_to_its_token_count_like_the_qwen_processor():
    cfg = small_cfg()
    tok = tokenizer_for(cfg)
    proc = JanusProcessor(cfg, tok)
    ids = proc.prompt_ids("walk past the table.", 3)
    assert ids.shape[0] == 1
    assert int((ids == cfg.qwen.image_token_id).sum()) == 3 * 12
    expanded = proc.render_prompt("walk past the table.", 3).replace(
        "<|image_pad|>", "<|image_pad|>" * 12
    )
    assert ids[0].tolist() == tok(expanded)["input_ids"]
    full = JanusProcessor(load_config("tiny"), tok).prompt_ids("walk past the table.", 9)
    assert int((full == cfg.qwen.image_token_id).sum()) == 9 * 391


def test_train_sample_supervises_only_the_answer():
    cfg = small_cfg()
    tok = tokenizer_for(cfg)
    ids, labels = JanusProcessor(cfg, tok).train_sample("go left", 2, "TURN_LEFT")
    assert ids.shape == labels.shape
    supervised = labels[labels != IGNORE_INDEX]
    assert tok.decode(supervised) == "TURN_LEFT<|im_end|>\n"
    n = len(supervised)
    assert torch.equal(ids[-n:], supervised) and (labels[:-n] == IGNORE_INDEX).all()
    assert tok.decode(ids[: -n]).endswith("STOP.<|im_end|>\n<|im_start|>assistant\n")
    assert int((ids == cfg.qwen.image_token_id).sum()) == 2 * 12
    with pytest.raises(ValueError, match="unknown action"):
        JanusProcessor(cfg, tok).train_sample("go left", 2, "JUMP")


# ---- replies ---------------------------------------------------------------------------------
def test_parse_exact_names_else_stop_and_forced_stop():
    cfg = small_cfg(max_steps=5)
    proc = JanusProcessor(cfg, tokenizer_for(cfg))
    assert proc.parse("MOVE_FORWARD", 0) == (Action.MOVE_FORWARD, True)
    assert proc.parse(" TURN_LEFT\n", 1) == (Action.TURN_LEFT, True)
    assert proc.parse("TURN_RIGHT", 4) == (Action.TURN_RIGHT, True)
    assert proc.parse("move forward", 2) == (Action.STOP, False)
    assert proc.parse("MOVE_FORWARD.", 2) == (Action.STOP, False)
    assert proc.parse("MOVE_FORWARD", 5)[0] is Action.STOP  # step >= max_steps
    assert proc.parse("TURN_LEFT", 400)[0] is Action.STOP


def test_decode_skips_special_tokens():
    cfg = small_cfg()
    tok = tokenizer_for(cfg)
    ids = tok("MOVE_FORWARD<|im_end|>")["input_ids"]
    assert JanusProcessor(cfg, tok).decode(torch.tensor(ids)) == "MOVE_FORWARD"


# ---- input validation ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rgb, message",
    [
        (np.zeros((480, 640, 3), np.float32), "dtype uint8"),
        (np.zeros((480, 640, 4), np.uint8), "HxWx3"),
        (np.zeros((480, 640), np.uint8), "HxWx3"),
        (np.zeros((3, 480, 640), np.uint8), "HxWx3"),
        (np.zeros((0, 640, 3), np.uint8), "empty"),
        ([[0, 0, 0]], "numpy array"),
        (torch.zeros(480, 640, 3, dtype=torch.uint8), "numpy array"),
    ],
)
def test_bad_frames_get_a_clear_value_error(rgb, message):
    with pytest.raises(ValueError, match=message):
        validate_rgb(rgb, FULL)
    with pytest.raises(ValueError, match=message):
        resize_frame(rgb, FULL)


# ---- any camera ------------------------------------------------------------------------------
@pytest.mark.parametrize("size, box", [
    ((640, 480), (0, 0, 640, 480)),
    ((1280, 960), (0, 0, 1280, 960)),  # same aspect: the whole frame
    ((1280, 720), (160, 0, 960, 720)),  # wider: the sides are cut
    ((480, 640), (0, 140, 480, 360)),  # portrait: top and bottom are cut
    ((1, 1), (0, 0, 1, 1)),
    ((3, 1000), (0, 499, 3, 2)),
])
def test_crop_box_keeps_the_centre_at_the_model_aspect(size, box):
    assert crop_box(*size, FULL) == box


def test_any_camera_size_is_brought_to_the_model_input():
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 256, size=(720, 1280, 3), dtype=np.uint8)
    out = resize_frame(wide, FULL)
    assert out.shape == (490, 644, 3)
    ref = np.asarray(Image.fromarray(np.ascontiguousarray(wide[:, 160:1120])).resize(
        (644, 490), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(out, ref)
    big = rng.integers(0, 256, size=(960, 1280, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(big).resize((644, 490), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(resize_frame(big, FULL), ref)
    assert resize_frame(np.zeros((1, 1, 3), np.uint8), FULL).shape == (490, 644, 3)
    # what the release's loader would make of the raw frames (documented differences)
    assert compute_geometry(1280, 720).vggt_height == 364  # 26x46 patches, another grid
    assert compute_geometry(960, 720).vggt_height == 476  # 34.49999... rounds down
    assert compute_geometry(1280, 960).vggt_height == 490


# ---- tokenizer -------------------------------------------------------------------------------
def test_generated_tokenizer_matches_the_tiny_preset_ids_and_round_trips(tmp_path):
    cfg = load_config("tiny")
    tok = build_tokenizer(cfg)
    q = cfg.qwen
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    assert ids["<|endoftext|>"] == q.bos_token_id == q.pad_token_id == tok.pad_token_id
    assert ids["<|im_end|>"] == q.eos_token_id == tok.eos_token_id
    assert ids["<|image_pad|>"] == q.image_token_id and ids["<|video_pad|>"] == q.video_token_id
    assert ids["<|vision_start|>"] == q.vision_start_token_id
    assert ids["<|vision_end|>"] == q.vision_end_token_id
    assert len(tok) <= q.vocab_size
    text = "<|im_start|>user\nWalk past the sofa, then TURN_LEFT!<|im_end|>"
    enc = tok(text)["input_ids"]
    assert tok.decode(enc) == text
    assert enc.count(q.eos_token_id) == 1  # special tokens stay atomic
    tok.save_pretrained(tmp_path)
    back = load_tokenizer(tmp_path, cfg)
    assert back(text)["input_ids"] == enc
    assert back.chat_template == QWEN2_5_VL_CHAT_TEMPLATE
    assert load_chat_template(tmp_path, back) == QWEN2_5_VL_CHAT_TEMPLATE
    assert build_tokenizer(cfg)(text)["input_ids"] == enc  # deterministic


def test_tokenizer_and_config_id_mismatch_is_an_error():
    cfg = load_config("tiny")
    bad = cfg.replace(qwen=cfg.qwen.__class__(**{**cfg.qwen.__dict__, "image_token_id": 507}))
    with pytest.raises(ValueError, match="image_pad"):
        build_tokenizer(bad)
    with pytest.raises(ValueError, match="disagree"):
        JanusProcessor(bad.replace(image=small_cfg().image), build_tokenizer(cfg))


def test_non_contiguous_frames_are_accepted():
    bgr = frames(load_config("tiny"), 1)[0]
    rgb_view = bgr[:, :, ::-1]  # e.g. a BGR camera buffer flipped without a copy
    assert not rgb_view.flags.c_contiguous
    np.testing.assert_array_equal(
        resize_frame(rgb_view, FULL), resize_frame(np.ascontiguousarray(rgb_view), FULL)
    )
