"""The VIEScore-style fidelity judge: the score rule, the OpenAI-compatible path against the loopback
chat-completions server (g2u.testing.fake_http) (the real `openai` client talks to it), the `self` path on a
scripted backend, the on-disk cache, and failures that never raise."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from g2u.judge import FidelityJudge, OpenAIAsker, SelfAsker, make_judge, parse_scores, viescore
from g2u.testing.fake_http import FakeHTTPServer
from g2u.types import Answer

ORIGINAL = Image.new("RGB", (40, 30), (10, 120, 200))
THOUGHT = Image.new("RGB", (40, 30), (12, 118, 190))
SC = json.dumps({"score": [8, 6], "reasoning": "followed, slightly over-edited"})
PQ = json.dumps({"score": [9, 4], "reasoning": "natural but noisy"})


@pytest.fixture
def server():
    fake = FakeHTTPServer()
    fake.script = [{"content": SC}, {"content": PQ}]
    yield fake
    fake.close()


def _openai_judge(server, cache_dir=None) -> FidelityJudge:
    return FidelityJudge(OpenAIAsker("judge-model", base_url=server.base_url, api_key="k", timeout_s=2.0), cache_dir)


def test_viescore_is_the_root_of_the_two_minima():
    assert viescore([8, 6], [9, 4]) == (6, 4, math.sqrt(24))
    assert viescore([10, 10], [0, 7])[2] == 0.0


@pytest.mark.parametrize("reply, ok", [
    ('{"score": [7, 3], "reasoning": "x"}', True),
    ('Sure! ```json\n{"score": [7, 3], "reasoning": "x"}\n```', True),
    ('{"score": [7], "reasoning": "x"}', False),
    ('{"score": [7, 11]}', False),
    ('{"score": ["7", 3]}', False),
    ("seven and three", False),
])
def test_parse_scores(reply, ok):
    if ok:
        assert parse_scores(reply) == ([7.0, 3.0], "x")
    else:
        with pytest.raises(ValueError):
            parse_scores(reply)


def test_openai_judge_shows_both_images_for_sc_and_caches_on_disk(server, tmp_path):
    judge = _openai_judge(server, tmp_path / "cache")
    result = judge(ORIGINAL, THOUGHT, "Denoise the image")
    assert (result.semantic_consistency, result.perceptual_quality) == (6.0, 4.0)
    assert result.overall == pytest.approx(math.sqrt(24), abs=1e-4) and "over-edited" in result.reason
    sc_req, pq_req = (r["body"] for r in server.requests)
    assert sc_req["model"] == "judge-model"
    sc_parts = sc_req["messages"][0]["content"]
    assert [p["type"] for p in sc_parts] == ["image_url", "image_url", "text"]
    assert sc_parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "Denoise the image" in sc_parts[2]["text"]
    assert [p["type"] for p in pq_req["messages"][0]["content"]] == ["image_url", "text"]
    # the same triple again, even from a new judge on the same folder: no request
    again = _openai_judge(server, tmp_path / "cache")(ORIGINAL, THOUGHT, "Denoise the image")
    assert again.cached and again.overall == result.overall and len(server.requests) == 2
    # another instruction is another judgement
    judge(ORIGINAL, THOUGHT, "Outpaint the image")
    assert len(server.requests) == 4


def test_a_failed_judgement_is_none_with_its_reason_and_is_not_cached(server, tmp_path):
    server.script = [{"content": "I like it"}]
    judge = _openai_judge(server, tmp_path)
    bad = judge(ORIGINAL, THOUGHT, "Denoise")
    assert bad.overall is None and bad.semantic_consistency is None and "unreadable judgement" in bad.reason
    server.script = [{"status": 500, "error": {"error": {"message": "down"}}}]
    down = judge(ORIGINAL, THOUGHT, "Denoise")
    assert down.overall is None and "judge failed" in down.reason
    server.script = [{"content": SC}, {"content": PQ}]
    assert judge(ORIGINAL, THOUGHT, "Denoise").overall is not None  # failures were not remembered


class ScriptedBackend:
    """Stands in for a backend's understanding pathway: records what it was shown."""

    info = type("Info", (), {"backend": "scripted", "checkpoint": "demo"})

    def __init__(self, *replies):
        self.replies = list(replies)
        self.seen: list[list] = []

    def answer(self, contents, params):
        self.seen.append(list(contents[0]))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return [Answer(reply)]


def test_self_judge_uses_the_backend_understanding_pathway():
    backend = ScriptedBackend(SC, PQ)
    result = make_judge("self", backend=backend)(ORIGINAL, THOUGHT, "Zoom in")
    assert result.overall == pytest.approx(math.sqrt(24), abs=1e-4) and result.judge == "self:scripted:demo"
    assert [sum(isinstance(p, Image.Image) for p in parts) for parts in backend.seen] == [2, 1]
    crashed = FidelityJudge(SelfAsker(ScriptedBackend(RuntimeError("CUDA OOM"))))(ORIGINAL, THOUGHT, "Zoom in")
    assert crashed.overall is None and "RuntimeError: CUDA OOM" in crashed.reason


def test_make_judge_names_bad_settings():
    assert make_judge("none") is None and make_judge("") is None
    with pytest.raises(ValueError, match="judge 'gpt'"):
        make_judge("gpt")
    with pytest.raises(ValueError, match="needs a backend"):
        make_judge("self")


def test_attach_judgement_to_an_evaluation_record(tmp_path):
    from g2u.judge import attach_judgement

    (tmp_path / "thoughts").mkdir()
    THOUGHT.save(tmp_path / "thoughts" / "1.png")
    judge = make_judge("self", backend=ScriptedBackend(SC, PQ))
    rec = {"id": "1", "mode": "g2u", "thought_path": "thoughts/1.png", "edit": {"prompt": "Denoise"},
           "fidelity": {"ssim": 0.9, "psnr": 30.0}}
    attach_judgement(rec, judge, ORIGINAL, tmp_path)
    assert rec["fidelity"]["ssim"] == 0.9 and rec["fidelity"]["judged"]["semantic_consistency"] == 6.0
    missing = {"id": "2", "mode": "g2u", "thought_path": "thoughts/none.png", "edit": {"prompt": "x"}}
    assert attach_judgement(missing, judge, ORIGINAL, tmp_path)["fidelity"]["judged"]["overall"] is None
    refused = {"id": "3", "mode": "g2u", "error": {"reason": "leak"}, "prediction": ""}
    assert "fidelity" not in attach_judgement(refused, judge, ORIGINAL, tmp_path)
