"""Work budget, deadlines and non-finite thoughts: a costly or stuck request is refused or cut short with
its own status, and its batch-mates are answered."""

from __future__ import annotations

import itertools

import pytest

from g2u import deadline as deadline_mod
from g2u.backends import load_backend
from g2u.batch import RawItem, run_batch
from g2u.budget import WorkBudget
from g2u.pipeline import G2UPipeline


@pytest.fixture(scope="module")
def qwen(demo_root):
    return G2UPipeline(load_backend(str(demo_root / "qwen_image_edit")))


class CountingEdit:
    def __init__(self, pipe):
        self.calls = 0
        self.real = pipe.backend.edit

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


def test_over_budget_is_refused_before_any_work(qwen, rgb_image, monkeypatch):
    tight = G2UPipeline(qwen.backend, budget=WorkBudget(max_edit_work=1.0, max_decode_tokens=4096))
    spy = CountingEdit(tight)
    monkeypatch.setattr(tight.backend, "edit", spy)
    m = qwen.backend.size_multiple
    big, ok = run_batch(tight, [RawItem({"question": "q", "edit_size": f"{m * 8}x{m * 8}", "steps": 200}, rgb_image),
                                RawItem({"question": "q", "steps": 2}, rgb_image)])
    assert big.status == 422 and big.error["field"] == "edit_size"
    assert "budget of 1.0" in big.error["reason"] and "steps 200" in big.error["reason"]
    assert ok.ok and spy.calls == 1  # only the affordable item reached stage I


def test_default_budget_fits_the_paper_and_refuses_the_runaway(qwen, rgb_image):
    paper = WorkBudget.for_backend(qwen.backend.default_edit_area)
    assert paper.max_edit_work >= 30 * 2 * qwen.backend.default_edit_area / 1e6  # the paper's settings fit
    [runaway] = run_batch(qwen, [RawItem({"question": "q", "edit_size": "2048x2048", "steps": 200}, rgb_image)])
    assert 400 <= runaway.status < 500 and runaway.error["field"] == "edit_size"  # the demo's limits or the budget


def test_decode_budget_names_the_field(qwen, rgb_image):
    qwen_tight = G2UPipeline(qwen.backend, budget=WorkBudget(max_edit_work=1e9, max_decode_tokens=100))
    [out] = run_batch(qwen_tight, [RawItem({"question": "q", "mode": "textual_cot", "max_new_tokens": 64,
                                            "reasoning_tokens": 512}, rgb_image)])
    # the reasoning (512) dominates the answer (64): the error names the field to lower
    assert out.status == 422 and out.error["field"] == "reasoning_tokens" and "576" in out.error["reason"]
    [out] = run_batch(qwen_tight, [RawItem({"question": "q", "mode": "baseline", "max_new_tokens": 101}, rgb_image)])
    assert out.status == 422 and out.error["field"] == "max_new_tokens"


def test_one_step_on_qwen_is_refused(qwen, rgb_image):
    [out] = run_batch(qwen, [RawItem({"question": "q", "steps": 1}, rgb_image)])
    assert out.status == 400 and out.error["field"] == "steps" and ">= 2" in out.error["reason"]


def test_non_finite_thought_fails_the_item_clearly(qwen, rgb_image, monkeypatch):
    scheduler = qwen.backend.pipe.scheduler
    real_step = scheduler.step

    def nan_step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        out[0].fill_(float("nan"))
        return out

    monkeypatch.setattr(scheduler, "step", nan_step)
    [out] = run_batch(qwen, [RawItem({"question": "q", "steps": 2}, rgb_image)])
    assert out.status == 500 and "non-finite" in out.error["reason"]


@pytest.mark.parametrize("backend", ["qwen_image_edit", "bagel"])
def test_deadline_stops_denoising_and_spares_batch_mates(demo_root, rgb_image, monkeypatch, backend):
    """A fake clock advancing one second per reading: the 30-step edit passes its 10 s deadline mid-loop."""
    ticks = itertools.count()
    monkeypatch.setattr(deadline_mod, "clock", lambda: float(next(ticks)))
    pipe = G2UPipeline(load_backend(str(demo_root / backend)))
    slow, quick = run_batch(pipe, [RawItem({"question": "q", "steps": 30, "timeout_s": 10}, rgb_image),
                                   RawItem({"question": "q", "mode": "baseline", "max_new_tokens": 2}, rgb_image)],
                            deadline_s=1000)
    # The batched loop runs to the latest deadline of its items; the late item is then answered 504.
    assert slow.status == 504 and "stage I" in slow.error["reason"]
    assert quick.ok and isinstance(quick.result.answer, str)
    [alone] = run_batch(pipe, [RawItem({"question": "q", "steps": 30, "timeout_s": 10}, rgb_image)], deadline_s=1000)
    assert alone.status == 504 and "denoising" in alone.error["reason"]  # stopped between denoising steps
