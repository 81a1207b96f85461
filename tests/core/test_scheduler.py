"""The step scheduler (g2u.scheduler): requests that join a running denoise at different steps get the very
thought and answer they get alone; an error or a passed deadline answers only its own request."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from g2u import deadline as _deadline
from g2u.backends import load_backend
from g2u.batch import RawItem, run_batch
from g2u.pipeline import G2UPipeline
from g2u.scheduler import StepScheduler

REQUESTS = [
    {"question": "Which shape is red?", "seed": 3, "steps": 5},
    {"question": "Is there a square?", "seed": 7, "steps": 4, "prompt": "extend the frame on both sides, please"},
    {"question": "What colour is it?", "seed": 1, "steps": 5, "text_cfg": 1.0},
    {"question": "Which shape is red?", "mode": "baseline"},
]


@pytest.fixture(scope="module")
def pipe(demo_root):
    return G2UPipeline(load_backend(str(demo_root / "qwen_image_edit")), thought_cache=None)


def _pixels(outcome) -> np.ndarray | None:
    thought = outcome.result.thought
    return None if thought is None else np.asarray(thought.image)


def _run_staggered(sched: StepScheduler, raws: list[RawItem], joins: list[int]) -> list:
    """Submit ``raws[i]`` after ``joins[i]`` boundaries, then run to the end."""
    futures, boundary = [None] * len(raws), 0
    while any(f is None for f in futures):
        for i, at in enumerate(joins):
            if futures[i] is None and at <= boundary:
                futures[i] = sched.submit(raws[i])
        sched.run_once()
        boundary += 1
    sched.drain()
    return [f.result(timeout=0) for f in futures]


def test_joining_at_different_steps_gives_the_thought_and_answer_made_alone(pipe, rgb_image):
    alone = [run_batch(pipe, [RawItem(dict(r), rgb_image)])[0] for r in REQUESTS]
    assert all(o.ok for o in alone), [o.error for o in alone]
    sched = StepScheduler(pipe, max_rows=8)
    together = _run_staggered(sched, [RawItem(dict(r), rgb_image) for r in REQUESTS], joins=[0, 2, 3, 3])
    for a, b in zip(alone, together):
        assert b.ok, b.error
        assert b.result.answer == a.result.answer
        pa, pb = _pixels(a), _pixels(b)
        assert (pa is None) == (pb is None)
        if pa is not None:  # exact on CPU fp32: each item's own encoding, noise and timesteps
            assert pa.shape == pb.shape and np.array_equal(pa, pb)
            assert b.result.thought.edit.seed == a.result.thought.edit.seed
    # the edits really shared steps: fewer batched steps than steps asked, and packs of several requests
    assert sched.steps < sum(r.get("steps", 0) for r in REQUESTS)
    assert max(o.packed for o in together[:3]) >= 2
    assert all("queue" in o.timings_ms for o in together)


def test_a_bad_item_and_a_failing_state_fail_only_their_own_request(pipe, rgb_image, monkeypatch):
    sched = StepScheduler(pipe, max_rows=8)
    real_step = sched.stepper.step

    def step(states):  # a model failure that only one request's state triggers
        if any(s.cfg == 2.5 for s in states):
            raise RuntimeError("boom")
        real_step(states)

    monkeypatch.setattr(sched.stepper, "step", step)
    raws = [RawItem({"question": ""}, rgb_image),
            RawItem({"question": "Which shape is red?", "steps": 3, "text_cfg": 2.5}, rgb_image),
            RawItem({"question": "Which shape is red?", "steps": 3, "seed": 5}, rgb_image)]
    bad, culprit, good = _run_staggered(sched, raws, joins=[0, 0, 0])
    assert bad.status == 400 and bad.error["field"] == "question"
    assert culprit.status == 500
    assert good.ok
    [alone] = run_batch(pipe, [RawItem({"question": "Which shape is red?", "steps": 3, "seed": 5}, rgb_image)])
    assert np.array_equal(_pixels(good), _pixels(alone))


def test_a_passed_deadline_answers_504_while_its_step_mates_finish(pipe, rgb_image, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(_deadline, "clock", lambda: now[0])
    sched = StepScheduler(pipe, max_rows=8)
    late = sched.submit(RawItem({"question": "Which shape is red?", "steps": 6, "timeout_s": 5}, rgb_image))
    other = sched.submit(RawItem({"question": "Which shape is red?", "steps": 6, "seed": 2}, rgb_image))
    sched.run_once()
    sched.run_once()
    now[0] = 100.0  # past the first request's own deadline
    sched.drain()
    assert late.result(timeout=0).status == 504
    assert other.result(timeout=0).ok


def test_a_backend_without_steps_edits_whole_items_with_the_same_results(pipe, rgb_image, monkeypatch):
    monkeypatch.setattr(pipe.backend, "stepper", lambda exact=True: None)
    sched = StepScheduler(pipe, max_rows=8)
    assert sched.stepper is None
    reqs = REQUESTS[:2]
    out = _run_staggered(sched, [RawItem(dict(r), rgb_image) for r in reqs], joins=[0, 1])
    for r, o in zip(reqs, out):
        [alone] = run_batch(pipe, [RawItem(dict(r), rgb_image)])
        assert o.ok and o.result.answer == alone.result.answer
        assert np.array_equal(_pixels(o), _pixels(alone))


def test_the_thread_answers_submissions_from_other_threads(pipe, rgb_image):
    sched = StepScheduler(pipe, max_rows=4).start()
    try:
        futures = [sched.submit(RawItem({"question": "Which shape is red?", "steps": 3, "seed": s}, rgb_image))
                   for s in range(3)]
        outs = [f.result(timeout=120) for f in futures]
    finally:
        sched.close()
    assert all(o.ok for o in outs)


def test_stepped_latents_are_bit_identical_to_the_item_alone(pipe, rgb_image):
    """Below the pixels: every item's final latents equal its lone run's exactly, with prompts of
    different lengths and CFG settings sharing staggered steps (the finer check a rounding bug fails)."""
    from g2u.schema import edit_params

    st = pipe.backend.stepper()
    size = pipe.backend.plan_edit_size(rgb_image.size).size
    items = [("sharpen", edit_params(size=size, steps=5, seed=0)),
             ("extend the frame to the left and right, keeping the scene", edit_params(size=size, steps=4, seed=1)),
             ("sharpen", edit_params(size=size, steps=5, seed=2, text_cfg=1.0))]

    def alone(prompt, params):
        s = st.begin(rgb_image, prompt, params)
        while not st.done(s):
            st.step([s])
        return s.latents

    ref = [alone(*item) for item in items]
    states = [st.begin(rgb_image, *items[0])]
    st.step(states)
    states.append(st.begin(rgb_image, *items[1]))
    st.step(states)
    states.append(st.begin(rgb_image, *items[2]))
    while not all(st.done(s) for s in states):
        st.step([s for s in states if not st.done(s)])
    for s, r in zip(states, ref):
        assert torch.equal(s.latents, r)
