"""The packed-window ViT attention equals transformers' per-window loop, forward and backward."""

import copy

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from janus_core.compat import vision_output
from janus_core.config import load_config
from janus_core.model import qwen_config
from janus_core.processor import qwen_pixel_values
from janus_core.vision_attention import PackedWindowVisionAttention, pack_vision_attention


def test_packed_window_attention_matches_stock_vision_tower():
    torch.manual_seed(0)
    cfg = load_config("tiny")
    stock = Qwen2_5_VLForConditionalGeneration(qwen_config(cfg)).model.visual.eval()
    packed = copy.deepcopy(stock)
    assert pack_vision_attention(packed) == len(packed.blocks)
    assert all(isinstance(b.attn, PackedWindowVisionAttention) for b in packed.blocks)
    assert stock.state_dict().keys() == packed.state_dict().keys()

    # two 476x644 Qwen crops: 34x46 patches, so the border windows are smaller than the rest
    images = torch.rand(2, 3, 476, 644)
    pixel_values, grid_thw = qwen_pixel_values(list(images))
    out_stock = vision_output(stock(pixel_values, grid_thw=grid_thw))
    out_packed = vision_output(packed(pixel_values, grid_thw=grid_thw))
    torch.testing.assert_close(out_packed, out_stock, rtol=1e-5, atol=1e-5)

    out_packed.square().sum().backward()
    out_stock.square().sum().backward()
    g_stock = stock.blocks[0].attn.qkv.weight.grad
    g_packed = packed.blocks[0].attn.qkv.weight.grad
    torch.testing.assert_close(g_packed, g_stock, rtol=1e-4, atol=1e-5)


def test_blocks_share_one_plan_per_cu_seqlens_tensor():
    cfg = load_config("tiny")
    visual = Qwen2_5_VLForConditionalGeneration(qwen_config(cfg)).model.visual.eval()
    pack_vision_attention(visual)
    plans = visual.blocks[0].attn.plans
    assert all(b.attn.plans is plans for b in visual.blocks)
    pixel_values, grid_thw = qwen_pixel_values(list(torch.rand(1, 3, 476, 644)))
    with torch.no_grad():
        visual(pixel_values, grid_thw=grid_thw)
    # one plan for the window chunks, one for the whole image (full-attention block)
    assert len(plans._plans) == 2
