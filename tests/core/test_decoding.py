"""Demo answers read as text: no control bytes, half characters or added-token markup, and still say demo."""

from __future__ import annotations

import json
import unicodedata

from g2u.decoding import clean_answer_text, non_text_token_ids

# What the random demo answered before: control bytes, U+FFFD, a non-special added token.
BROKEN = "back\ufffd\ufffdit a choices\ufffd directlyect back\u0002\ufffd he\u001f<|repo_name|>"


def _noise(text: str) -> list[str]:
    return [c for c in text if c == "\ufffd" or (c not in "\n\t" and unicodedata.category(c).startswith("C"))]


def test_clean_answer_text_drops_control_and_replacement_characters_only():
    assert clean_answer_text(" Yes\u0002, the\ufffd red\tcircle\n\u001f ") == "Yes, the red\tcircle"
    assert clean_answer_text("héllo — 北京 ✓") == "héllo — 北京 ✓"  # real text, multi-byte included, stays


def test_demo_suppresses_every_token_that_is_not_text_but_keeps_the_end(demo_root):
    from transformers import AutoTokenizer, GenerationConfig

    folder = demo_root / "qwen_image_edit"
    tok = AutoTokenizer.from_pretrained(folder / "tokenizer")
    cfg = GenerationConfig.from_pretrained(folder / "text_encoder")
    suppressed = set(cfg.suppress_tokens)
    eos = set(cfg.eos_token_id)
    assert not suppressed & eos
    for tid in range(len(tok)):
        text = tok.decode([tid])
        if tid in eos:
            continue
        if _noise(text) or tid in tok.get_added_vocab().values():
            assert tid in suppressed, f"token {tid} {text!r} can still be sampled"
    words = [tid for tid in range(len(tok)) if tok.decode([tid]).strip().isalpha()]
    assert len(words) > 50 and not suppressed & set(words)  # word pieces remain to be sampled


def test_non_text_ids_of_a_byte_fallback_tokenizer(demo_root):
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(demo_root / "decoupled_kontext" / "answerer")  # LLaVA: Llama bytes
    ids = set(non_text_token_ids(tok, len(tok), keep=[tok.eos_token_id]))
    cfg = GenerationConfig.from_pretrained(demo_root / "decoupled_kontext" / "answerer")
    assert ids == set(cfg.suppress_tokens)  # what the demo checkpoint carries
    assert tok.convert_tokens_to_ids("<0x02>") in ids and tok.convert_tokens_to_ids("<0xFF>") in ids
    assert tok.convert_tokens_to_ids("a") not in ids and tok.eos_token_id not in ids


def test_demo_answers_are_words_and_say_demo(demo_root, rgb_image):
    from g2u.batch import RawItem, run_batch
    from g2u.pipeline import G2UPipeline

    pipe = G2UPipeline.from_checkpoint(str(demo_root / "qwen_image_edit"))
    items = [RawItem({"question": q, "mode": mode, "steps": 2, "seed": 0, "max_new_tokens": 24,
                      "reasoning_tokens": 16}, rgb_image)
             for mode, q in (("g2u", "Which shape is red?"), ("baseline", "How many objects are there?"),
                             ("textual_cot", "Is there a circle?"))]
    for outcome in run_batch(pipe, items):
        body = outcome.result.to_dict()
        assert body["answer"] and not _noise(body["answer"]), json.dumps(body["answer"])
        assert "<|" not in body["answer"]
        assert body["model"]["demo"] is True and "meaningless" in body["model"]["note"]


def test_bagel_decode_cleans_bytes(demo_root):
    from g2u.backends.bagel import BagelBackend

    backend = BagelBackend.from_pretrained(str(demo_root / "bagel"), device="cpu")
    ids = backend.tokenizer.encode("red\u0002 circle") + [backend.tokenizer.convert_tokens_to_ids("Ã")]  # Ã: 0xC3
    assert backend.decode_text(ids) == "red circle"


def test_broken_answer_of_the_issue_is_cleaned():
    assert not _noise(clean_answer_text(BROKEN))
