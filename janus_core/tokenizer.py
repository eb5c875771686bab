"""Tokenizers: the checkpoint's own for real models, a generated one for tiny test models.

A released checkpoint brings its Qwen2.5-VL tokenizer and chat template; :func:`load_tokenizer`
reads them from the checkpoint folder and checks the special-token ids against the config.

Tests and random-weight presets have no tokenizer files, so :func:`build_tokenizer` makes one
offline: a byte-level BPE (Qwen's pre-tokenizer family) trained on the prompt and action words,
padded to ``bos_token_id`` regular tokens, followed by Qwen2.5-VL's 14 special tokens in Qwen's
order (``<|endoftext|>`` first, so its id is ``bos_token_id``). It carries Qwen2.5-VL's chat
template and round-trips through ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from janus_core.config import JanusConfig
from janus_core.processor import (
    ACTION_LIST,
    EVAL_CONTEXT,
    NAV_ROLE,
    QWEN2_5_VL_CHAT_TEMPLATE,
    TRAIN_SYSTEM,
    TRAIN_USER,
)

log = logging.getLogger(__name__)

# Qwen2.5-VL's added special tokens, in id order from <|endoftext|> (151643 in Qwen).
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Qwen2's pre-tokenizer split pattern (letters, digits one by one, punctuation, newlines, spaces).
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Words an R2R-style instruction uses, so test prompts tokenise into few tokens.
_INSTRUCTION_WORDS = (
    "walk go turn left right straight forward past the a an and then into through down up stairs "
    "hallway room kitchen bedroom bathroom door table chair couch bed stop wait at on in out of "
    "to toward towards next exit enter front behind around corner end near by until you reach "
    "take step steps few two three first second wall window hall living dining area rug"
)


def special_token_ids(cfg: JanusConfig) -> dict[str, int]:
    """The id each Qwen special token must have for ``cfg`` (``<|endoftext|>`` = bos_token_id)."""
    base = cfg.qwen.bos_token_id
    return {tok: base + i for i, tok in enumerate(QWEN_SPECIAL_TOKENS)}


def check_special_tokens(tokenizer: PreTrainedTokenizerBase, cfg: JanusConfig) -> None:
    """Raise ValueError unless the tokenizer's vision token ids match ``cfg.qwen``.

    The eos token is not compared: the release stops decoding at ``tokenizer.eos_token_id``
    whatever ``config.json`` says, and so does the policy.
    """
    q = cfg.qwen
    expected = {
        "<|image_pad|>": q.image_token_id,
        "<|video_pad|>": q.video_token_id,
        "<|vision_start|>": q.vision_start_token_id,
        "<|vision_end|>": q.vision_end_token_id,
    }
    wrong = {}
    for token, want in expected.items():
        got = tokenizer.convert_tokens_to_ids(token)
        if got != want:
            wrong[token] = (got, want)
    if wrong:
        raise ValueError(
            f"tokenizer and config disagree on token ids (token: (tokenizer, config)): {wrong}"
        )
    if len(tokenizer) > q.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model vocabulary is {q.vocab_size}"
        )


def _corpus(extra: Sequence[str] = ()) -> list[str]:
    lines = [NAV_ROLE, EVAL_CONTEXT, TRAIN_USER, TRAIN_SYSTEM, ACTION_LIST]
    lines += ["STOP", "MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT", "system", "user", "assistant"]
    lines += [_INSTRUCTION_WORDS, "0 1 2 3 4 5 6 7 8 9 . , ; : ! ? ' \" ( ) - _"]
    return lines * 4 + [str(line) for line in extra]


def build_tokenizer(
    cfg: JanusConfig, extra_corpus: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer matching ``cfg``'s special-token ids, built offline.

    Regular tokens take ids ``0 .. bos_token_id - 1`` (the BPE vocabulary, padded with
    unreachable ``<|unused_i|>`` entries when the corpus yields fewer merges); the 14 Qwen special
    tokens follow. ``extra_corpus``: more text the BPE merges are learned from (e.g. a training
    split's instructions, so their words become single tokens). Deterministic for a given config
    and corpus.
    """
    ids = special_token_ids(cfg)
    q = cfg.qwen
    want = {
        "<|image_pad|>": q.image_token_id, "<|video_pad|>": q.video_token_id,
        "<|vision_start|>": q.vision_start_token_id, "<|vision_end|>": q.vision_end_token_id,
        "<|im_end|>": q.eos_token_id,
    }
    bad = {tok: (ids[tok], i) for tok, i in want.items() if ids[tok] != i}
    if bad:
        raise ValueError(
            "cfg.qwen special-token ids are not in Qwen's layout from bos_token_id "
            f"({q.bos_token_id}) on (token: (layout id, config id)): {bad}"
        )
    base = q.bos_token_id
    if base + len(QWEN_SPECIAL_TOKENS) > q.vocab_size:
        raise ValueError(
            f"vocab_size {q.vocab_size} has no room for {len(QWEN_SPECIAL_TOKENS)} special tokens "
            f"from id {base}"
        )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if base < len(alphabet):
        raise ValueError(f"bos_token_id {base} leaves no room for the 256-byte base vocabulary")

    trainer = trainers.BpeTrainer(
        vocab_size=base, initial_alphabet=alphabet, show_progress=False, special_tokens=[]
    )
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern=_split_regex(), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(_corpus(extra_corpus), trainer=trainer)

    model = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    for i in range(len(vocab), base):
        vocab[f"<|unused_{i}|>"] = i
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.normalizer = bpe.normalizer
    tok.pre_tokenizer = bpe.pre_tokenizer
    tok.decoder = bpe.decoder
    tok.add_special_tokens(list(QWEN_SPECIAL_TOKENS))

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=q.max_position_embeddings,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    fast.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    got = {t: fast.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    if got != ids:
        raise RuntimeError(f"generated tokenizer special ids {got} differ from the layout {ids}")
    check_special_tokens(fast, cfg)
    return fast


def _split_regex():
    from tokenizers import Regex

    return Regex(_QWEN_SPLIT)


def load_tokenizer(path: str | Path, cfg: JanusConfig | None = None) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved in a checkpoint folder; check it against ``cfg`` when given."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer folder {path} does not exist")
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise FileNotFoundError(
            f"{path} has no tokenizer files (tokenizer.json / tokenizer_config.json)"
        )
    # fix_mistral_regex=False: transformers 4.57.3+ warns about a Mistral regex bug for any local
    # folder whose config.json says transformers 4.57.3..4.x (ours); Qwen tokenizers are unaffected.
    tokenizer = AutoTokenizer.from_pretrained(str(path), fix_mistral_regex=False)
    if cfg is not None:
        check_special_tokens(tokenizer, cfg)
    return tokenizer


def load_chat_template(path: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """The chat template the release would use for a checkpoint folder.

    The release renders prompts with the *processor's* template, i.e. ``chat_template.json``
    (or ``chat_template.jinja``) in the folder; else the tokenizer's; else Qwen2.5-VL's.
    """
    path = Path(path)
    json_file, jinja_file = path / "chat_template.json", path / "chat_template.jinja"
    if json_file.exists():
        try:
            return json.loads(json_file.read_text())["chat_template"]
        except (json.JSONDecodeError, KeyError) as err:
            raise ValueError(
                f"{json_file} is not a {{'chat_template': ...}} json file: {err}"
            ) from err
    if jinja_file.exists():
        return jinja_file.read_text()
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    log.warning("%s has no chat template; using Qwen2.5-VL's", path)
    return QWEN2_5_VL_CHAT_TEMPLATE
