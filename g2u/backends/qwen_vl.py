"""Qwen2/2.5-VL helpers shared by the backends.

* ``QwenVLImageProcessor``: the Qwen2-VL processor for images only. transformers builds the stock
  ``Qwen2VLProcessor`` together with a video processor that needs torchvision; where torchvision is
  missing the stock processor cannot be built at all, although image inputs never touch it.
* ``build_tiny_qwen2_5_vl``: a tiny randomly initialised Qwen2.5-VL (model, tokenizer, processor) saved in
  the real on-disk layout, for demo checkpoints and tests.
* ``generate_answers``: batched greedy/sampled answering for any transformers image-text-to-text model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import ProcessorMixin, Qwen2VLProcessor, StoppingCriteriaList

from g2u import progress
from g2u.deadline import deadline_criteria, install_layer_checks
from g2u.decoding import clean_answer_text, non_text_token_ids
from g2u.sizing import SizeLimits, Stage2Sizing
from g2u.types import Answer, AnswerParams, ContentPart, Turn

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"

# Qwen2.5 added tokens in their real order (ids 151643.. in the real vocabulary, after the BPE vocab here).
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
    IMAGE_TOKEN,
    VIDEO_TOKEN,
)
QWEN_NON_SPECIAL_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

# The chat template shipped with Qwen2-VL / Qwen2.5-VL (chat_template.json of the real checkpoints).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Text the tiny BPE is trained on: the prompts the Qwen backends really send (so they tokenize into whole
# words, as with the real vocabulary, and Qwen-Image-Edit's fixed prompt-prefix drop stays meaningful).
_TOKENIZER_CORPUS = (
    "Describe the key features of the input image (color, shape, size, texture, objects, background), "
    "then explain how the user's text instruction should alter or modify the image. Generate a new image "
    "that meets the user's requirements while maintaining consistency with the original input where "
    "appropriate.",
    "You are a helpful assistant. Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly. Please answer yes or no.",
    "What is in the picture? Which object is on the left, the right, the top or the bottom? How many are "
    "there? What color is the shape? Is there a circle, a square, a triangle or a rectangle?",
    "Remove the noise, sharpen the details, correct the exposure and contrast, zoom in on the detail, "
    "extend the frame, reconstruct the background, change the viewpoint, remove distractors, isolate the "
    "salient object. Make the image clearer and brighter.",
    "The first image is the original, the second image is an edited view of it.",
    "0 1 2 3 4 5 6 7 8 9 A B C D yes no red green blue yellow black white gray orange purple",
    "system\nuser\nassistant\n",
)


class QwenVLImageProcessor(Qwen2VLProcessor):
    """Qwen2-VL / Qwen2.5-VL processor for images only (no video processor, hence no torchvision).

    A ``Qwen2VLProcessor`` (diffusers' Qwen-Image pipelines check the processor's type, and warn on every
    load otherwise) whose own ``__init__`` declares no video processor: ProcessorMixin takes its
    sub-processors from that signature, so only the image processor and the tokenizer are loaded and saved.

    Behaves like ``Qwen2VLProcessor`` for images: each ``<|image_pad|>`` is expanded to
    ``prod(image_grid_thw) / merge_size²`` copies, and the outputs are ``input_ids``, ``attention_mask``,
    ``pixel_values``, ``image_grid_thw`` and ``mm_token_type_ids``.
    """

    return_mm_token_type_ids = True

    def __init__(self, image_processor=None, tokenizer=None, chat_template: str | None = None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
        self.video_token = getattr(tokenizer, "video_token", None) or VIDEO_TOKEN
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)  # not Qwen2VL's

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        merge_length = self.image_processor.merge_size**2
        num_image_tokens = int(image_inputs["image_grid_thw"][image_idx].prod()) // merge_length
        return self.image_token * num_image_tokens

    def post_process_image_text_to_text(
        self,
        generated_outputs,
        skip_special_tokens: bool = True,
        clean_up_tokenization_spaces: bool = False,
        **kwargs,
    ) -> list[str]:
        return self.tokenizer.batch_decode(
            generated_outputs,
            skip_special_tokens=skip_special_tokens,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )

    @classmethod
    def from_pretrained(
        cls, path_or_id: str | Path, subfolder: str | None = None, **kwargs
    ) -> QwenVLImageProcessor:
        """Load from a real Qwen2/2.5-VL processor folder (local or hub id); the video processor files
        (video_preprocessor_config.json) are ignored."""
        return super().from_pretrained(str(path_or_id), subfolder=subfolder or "", **kwargs)


def _train_tiny_qwen_tokenizer(vocab_size: int):
    """A byte-level BPE with Qwen2's pre-tokenizer and special tokens, trained offline (deterministic)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(list(_TOKENIZER_CORPUS) * 4, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        unk_token=None,
        eos_token=None,
        pad_token=None,
        model_max_length=32768,
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    # Added in the real order first, then eos/pad point at them (as in Qwen2.5-VL's tokenizer_config).
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    tokenizer.add_tokens(list(QWEN_NON_SPECIAL_ADDED_TOKENS))
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    return tokenizer


def build_tiny_qwen2_5_vl(
    folder: str | Path | None,
    seed: int,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    vision_depth: int = 2,
    vocab_size: int = 640,
    min_pixels: int = 28 * 28 * 4,
    max_pixels: int = 28 * 28 * 16,
    heads: int = 2,
    kv_heads: int = 1,
    intermediate_size: int | None = None,
    vision_hidden: int | None = None,
    vision_intermediate: int | None = None,
    fullatt_block_indexes: Sequence[int] | None = None,
) -> tuple[Any, Any, QwenVLImageProcessor]:
    """Tiny random ``Qwen2_5_VLForConditionalGeneration`` + tokenizer + image-only processor.

    Deterministic per ``seed`` (weights, tokenizer, configs). ``min_pixels``/``max_pixels`` are small so
    an image costs 4–16 merged vision tokens and CPU tests stay fast. With ``folder`` given, everything is
    saved there in the real Qwen2.5-VL layout (config.json, generation_config.json, model.safetensors,
    tokenizer files, preprocessor_config.json, video_preprocessor_config.json, chat_template.jinja).
    The width knobs (heads, intermediate sizes, vision width) let ``g2u.bench`` build the real depth at
    reduced width. Returns ``(model, tokenizer, processor)``.
    """
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = _train_tiny_qwen_tokenizer(vocab_size)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_SPECIAL_TOKENS}
    padded_vocab = (len(tokenizer) + 63) // 64 * 64  # the real checkpoints pad the embedding rows too
    head_dim = hidden_size // heads
    vision_hidden = vision_hidden or hidden_size
    # mrope sections (t, h, w) sum to head_dim / 2 in the real proportions: [16, 24, 24] for head_dim 128.
    half = head_dim // 2
    hw = (half - half // 4) // 2
    mrope_section = [half - 2 * hw, hw, hw]
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": padded_vocab,
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size or hidden_size * 2,
            "num_hidden_layers": num_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": mrope_section,
                "rope_theta": 1000000.0,
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": vision_intermediate or vision_hidden * 2,
            "num_heads": heads,
            "out_hidden_size": hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": list(fullatt_block_indexes or [vision_depth - 1]),
        },
        image_token_id=ids[IMAGE_TOKEN],
        video_token_id=ids[VIDEO_TOKEN],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    # The real generation_config samples; greedy here keeps demo answers reproducible by default.
    # suppress_tokens: random weights would sample control bytes and half characters, which no trained
    # model writes; without them the demo's (meaningless) answers are word pieces (g2u.decoding).
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=eos,
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
        suppress_tokens=non_text_token_ids(tokenizer, padded_vocab, keep=eos),
    )
    processor = QwenVLImageProcessor(
        _qwen_image_processor(min_pixels, max_pixels), tokenizer, chat_template=QWEN2_5_VL_CHAT_TEMPLATE
    )
    if folder is not None:
        folder = Path(folder)
        model.save_pretrained(folder)
        save_qwen_vl_processor(folder, processor)
    return model, tokenizer, processor


def _qwen_image_processor(min_pixels: int, max_pixels: int):
    """The Qwen2-VL image processor; the PIL backend needs no torchvision and its outputs match."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        min_pixels=min_pixels, max_pixels=max_pixels, patch_size=14, temporal_patch_size=2, merge_size=2
    )


def save_qwen_vl_processor(
    folder: str | Path, processor: QwenVLImageProcessor, with_vision: bool = True
) -> None:
    """Write tokenizer files (with chat_template.jinja) and the image/video preprocessor configs.

    The preprocessor configs are written by hand so they name the real classes (``Qwen2VLImageProcessor``,
    ``Qwen2VLVideoProcessor``, ``Qwen2_5_VLProcessor``) whatever backend built them here; transformers
    picks the PIL image backend itself when loading without torchvision. ``with_vision=False`` writes
    the tokenizer only (Qwen-Image-Edit's ``tokenizer/`` folder).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    processor.tokenizer.save_pretrained(folder)
    if not with_vision:
        return
    ip = processor.image_processor
    common = {
        "min_pixels": ip.size["shortest_edge"],
        "max_pixels": ip.size["longest_edge"],
        "patch_size": ip.patch_size,
        "temporal_patch_size": ip.temporal_patch_size,
        "merge_size": ip.merge_size,
        "image_mean": list(ip.image_mean),
        "image_std": list(ip.image_std),
    }
    _write_json(
        folder / "preprocessor_config.json",
        {**common, "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"},
    )
    _write_json(
        folder / "video_preprocessor_config.json",
        {**common, "video_processor_type": "Qwen2VLVideoProcessor", "processor_class": "Qwen2_5_VLProcessor"},
    )


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def prepare_answer_inputs(model: Any, processor: Any, contents: Sequence[Sequence[ContentPart]]) -> Any:
    """Processor outputs for a batch of interleaved image/text prompts, on the model's device.

    Each item becomes one user turn whose parts keep their reading order ({"type": "image"} /
    {"type": "text"}), or several turns where ``Turn`` parts say so (the ``multiturn`` layout); the
    processor's chat template adds the generation prompt. Left padding, so every row's new tokens start at
    the same column.
    """
    texts: list[str] = []
    images: list[Image.Image] = []
    for parts in contents:
        messages: list[dict[str, Any]] = [{"role": "user", "content": []}]
        for part in parts:
            if isinstance(part, Turn):
                messages.append({"role": part.role, "content": []})
            elif isinstance(part, Image.Image):
                messages[-1]["content"].append({"type": "image"})
                images.append(part.convert("RGB"))
            elif isinstance(part, str):
                messages[-1]["content"].append({"type": "text", "text": part})
            else:
                raise TypeError(f"content parts are PIL images, strings or Turn, got {type(part).__name__}")
        messages = [m for m in messages if m["content"]]
        texts.append(processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    tokenizer = getattr(processor, "tokenizer", processor)
    # As transformers' own processor.apply_chat_template(tokenize=True): add the tokenizer's special tokens
    # (LLaVA's BOS) unless the template already wrote them, so no prompt gets a second BOS.
    bos = tokenizer.bos_token
    inputs = processor(
        text=texts,
        images=images or None,
        padding=True,
        padding_side="left",
        add_special_tokens=not (bos is not None and texts[0].startswith(bos)),
        return_tensors="pt",
    )
    device = next(model.parameters()).device
    inputs = inputs.to(device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return inputs


def answer_generate_kwargs(model: Any, processor: Any, params: AnswerParams) -> dict[str, Any]:
    """``generate`` arguments for ``params`` (greedy at temperature 0). How the KV cache is kept and
    whether decoding is compiled come from ``model.generation_config`` (see ``g2u.fastpath``)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    generate_kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens,
                                       "stopping_criteria": StoppingCriteriaList([deadline_criteria()])}
    if params.temperature > 0:
        generate_kwargs.update(do_sample=True, temperature=params.temperature)
    else:
        generate_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if getattr(model.generation_config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        generate_kwargs["pad_token_id"] = tokenizer.pad_token_id
    streamer = progress.generate_streamer(tokenizer)  # None unless a streamed request is in this batch
    if streamer is not None:
        generate_kwargs["streamer"] = streamer
    return generate_kwargs


def generate_answers(
    model: Any, processor: Any, contents: Sequence[Sequence[ContentPart]], params: AnswerParams
) -> list[Answer]:
    """Answer a batch of interleaved image/text prompts with one ``generate`` call.

    Only the new tokens are decoded. ``temperature == 0`` is greedy. Generic over transformers
    image-text-to-text models (Qwen2/2.5-VL, LLaVA, ...): the model-specific parts are the processor and
    its chat template.
    """
    if not contents:
        return []
    install_layer_checks(model)  # the deadline can stop a long prefill between layers
    inputs = prepare_answer_inputs(model, processor, contents)
    tokenizer = getattr(processor, "tokenizer", processor)
    kwargs = answer_generate_kwargs(model, processor, params)
    if params.return_scores:
        kwargs.update(output_scores=True, return_dict_in_generate=True)
    with torch.inference_mode():
        output = model.generate(**inputs, **kwargs)
    sequences = output.sequences if params.return_scores else output
    new_tokens = sequences[:, inputs["input_ids"].shape[1] :]
    texts = [clean_answer_text(text) for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    if not params.return_scores:
        return [Answer(text) for text in texts]
    return scored_answers(model, output, new_tokens, texts, tokenizer)


def scored_answers(model: Any, output: Any, new_tokens: torch.Tensor, texts: list[str], tokenizer: Any) -> list:
    """``Answer`` objects from ``generate(output_scores=True, return_dict_in_generate=True)``: each
    token's probability comes from transformers' ``compute_transition_scores`` (processed logits, so the
    probability of the token greedy/sampling really chose); end and padding tokens are not counted."""
    logp = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
    probs = logp.float().exp().cpu()
    stop = set(tokenizer.all_special_ids)
    out = []
    for row, text in enumerate(texts):
        keep = [probs[row, k].item() for k, tok in enumerate(new_tokens[row].tolist()) if tok not in stop]
        out.append(Answer(text, sum(keep) / len(keep) if keep else 0.0, keep[0] if keep else 0.0))
    return out


# ---------------------------------------------------------------------------------------- stage-II sizing
def qwen_vl_stage2(min_pixels: int, max_pixels: int, factor: int = 28, max_aspect: float = 200.0,
                   cap: int | None = None) -> Stage2Sizing:
    """Qwen2/2.5-VL: ``smart_resize`` within [min_pixels, min(max_pixels, cap)], aspect kept below 200
    (a wider image is padded). ``cap`` is the configurable stage-II budget (``None``: the processor's)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    top = min(max_pixels, cap) if cap else max_pixels
    top = max(top, min_pixels)
    # the longest side any image may have: at the lowest allowed short side and the aspect bound
    longest = min(top // factor, int(math.sqrt(top * (max_aspect - 1))))
    limits = SizeLimits(multiple=factor, max_side=longest // factor * factor,
                        min_side=factor, max_pixels=top, max_aspect=max_aspect)

    def rule(width: int, height: int) -> tuple[float, float]:
        w, h = float(width), float(height)
        bound = max_aspect - 1  # strictly below the processor's bound, with room for rounding
        if max(w, h) / min(w, h) > bound:  # pad the short side up to the bound first
            if w > h:
                h = w / bound
            else:
                w = h / bound
        w, h = max(w, factor), max(h, factor)
        rh, rw = smart_resize(int(round(h)), int(round(w)), factor=factor, min_pixels=min_pixels, max_pixels=top)
        return rw, rh

    return Stage2Sizing(f"qwen_vl_smart_resize:{min_pixels}-{top}", rule, limits)


def qwen_vl_stage2_for(processor, cap: int | None = None) -> Stage2Sizing | None:
    """The stage-II sizing of a Qwen2/2.5-VL processor (``None`` for processors of other families)."""
    ip = getattr(processor, "image_processor", None)
    size = getattr(ip, "size", None) or {}
    if ip is None or "shortest_edge" not in size or not hasattr(ip, "merge_size"):
        return None
    factor = ip.patch_size * ip.merge_size
    return qwen_vl_stage2(int(size["shortest_edge"]), int(size["longest_edge"]), factor=factor, cap=cap)
