"""Issue 25's in-process rows: what needs no TorchServe (labels and log lines, the budget's prompt and
decode counts, cost groups, bounded thought measures, the prefill deadline, a cache that cannot write and
its privacy, the Unicode leak guard, each item's own answer through the backends, the resume key).
The rows against a real server are in tests/serving/test_reliability.py (load_tests/reliability_clients.py)."""

from __future__ import annotations

import errno
import io
import json
import logging
from dataclasses import replace

import pytest
from PIL import Image

from g2u.batch import RawItem, run_batch
from g2u.budget import WorkBudget, check_budget
from g2u.cost import plan_groups, prompt_cost
from g2u.errors import InputError
from g2u.pipeline import G2UPipeline
from g2u.prompts import find_leak, normalize
from g2u.safe_text import LogGuard, escape
from g2u.schema import parse_request
from g2u.serving import metric_field, metric_kind
from g2u.testing.echo_backend import EchoBackend, answer_for, colour_tag, own_answer_problems


def _img(color=(10, 20, 30), size=(64, 48)) -> Image.Image:
    return Image.new("RGB", size, color)


def _png(size, color=(120, 130, 140)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def demo(demo_root):
    """The demo Qwen-Image-Edit pipeline with the server's budget (prompts counted by its tokenizer)."""
    pipe = G2UPipeline.from_checkpoint(str(demo_root / "qwen_image_edit"), thought_cache=None)
    pipe.budget = WorkBudget.for_backend(pipe.backend.default_edit_area, backend=pipe.backend)
    return pipe


def echo_pipeline(**kwargs) -> G2UPipeline:
    return G2UPipeline(EchoBackend(), **kwargs)


# ---------------------------------------------------------------- 1. labels and log lines
def test_metric_labels_come_from_a_fixed_set():
    assert metric_field("steps") == "steps" and metric_field("options[3]") == "options"
    assert metric_field("x" * 10**6) == "unknown" and metric_field("a\n[METRICS]b") == "unknown"
    assert metric_field("-") == "-" and metric_kind("invalid_input") == "invalid_input"
    assert metric_kind("FORGED|#hostname:x") == "other"


def test_escape_defuses_line_breaks_ansi_metric_markers_and_cuts():
    text = escape("a\nb\r\x1b[31m[METRICS]x|#hostname:y" + "z" * 5000, limit=100)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert "[METRICS]" not in text and "|#" not in text
    assert text.endswith("chars)") and len(text) < 160


def test_log_guard_makes_every_record_one_inert_line_and_keeps_ts_metric_lines(capsys):
    logger = logging.getLogger("g2u.test.clients")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(LogGuard())
    logger.addHandler(handler)
    try:
        logger.warning("field %s", "k\n[METRICS]g2u_errors.Count:9|#Kind:FORGED\r\x1b[2J")
        try:
            raise ValueError("bad\n[METRICS]forged.Count:1|#x:y")
        except ValueError:
            logger.exception("failed")
        logging.getLogger("ts.metrics.caching_metric").addHandler(handler)
        logging.getLogger("ts.metrics.caching_metric").warning("[METRICS]g2u_batches.Count:1|#ModelName:g2u")
    finally:
        logger.removeHandler(handler)
        logging.getLogger("ts.metrics.caching_metric").removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert not [line for line in lines if line.startswith("[METRICS]") and "g2u_batches" not in line]
    assert any(line.startswith("[METRICS]g2u_batches.Count:1|#ModelName:g2u") for line in lines)
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()


def test_error_body_echoes_a_huge_or_forging_field_name_cut_and_escaped():
    with pytest.raises(InputError) as info:
        parse_request({"question": "q?", "f" * 300_000: 1}, image=_img())
    assert len(info.value.field) < 100
    with pytest.raises(InputError) as info:
        parse_request({"question": "q?", "a\n[METRICS]b|#c": 1}, image=_img())
    assert "\n" not in info.value.field and "[METRICS]" not in info.value.field


# ---------------------------------------------------------------- 5. single requests that were 500s
@pytest.mark.parametrize("field", ["options", "candidate_prompts"])
def test_list_fields_as_json_text_nested_100k_deep_are_400(field):
    with pytest.raises(InputError) as info:
        parse_request({"question": "q?", field: "[" * 100_000 + "]" * 100_000}, image=_img())
    assert info.value.status == 400 and info.value.field == field


@pytest.mark.parametrize("value", [True, False])
def test_timeout_s_refuses_booleans(value):
    with pytest.raises(InputError) as info:
        parse_request({"question": "q?", "timeout_s": value}, image=_img())
    assert info.value.field == "timeout_s"
    assert parse_request({"question": "q?", "timeout_s": 2}, image=_img()).timeout_s == 2


@pytest.mark.parametrize("side", [1, 5, 7])
def test_a_thought_under_8_pixels_a_side_is_400(side):
    with pytest.raises(InputError) as info:
        parse_request({"question": "q?", "thought": _png((side, 40))}, image=_img())
    assert info.value.status == 400 and info.value.field == "thought"


def test_a_tiff_of_1_5m_strips_is_refused_from_its_header():
    from g2u.images import load_image
    from load_tests.hostile_files import many_strip_tiff

    with pytest.raises(InputError) as info:
        load_image(many_strip_tiff(), field="image")
    assert info.value.status == 400 and "strips" in info.value.reason
    assert load_image(many_strip_tiff(2000)).size == (1, 2000)  # a small one of the same layout decodes


def test_handler_takes_a_base64_thought_from_a_form_field():
    handler = pytest.importorskip("handler.g2u_handler")
    fields, _ = handler.split_fields({"question": b"q?", "image": _png((32, 32)),
                                      "thought": __import__("base64").b64encode(_png((32, 32)))})
    req = parse_request(fields, image=_img())
    assert req.thought is not None and req.thought.size == (32, 32)


# ---------------------------------------------------------------- 3. costs bounded before work
def test_decode_tokens_count_every_answer_pass_and_the_reasoning():
    budget = WorkBudget(max_edit_work=1e9, max_decode_tokens=4608)
    many = parse_request({"question": "q?", "candidates": 8, "max_new_tokens": 2048}, image=_img())
    with pytest.raises(InputError) as info:
        check_budget(many, (64, 64), budget)
    assert info.value.status == 422 and info.value.field == "candidates" and "16384" in info.value.reason
    cot = parse_request({"question": "q?", "mode": "textual_cot", "reasoning_tokens": 4096,
                         "max_new_tokens": 600}, image=_img())
    with pytest.raises(InputError) as info:
        check_budget(cot, None, budget)
    assert info.value.field == "reasoning_tokens"
    check_budget(parse_request({"question": "q?", "candidates": 2, "max_new_tokens": 512}, image=_img()),
                 (64, 64), budget)


def test_prompt_count_matches_the_answer_models_real_prompt(demo):
    """The estimate before any work against the processor's real token count of the same prompt."""
    from g2u.answer_prompt import answer_contents
    from g2u.backends.qwen_vl import prepare_answer_inputs
    from g2u.sizing import prepare_contents

    for fields in ({"question": "What is it? " * 40, "options": ["red one", "blue one"]},
                   {"question": "Which?", "layout": "multiturn"}, {"question": "Where 🙂?", "mode": "baseline"}):
        req = parse_request({**fields, "steps": 2}, image=_img(size=(96, 64)))
        req.thought = req.thought or (_img((5, 6, 7), size=(64, 64)) if fields.get("mode") != "baseline" else None)
        thought = demo.edit([demo.plan(req)])[0]
        contents, _ = prepare_contents([answer_contents(req, thought, None, demo.backend)],
                                       demo.backend.stage2_sizing(None))
        real = prepare_answer_inputs(demo.backend.answer_model, demo.backend.pipe.processor, contents)
        n = real["input_ids"].shape[1]
        est = prompt_cost(demo.backend, req).tokens
        assert n <= est <= n * 1.25 + 16, (fields, n, est)  # counted before the work, never under the real one


def test_a_prompt_past_the_models_positions_is_422_before_any_work(demo, monkeypatch):
    calls = []
    monkeypatch.setattr(demo.backend, "answer", lambda *a, **k: calls.append(1))
    req = parse_request({"question": "What is this 🙂? " * 250, "options": ["🙂" * 1000] * 26,
                         "layout": "multiturn", "steps": 2}, image=_img())
    with pytest.raises(InputError) as info:
        demo.plan(req)
    assert info.value.status == 422 and info.value.field == "options" and "tokens" in info.value.reason
    [out] = run_batch(demo, [RawItem({"question": req.question, "options": req.options, "layout": "multiturn",
                                      "steps": 2}, _img())])
    assert out.status == 422 and not calls


def test_cost_groups_bound_padding_and_keep_cheap_items_apart_from_costly_ones():
    # (position, prompt tokens, passes, stage-I work)
    costs = [(0, 100, 1, 1.0), (1, 3000, 1, 1.0), (2, 120, 1, 0.0), (3, 110, 1, 30.0), (4, 90, 1, 1.2)]
    groups = plan_groups(costs, max_batch_tokens=4096, max_edit_work=16.0)
    assert groups[0] == [2]  # no stage I: first and alone
    assert [3] == groups[-1]  # over max_edit_work: alone, last
    flat = sorted(p for g in groups for p in g)
    assert flat == [0, 1, 2, 3, 4]
    for g in groups:  # padded rows x longest prompt within the cap
        assert len(g) * max(costs[p][1] for p in g) <= 4096 or len(g) == 1
    assert [0, 4] in groups  # close works share a batch
    assert plan_groups([(0, 5000, 1, 0.0), (1, 5000, 1, 0.0)], 4096, 16.0) == [[0], [1]]


def test_brought_thought_is_measured_at_a_bounded_size(monkeypatch):
    import g2u.measures as fid

    seen = []
    real = fid.structural_similarity_index_measure
    monkeypatch.setattr(fid, "structural_similarity_index_measure",
                        lambda a, b, **k: (seen.append(tuple(a.shape)), real(a, b, **k))[1])
    out = fid.edit_measures(_img(size=(600, 400)), Image.new("RGB", (4096, 4096), (1, 2, 3)))
    assert seen[-1][2] * seen[-1][3] <= fid.MEASURE_MAX_PIXELS and 0 <= out["ssim"] <= 1
    assert fid.measure_size((512, 512)) == (512, 512)  # a generated thought is measured as before
    assert min(fid.measure_size((9, 300))) >= fid.MEASURE_MIN_SIDE


def test_deadline_interrupts_a_prefill_between_layers(demo):
    """A deadline already passed stops generate() inside the first forward pass (before any token)."""
    from g2u.backends.qwen_vl import generate_answers
    from g2u.deadline import DeadlineExceeded, clock, deadline
    from g2u.schema import answer_params

    model, processor = demo.backend.answer_model, demo.backend.pipe.processor
    with deadline(clock() - 1), pytest.raises(DeadlineExceeded) as info:
        generate_answers(model, processor, [[_img(), "What is it?"]], answer_params(max_new_tokens=4))
    assert "prefill" in str(info.value)
    assert generate_answers(model, processor, [[_img(), "What is it?"]], answer_params(max_new_tokens=2))


# ---------------------------------------------------------------- 4. cache
def test_a_cache_that_cannot_write_serves_the_answer_and_says_so(tmp_path, monkeypatch):
    from g2u.serving import CachePrivacy
    from g2u.thought_cache import ThoughtCache

    cache = ThoughtCache(tmp_path / "cache")
    pipe = echo_pipeline(thought_cache=cache)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache._store, "set", full)
    [out] = run_batch(pipe, [RawItem({"question": "q?", "steps": 2}, _img())])
    assert out.status == 200 and out.result.answer
    body = out.result.to_dict()
    CachePrivacy().apply(body, out.result.thought)
    assert body["edit"]["cache_write"] == {"stored": False, "reason": "disk full"}
    assert len(cache) == 0


def test_cache_hits_are_not_told_to_clients_unless_configured(tmp_path):
    from g2u.serving import CachePrivacy
    from g2u.thought_cache import ThoughtCache

    pipe = echo_pipeline(thought_cache=ThoughtCache(tmp_path / "cache"))
    bodies = []
    for _ in range(2):  # the second is a hit
        [out] = run_batch(pipe, [RawItem({"question": "q?", "steps": 2}, _img())])
        body = out.result.to_dict()
        CachePrivacy().apply(body, out.result.thought)
        bodies.append(body)
    assert out.result.thought.edit.cached is True  # it was a hit ...
    for body in bodies:  # ... and neither response says so
        assert "cached" not in body["edit"] and "cache" not in body["timings_ms"] and "edit" in body["timings_ms"]
    shown = out.result.to_dict()
    CachePrivacy(report_hits=True).apply(shown, out.result.thought)
    assert shown["edit"]["cached"] is True
    assert CachePrivacy.from_setting({"dir": "x", "report_hits": True}).report_hits is True
    with pytest.raises(ValueError):
        CachePrivacy.from_setting({"dir": "x", "report_hits": "yes"})


# ---------------------------------------------------------------- 4. leak guard
@pytest.mark.parametrize("spelling", ["make the \u0441ircl\u0435 stand out",  # Cyrillic с, е
                                      "make the ｃｉｒｃｌｅ stand out",  # full-width
                                      "make the ci\u200brc\u200dle stand out",  # zero-width space / joiner
                                      "make the ci\u0301rcle\u0308 stand out"])  # combining accents
def test_leak_guard_normalises_unicode_before_it_compares(spelling):
    assert normalize(spelling).lower().split()[2] == "circle"
    assert find_leak(spelling, ["circle", "square"]) is not None
    pipe = echo_pipeline()
    req = parse_request({"question": "Which shape?", "options": ["circle", "square"],
                         "candidate_prompts": [spelling]}, image=_img())
    with pytest.raises(InputError) as info:
        pipe.plan(req)
    assert info.value.field == "candidate_prompts[0]"


def test_leak_guard_still_passes_clean_prompts():
    assert find_leak("sharpen the edges and fix the exposure", ["circle", "square"]) is None
    assert find_leak("zoom on the détail", ["red", "blue"]) is None


# ---------------------------------------------------------------- 6. each item's own answer
ITEMS = [((220, 20, 20), "What colour is it?", "baseline"), ((20, 200, 20), "Is it round?", "g2u"),
         ((20, 20, 220), "How many are there?", "replace"), ((200, 200, 20), "Why is it here?", "textual_cot"),
         ((90, 10, 160), "Where is the cat?", "g2u")]


def _own_batch(pipe):
    raws = [RawItem({"question": q, "mode": m, "steps": 2, "id": f"i{k}"}, _img(c))
            for k, (c, q, m) in enumerate(ITEMS)]
    return run_batch(pipe, raws)


def test_batch_mates_get_their_own_answers_through_the_backend():
    pipe = echo_pipeline()
    outs = _own_batch(pipe)
    assert [o.status for o in outs] == [200] * len(ITEMS)
    assert [o.result.id for o in outs] == [f"i{k}" for k in range(len(ITEMS))]
    assert max(pipe.backend.calls) >= 2  # really batched
    base = outs[0].result.answer
    assert base == answer_for([_img(ITEMS[0][0])], outs[0].request.question.splitlines()[0])
    # g2u: its own image, then its own thought; replace: its own thought only
    g2u = outs[1].result
    assert g2u.answer.startswith(colour_tag(_img(ITEMS[1][0])) + "+" + colour_tag(g2u.thought.image))
    assert outs[2].result.answer.startswith(colour_tag(outs[2].result.thought.image) + "|")
    answers = [o.result.answer for o in outs]
    assert len(set(answers)) == len(answers)
    baseline_like = [0, 1, 3, 4]  # modes whose first image is the input
    assert not own_answer_problems([answers[k] for k in baseline_like], [_img(ITEMS[k][0]) for k in baseline_like],
                                   [ITEMS[k][1] for k in baseline_like])


def test_the_own_answer_check_fails_when_a_batch_is_answered_in_reverse(monkeypatch):
    """The check above catches the bug the red team planted (answers reversed within a batch)."""
    pipe = echo_pipeline()
    real = pipe.backend.answer
    monkeypatch.setattr(pipe.backend, "answer", lambda contents, params: list(reversed(real(contents, params))))
    outs = _own_batch(pipe)
    answers = [o.result.answer for o in outs if o.ok]
    assert own_answer_problems(answers, [_img(c) for c, _, _ in ITEMS], [q for _, q, _ in ITEMS])


# ---------------------------------------------------------------- 6. the resume key
def _resume_run(tmp_path, pipe, **config_kwargs):
    from g2u.eval.datasets import Sample
    from g2u.eval.predictors import LocalPredictor
    from g2u.eval.runner import EvalConfig, evaluate

    path = tmp_path / "img.png"
    _img().save(path)
    samples = [Sample("s1", "What colour?", ["red", "blue"], "A", "c", "mcq", image_path=str(path))]
    protocol = config_kwargs.pop("protocol", "g2u_v1")
    config = EvalConfig.create(("baseline",), protocol=protocol, **config_kwargs)
    return evaluate(samples, LocalPredictor(pipe), config, tmp_path / "out", progress=False)


def test_resume_reuses_only_predictions_of_the_same_model_protocol_and_fields(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "weights.bin").write_bytes(b"\0" * 1000)

    def pipe(backend="echo", dtype="float32"):
        p = echo_pipeline()
        p.backend.info = replace(p.backend.info, backend=backend, checkpoint=str(ckpt), dtype=dtype)
        return p

    first = _resume_run(tmp_path, pipe(), max_new_tokens=8)
    assert first.computed == 1
    assert _resume_run(tmp_path, pipe(), max_new_tokens=8).computed == 0  # the same: resumed
    changes = {"request field": lambda: _resume_run(tmp_path, pipe(), max_new_tokens=9),
               "protocol": lambda: _resume_run(tmp_path, pipe(), max_new_tokens=8, protocol="vlmevalkit"),
               "backend": lambda: _resume_run(tmp_path, pipe(backend="echo2"), max_new_tokens=8),
               "dtype": lambda: _resume_run(tmp_path, pipe(dtype="bfloat16"), max_new_tokens=8),
               "quantization": lambda: _resume_run(tmp_path, pipe(dtype="float32+int8"), max_new_tokens=8)}
    for what, run in changes.items():
        assert run().computed == 1, what
    (ckpt / "weights.bin").write_bytes(b"\1" * 1000)  # same path, same size, other weights
    assert _resume_run(tmp_path, pipe(), max_new_tokens=8).computed == 1, "checkpoint content"
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len({r["config_key"] for r in records}) == len(records) == 7
