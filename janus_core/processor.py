"""Everything between a camera frame and the model, and between the model's reply and an action.

One place for the release's exact preprocessing and prompts (reference digest §1.3, §3, §9):

- **Geometry.** A 640x480 frame is resized (PIL bicubic) to width 644 and height
  ``round(h * (644 / w) / 14) * 14`` = 490, then ``ToTensor`` gives [0, 1]. VGGT gets that 3x490x644
  tensor (35x46 patches). Qwen gets the *same* tensor cropped at the bottom/right to an even
  number of patches per side, 3x476x644 (34x46 patches, 17x23 = 391 merged tokens), normalised
  with the CLIP mean/std and patchified like ``Qwen2VLImageProcessor`` (``do_rescale=False``).
- **Any camera.** The geometry is fixed per model (``cfg.image.input_width x input_height``,
  640x480 for the release), because the token grid, the memories and the training all depend on
  it. A frame of another size is first centre-cropped to the configured aspect ratio (1280x720
  -> its central 960x720; a 480x640 portrait frame -> its central 480x360), then resized by the
  same single PIL-bicubic resize straight to the model's input (644x490), exactly as the release's
  loader (``load_and_preprocess_images``, ``mode="crop"``) treats a frame of the configured size.
  Frames of the configured size are bit-exact with the release. Differences from what the
  release's loader would do with the raw frame: it keeps the full width of a wider frame and
  changes the token grid instead (1280x720 -> 644x364, 26x46 patches, 299 tokens per image; a
  grid the model was never trained on), and its height rounding depends on the frame size
  (960x720 gives 34.49999... -> 476 rows, 1280x960 gives 490). To feed a wide camera's full field
  of view, set the checkpoint config's ``image.input_width/input_height`` to the camera size
  (1280x720 passes :func:`geometry_from_config`) and fine-tune for it. :func:`crop_box` says
  which part of a frame the model sees.
- **VGGT fusion features.** Patch tokens of one aggregator layer (the specials before
  ``patch_start_idx`` dropped), the 35x46 grid cropped to 34x46 and regrouped into 2x2 blocks,
  row-major over the 17x23 merged grid with the inner block in (dy, dx) order: the order of
  Qwen's merged visual tokens. Result ``[391, 4 * 2048]``.
- **History.** All frames while ``t <= num_history``, else ``linspace(0, t, num_history + 1)``
  cast to int (frame 0 and the current frame always in); ``num_history == 0``: the current frame
  only (the "without history" ablation).
- **Prompts.** The evaluation prompt (navigation system turn, images back to back, then the task
  text) through the checkpoint's Qwen2.5-VL chat template, and the training prompt (generic
  system turn, role sentence + history/current labels in the user turn, minimal template).
- **Replies.** ``janus_core.actions.parse_action`` (exact name, else STOP) and a forced STOP at
  ``max_steps``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from janus_core.actions import Action, parse_action
from janus_core.config import ConfigError, JanusConfig

log = logging.getLogger(__name__)

# ---- prompt strings ---------------------------------------------------------------------------
# Copied from the release as text facts (the weights were trained/evaluated on them):
# NAV_ROLE and EVAL_CONTEXT from MIV-XJTU/JanusVLN src/evaluation.py (blob at commit 1c1a534,
# ``call_model``), TRAIN_USER from create_data/create_data.py (commit 1c8ded1). The typo "your
# should" is the release's. They have NOT been compared byte for byte with the HEAD 266ee05 files
# or with the released checkpoints' training json: do that before any parity claim.
NAV_ROLE = (
    "You are a visual language navigation model, and your should go to the locations to complete "
    "the given task. Compare the observation and instruction to infer your current progress, and "
    "then select the correct direction from the candidates to go to the target location and "
    "finish the task."
)
ACTION_LIST = (
    "You should take one of the following actions:\n MOVE_FORWARD\n TURN_LEFT\n TURN_RIGHT\n STOP."
)
# Evaluation user text, after the images. Note the spaces around "\n" and after the instruction.
EVAL_CONTEXT = (
    "These images are your historical observations and your current observation.\n Your task is "
    "to {instruction} \n " + ACTION_LIST
)
# Training user turn; {history} is one "<image>" per history frame, back to back.
TRAIN_USER = (
    NAV_ROLE + "\n This is your historical observation:{history}\n This is your current "
    "observation:<image>\n Your task is to {instruction}\n " + ACTION_LIST
)
TRAIN_SYSTEM = "You are a helpful assistant."
IMAGE_PLACEHOLDER = "<image>"

# Qwen2.5-VL-7B-Instruct's chat_template.json (the release copies it into its checkpoints and
# evaluates with it). Used when a checkpoint brings no template of its own, and by the tiny
# tokenizer.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The minimal template the release's training data code sets on the tokenizer.
TRAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
ASSISTANT_PREFIX = "<|im_start|>assistant\n"
IGNORE_INDEX = -100

# ---- image constants ----------------------------------------------------------------------------
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # Qwen2VLImageProcessor image_mean
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # Qwen2VLImageProcessor image_std
QWEN_TEMPORAL_PATCH = 2
# Pixel bounds of Qwen's smart_resize in the release: evaluation (src/evaluation.py) and
# training (scripts/train.sh). The geometry must pass through smart_resize unchanged.
EVAL_MIN_PIXELS, EVAL_MAX_PIXELS = 28 * 28, 1605632
TRAIN_MIN_PIXELS, TRAIN_MAX_PIXELS = 16 * 28 * 28, 576 * 28 * 28


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Sizes derived from the camera frame size and the model's patching.

    ``vggt_*`` is the resized frame fed to VGGT, ``qwen_*`` the crop fed to Qwen; ``*_grid`` are
    patch grids (rows, cols), ``merged_grid`` Qwen's grid after the 2x2 spatial merge.
    """

    input_height: int
    input_width: int
    resize_height: int  # height after the bicubic resize, before the (rare) centre crop
    vggt_height: int
    vggt_width: int
    qwen_height: int
    qwen_width: int
    patch_size: int
    merge_size: int

    @property
    def vggt_grid(self) -> tuple[int, int]:
        """VGGT patch grid (rows, cols): 35x46 for a 640x480 frame."""
        return self.vggt_height // self.patch_size, self.vggt_width // self.patch_size

    @property
    def qwen_grid(self) -> tuple[int, int]:
        """Qwen ViT patch grid (rows, cols): 34x46 for a 640x480 frame."""
        return self.qwen_height // self.patch_size, self.qwen_width // self.patch_size

    @property
    def merged_grid(self) -> tuple[int, int]:
        """Qwen LLM token grid after the spatial merge: 17x23."""
        h, w = self.qwen_grid
        return h // self.merge_size, w // self.merge_size

    @property
    def tokens_per_image(self) -> int:
        """LLM visual tokens per image: 391 for a 640x480 frame."""
        h, w = self.merged_grid
        return h * w

    @property
    def grid_thw(self) -> tuple[int, int, int]:
        """Qwen ``image_grid_thw`` row of one image: (1, 34, 46)."""
        return (1, *self.qwen_grid)

    def vggt_tokens_per_frame(self, num_register_tokens: int) -> int:
        """VGGT tokens per frame: camera + registers + patches (1615 for VGGT-1B at 640x480)."""
        h, w = self.vggt_grid
        return 1 + num_register_tokens + h * w


def compute_geometry(
    input_width: int, input_height: int, target_width: int = 644, patch_size: int = 14,
    merge_size: int = 2,
) -> Geometry:
    """Reproduce the release's resize/crop arithmetic for a ``input_width x input_height`` frame.

    The height formula keeps the release's float expression order: for 640x480 the quotient is
    34.50000000000001, which rounds to 35 (490 px), not to 34.
    """
    new_height = round(input_height * (target_width / input_width) / patch_size) * patch_size
    vggt_height = min(new_height, target_width)  # the release centre-crops taller frames to 644
    qwen_width = target_width - (target_width // patch_size) % merge_size * patch_size
    qwen_height = vggt_height - (vggt_height // patch_size) % merge_size * patch_size
    if qwen_height < patch_size * merge_size or qwen_width < patch_size * merge_size:
        raise ConfigError(
            f"a {input_width}x{input_height} frame resized to width {target_width} leaves "
            f"{qwen_width}x{qwen_height} px for Qwen, less than one merged patch"
        )
    return Geometry(
        input_height=input_height, input_width=input_width, resize_height=new_height,
        vggt_height=vggt_height, vggt_width=target_width,
        qwen_height=qwen_height, qwen_width=qwen_width,
        patch_size=patch_size, merge_size=merge_size,
    )


def geometry_from_config(cfg: JanusConfig) -> Geometry:
    """The geometry of ``cfg.image`` with the model's patch and merge sizes."""
    geo = compute_geometry(
        cfg.image.input_width, cfg.image.input_height, cfg.image.target_width,
        cfg.vggt.patch_size, cfg.qwen.spatial_merge_size,
    )
    pixels = geo.qwen_height * geo.qwen_width
    factor = geo.patch_size * geo.merge_size
    if pixels < EVAL_MIN_PIXELS or pixels > EVAL_MAX_PIXELS or geo.qwen_height % factor or (
        geo.qwen_width % factor
    ):
        raise ConfigError(
            f"image geometry {geo.qwen_width}x{geo.qwen_height} would be changed by Qwen's "
            f"smart_resize (needs multiples of {factor} and "
            f"{EVAL_MIN_PIXELS}..{EVAL_MAX_PIXELS} px)"
        )
    return geo


# ---- frames -------------------------------------------------------------------------------
def validate_rgb(rgb: Any, geometry: Geometry | None = None) -> np.ndarray:
    """Check one camera frame: an HxWx3 uint8 numpy array of any size (at least 1x1).

    ``geometry`` is accepted for symmetry with :func:`resize_frame`; any size is brought to it.
    """
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"rgb must be a numpy array (HxWx3 uint8), got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb must have dtype uint8 (values 0..255), got {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be HxWx3 (RGB channels last), got shape {rgb.shape}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"rgb is empty: {rgb.shape[1]}x{rgb.shape[0]} (WxH)")
    return rgb


def crop_box(width: int, height: int, geometry: Geometry) -> tuple[int, int, int, int]:
    """``(x0, y0, w, h)``: the centred part of a ``width x height`` frame the model sees.

    The largest centred window with the configured aspect ratio (``input_width:input_height``);
    the whole frame when the aspects already agree.
    """
    if width < 1 or height < 1:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    aw, ah = geometry.input_width, geometry.input_height
    if width * ah > height * aw:  # wider than the model's camera: crop the sides
        w = max(1, min(width, round(height * aw / ah)))
        return (width - w) // 2, 0, w, height
    h = max(1, min(height, round(width * ah / aw)))
    return 0, (height - h) // 2, width, h


def resize_frame(rgb: np.ndarray, geometry: Geometry) -> np.ndarray:
    """PIL-bicubic resize to the VGGT size, as the release's loader does; returns HxWx3 uint8.

    A frame of another aspect ratio than the configured camera is centre-cropped to it first
    (:func:`crop_box`); any size is then resized in one step to the configured input geometry
    (module docstring). Frames that would come out taller than the target width are
    centre-cropped to it (the release's ``mode="crop"``); a 640x480 frame is not.
    """
    validate_rgb(rgb, geometry)
    x0, y0, w, h = crop_box(rgb.shape[1], rgb.shape[0], geometry)
    if (w, h) != (rgb.shape[1], rgb.shape[0]):
        rgb = rgb[y0 : y0 + h, x0 : x0 + w]
    image = Image.fromarray(np.ascontiguousarray(rgb)).resize(
        (geometry.vggt_width, geometry.resize_height), Image.Resampling.BICUBIC
    )
    out = np.array(image)  # a writable copy
    if geometry.resize_height > geometry.vggt_height:
        top = (geometry.resize_height - geometry.vggt_height) // 2
        out = out[top : top + geometry.vggt_height]
    return np.ascontiguousarray(out)


def to_tensor(frame: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 in [0, 1], like torchvision's ``ToTensor``."""
    return torch.from_numpy(frame).permute(2, 0, 1).contiguous().to(torch.float32).div(255)


def qwen_crop(image: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Crop a 3xHxW VGGT-size tensor at the bottom/right to Qwen's even patch grid."""
    return image[..., : geometry.qwen_height, : geometry.qwen_width]


def qwen_pixel_values(
    images: Sequence[torch.Tensor], patch_size: int = 14, merge_size: int = 2,
    temporal_patch_size: int = QWEN_TEMPORAL_PATCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise and patchify [0, 1] images exactly like ``Qwen2VLImageProcessor``.

    Each 3xHxW image (H, W multiples of ``patch_size * merge_size``) becomes ``gh * gw`` rows of
    ``3 * temporal_patch_size * patch_size**2`` values, ordered by merged 2x2 block (row-major)
    and by (dy, dx) inside a block. Returns ``(pixel_values, image_grid_thw)``.
    """
    if not images:
        raise ValueError("qwen_pixel_values needs at least one image")
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    rows, grids = [], []
    for image in images:
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a 3xHxW image tensor, got shape {tuple(image.shape)}")
        _, height, width = image.shape
        factor = patch_size * merge_size
        if height % factor or width % factor:
            raise ValueError(f"image {width}x{height} is not a multiple of {factor} px per side")
        x = (image.to(torch.float32) - mean) / std
        gh, gw = height // patch_size, width // patch_size
        x = x.unsqueeze(0).expand(temporal_patch_size, -1, -1, -1)  # one frame, repeated
        x = x.reshape(
            1, temporal_patch_size, 3, gh // merge_size, merge_size, patch_size,
            gw // merge_size, merge_size, patch_size,
        )
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        rows.append(x.reshape(gh * gw, 3 * temporal_patch_size * patch_size * patch_size))
        grids.append((1, gh, gw))
    return torch.cat(rows, 0), torch.tensor(grids, dtype=torch.long)


def regroup_vggt_features(patch_tokens: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """VGGT patch tokens of one frame -> one row per Qwen merged token.

    ``patch_tokens`` is ``[Hv * Wv, C]`` (specials already removed) on the VGGT grid. The grid is
    cropped at the bottom/right to Qwen's even grid, then 2x2 blocks are taken row-major over the
    merged grid, inner order (dy, dx). Returns ``[tokens_per_image, merge**2 * C]``.
    """
    hv, wv = geometry.vggt_grid
    m = geometry.merge_size
    if patch_tokens.ndim != 2 or patch_tokens.shape[0] != hv * wv:
        raise ValueError(
            f"expected [{hv * wv}, C] VGGT patch tokens for a {hv}x{wv} grid, "
            f"got {tuple(patch_tokens.shape)}"
        )
    hm, wm = geometry.merged_grid
    c = patch_tokens.shape[1]
    x = patch_tokens.reshape(hv, wv, c)[: hm * m, : wm * m]
    x = x.reshape(hm, m, wm, m, c).permute(0, 2, 1, 3, 4)
    return x.reshape(hm * wm, m * m * c)


def sample_history(t: int, num_history: int) -> list[int]:
    """Frame indices the LLM sees at step ``t`` (0-based), current frame last.

    All frames while ``t <= num_history``, else the ``num_history + 1`` indices of
    ``np.linspace(0, t, num_history + 1)`` cast to int (release ``evaluation.py`` and
    ``create_data.py``). ``num_history == 0`` is the "without history" ablation: only the
    current frame (the linspace rule would keep frame 0 instead).
    """
    if t < 0:
        raise ValueError(f"step index must be >= 0, got {t}")
    if num_history < 0:
        raise ValueError(f"num_history must be >= 0, got {num_history}")
    if num_history == 0:
        return [t]
    if t <= num_history:
        return list(range(t + 1))
    return np.linspace(0, t, num_history + 1).astype(int).tolist()


# ---- prompts ------------------------------------------------------------------------------
def eval_messages(instruction: str, num_images: int) -> list[dict[str, Any]]:
    """Chat messages of the release's evaluation prompt.

    A system turn with the navigation role sentence, then one user turn with the images back to
    back followed by the task text.
    """
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(num_images)]
    content.append({"type": "text", "text": EVAL_CONTEXT.format(instruction=instruction)})
    return [{"role": "system", "content": NAV_ROLE}, {"role": "user", "content": content}]


def train_user_text(instruction: str, num_images: int) -> str:
    """The release's training user turn with ``<image>`` placeholders (last one = current)."""
    if num_images < 1:
        raise ValueError(f"the training prompt needs at least the current image, got {num_images}")
    return TRAIN_USER.format(
        history=IMAGE_PLACEHOLDER * (num_images - 1), instruction=instruction
    )


def expand_image_placeholders(text: str, tokens_per_image: int) -> str:
    """Training format: each ``<image>`` -> vision_start + image_pad x N + vision_end."""
    return text.replace(
        IMAGE_PLACEHOLDER, VISION_START + IMAGE_PAD * tokens_per_image + VISION_END
    )


class JanusProcessor:
    """Frames, prompts and replies for one model: geometry + tokenizer + chat template.

    Holds no episode state. ``chat_template`` is the checkpoint's (the release evaluates with
    it); by default the tokenizer's own, else Qwen2.5-VL's.
    """

    def __init__(self, cfg: JanusConfig, tokenizer: Any, chat_template: str | None = None):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.geometry = geometry_from_config(cfg)
        self.chat_template = (
            chat_template or getattr(tokenizer, "chat_template", None) or QWEN2_5_VL_CHAT_TEMPLATE
        )
        self.image_token_id = cfg.qwen.image_token_id
        self._check_tokenizer()

    def _check_tokenizer(self) -> None:
        q = self.cfg.qwen
        expected = {
            IMAGE_PAD: q.image_token_id, VISION_START: q.vision_start_token_id,
            VISION_END: q.vision_end_token_id,
        }
        got = {tok: self.tokenizer.convert_tokens_to_ids(tok) for tok in expected}
        wrong = {t: (got[t], i) for t, i in expected.items() if got[t] != i}
        if wrong:
            raise ValueError(
                "tokenizer and config disagree on special token ids (token: (tokenizer, config)): "
                f"{wrong}"
            )

    # -- frames --
    def preprocess_frame(self, rgb: np.ndarray) -> np.ndarray:
        """Validate one camera frame (HxWx3 uint8, any size) and bring it to the VGGT size."""
        return resize_frame(rgb, self.geometry)

    def vggt_input(self, frame: np.ndarray) -> torch.Tensor:
        """Resized uint8 frame -> VGGT input, 3xHxW float32 in [0, 1] (490x644)."""
        return to_tensor(frame)

    def qwen_inputs(self, frames: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Resized uint8 frames -> Qwen ``(pixel_values, image_grid_thw)``, in order."""
        images = [qwen_crop(to_tensor(f), self.geometry) for f in frames]
        return qwen_pixel_values(
            images, self.geometry.patch_size, self.geometry.merge_size,
            self.cfg.qwen.temporal_patch_size,
        )

    def vggt_fusion_features(
        self, aggregated: Sequence[torch.Tensor], patch_start_idx: int, frame: int = -1
    ) -> torch.Tensor:
        """Aggregator outputs (per-depth ``[B, S, P, 2C]``) -> ``[tokens, 4 * 2C]``.

        Takes batch item 0, frame ``frame``, layer ``cfg.vggt.feature_layer``.
        """
        layer = aggregated[self.cfg.vggt.feature_layer]
        tokens = layer[0, frame, patch_start_idx:]
        return regroup_vggt_features(tokens, self.geometry)

    # -- prompts --
    def render_prompt(self, instruction: str, num_images: int) -> str:
        """The prompt text (one ``<|image_pad|>`` per image) in ``cfg.prompt_style``."""
        if self.cfg.prompt_style == "eval":
            return self.tokenizer.apply_chat_template(
                eval_messages(instruction, num_images), chat_template=self.chat_template,
                tokenize=False, add_generation_prompt=True,
            )
        user = train_user_text(instruction, num_images).replace(
            IMAGE_PLACEHOLDER, VISION_START + IMAGE_PAD + VISION_END
        )
        return self.tokenizer.apply_chat_template(
            [{"role": "system", "content": TRAIN_SYSTEM}, {"role": "user", "content": user}],
            chat_template=TRAIN_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True,
        )

    def prompt_ids(self, instruction: str, num_images: int) -> torch.Tensor:
        """Token ids ``[1, L]`` of the prompt, each image pad repeated ``tokens_per_image`` times.

        Same ids as the Qwen processor's (it repeats the pad in the text, then tokenises; special
        tokens are atomic, so repeating the id afterwards is equivalent).
        """
        text = self.render_prompt(instruction, num_images)
        ids = self.tokenizer(text)["input_ids"]
        out: list[int] = []
        for tok in ids:
            repeat = self.geometry.tokens_per_image if tok == self.image_token_id else 1
            out.extend([tok] * repeat)
        n_pads = ids.count(self.image_token_id)
        if n_pads != num_images:
            raise ValueError(
                f"prompt has {n_pads} image pad tokens for {num_images} images: the chat template "
                "or the instruction text is wrong"
            )
        return torch.tensor([out], dtype=torch.long)

    def train_sample(
        self, instruction: str, num_images: int, action: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training ``(input_ids, labels)`` (both 1-D), built as the release builds them.

        Each turn is tokenised on its own with the minimal template. System, user and the
        assistant prefix (``<|im_start|>assistant`` and a newline) are masked with -100; the action
        word, ``<|im_end|>`` and the trailing newline are supervised.
        """
        Action.from_name(action)
        enc = self._encode_turn
        system = enc("system", TRAIN_SYSTEM)
        user = enc("user", expand_image_placeholders(
            train_user_text(instruction, num_images), self.geometry.tokens_per_image
        ))
        answer = enc("assistant", action)
        n_prefix = len(self.tokenizer(ASSISTANT_PREFIX, add_special_tokens=False)["input_ids"])
        ids = system + user + answer
        labels = [IGNORE_INDEX] * (len(system) + len(user) + n_prefix) + answer[n_prefix:]
        return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)

    def _encode_turn(self, role: str, content: str) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [{"role": role, "content": content}], chat_template=TRAIN_CHAT_TEMPLATE, tokenize=False
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- replies --
    def decode(self, token_ids: Sequence[int] | torch.Tensor) -> str:
        """Generated ids -> text, special tokens skipped (as the release decodes)."""
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        return self.tokenizer.decode(
            token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def parse(self, text: str, step: int) -> tuple[Action, bool]:
        """Reply text -> ``(action, parsed)``; STOP from step ``cfg.max_steps`` on."""
        action, parsed = parse_action(text)
        if step >= self.cfg.max_steps:
            return Action.STOP, parsed
        return action, parsed
