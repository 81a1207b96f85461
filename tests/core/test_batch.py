"""The one batch path: per-item outcomes, bad input isolated as 4xx, a failing batched stage retried item
by item so only the culprit fails, and the backend's own fields and modes checked per item."""

from __future__ import annotations

import io

import pytest

from g2u.backends import load_backend
from g2u.batch import RawItem, run_batch
from g2u.errors import ModelError
from g2u.pipeline import G2UPipeline


@pytest.fixture(scope="module")
def qwen(demo_root):
    return G2UPipeline(load_backend(str(demo_root / "qwen_image_edit")))


class FailingOn:
    """Wraps a backend; ``edit`` fails whenever the batch holds the poisoned prompt's image."""

    def __init__(self, inner, poisoned_size):
        self.inner, self.poisoned_size, self.edit_calls = inner, poisoned_size, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def edit(self, images, prompts, params):
        self.edit_calls += 1
        if any(img.size == self.poisoned_size for img in images):
            raise ModelError("the editor blew up on this picture")
        return self.inner.edit(images, prompts, params)


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_bad_items_get_their_own_4xx_and_good_ones_answers(qwen, rgb_image):
    raws = [RawItem({"question": "What is it?", "steps": 2}, rgb_image),
            RawItem({"question": "What is it?", "steps": 0}, rgb_image),
            RawItem({"question": "What is it?", "steps": 2}, b"not an image"),
            RawItem({"question": "What is it?", "mode": "vae_concat"}, rgb_image),
            RawItem({"question": "What is it?", "think": True, "steps": 2}, rgb_image),
            RawItem({"question": "What is it?", "mode": "baseline", "id": "b1"}, _png(rgb_image))]
    out = run_batch(qwen, raws)
    assert [o.status for o in out] == [200, 400, 400, 400, 400, 200]
    assert [o.error["field"] for o in out if not o.ok] == ["steps", "image", "mode", "think"]
    assert "qwen_image_edit" in out[4].error["reason"]
    assert out[0].result.thought is not None and out[5].result.id == "b1"


def test_a_failing_batched_stage_fails_only_the_culprit(demo_root, rgb_image):
    inner = load_backend(str(demo_root / "qwen_image_edit"))
    culprit = rgb_image.resize((50, 40))
    backend = FailingOn(inner, culprit.size)
    pipe = G2UPipeline(backend)
    raws = [RawItem({"question": "q", "steps": 2, "seed": i}, img) for i, img in enumerate([rgb_image, culprit,
                                                                                              rgb_image])]
    out = run_batch(pipe, raws)
    assert [o.status for o in out] == [200, 500, 200]
    assert out[1].error == {"error": "model_error", "reason": "the editor blew up on this picture"}
    assert backend.edit_calls == 4  # the batch, then each item alone
    alone = run_batch(G2UPipeline(inner), [raws[2]])[0]
    assert alone.result.answer == out[2].result.answer  # the retried item is the same as unbatched


def test_bagel_fields_and_vae_concat_go_through(demo_root, rgb_image):
    pipe = G2UPipeline(load_backend(str(demo_root / "bagel")))
    raws = [RawItem({"question": "q", "mode": "vae_concat", "steps": 3, "cfg_interval": "0.2,1.0",
                     "cfg_renorm_type": "global", "timestep_shift": 2.0}, rgb_image),
            RawItem({"question": "q", "mode": "g2u", "steps": 3, "cfg_renorm_min": 2}, rgb_image)]
    ok, bad = run_batch(pipe, raws)
    assert ok.ok and ok.result.thought.edit.options["cfg_interval"] == (0.2, 1.0)
    assert bad.status == 400 and bad.error["field"] == "cfg_renorm_min"


def test_evaluation_runs_vae_concat_on_bagel(demo_root, tmp_path, rgb_image):
    """`-e evaluate -P backend=bagel -P modes=baseline,vae_concat` used to crash: vae_concat got no thought."""
    from g2u.eval.datasets import Sample
    from g2u.eval.predictors import LocalPredictor
    from g2u.eval.runner import EvalConfig, evaluate

    rgb_image.save(tmp_path / "i.png")
    samples = [Sample("s1", "What is in the middle?", ["a square", "a circle"], "A", "c", "mcq",
                      image_path=str(tmp_path / "i.png"))]
    predictor = LocalPredictor(G2UPipeline(load_backend(str(demo_root / "bagel"))))
    config = EvalConfig.create(("baseline", "vae_concat", "g2u"), steps=3)
    result = evaluate(samples, predictor, config, tmp_path / "out", progress=False)
    by_mode = {r["mode"]: r for r in result.records}
    assert set(by_mode) == {"baseline", "vae_concat", "g2u"} and not any(r.get("error") for r in result.records)
    assert by_mode["vae_concat"]["thought_path"] == by_mode["g2u"]["thought_path"]  # one thought per sample
