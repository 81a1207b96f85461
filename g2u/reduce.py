"""Reduce: from the loop's thoughts and answers to one ``G2UResult`` per request — a candidate picked by
the request's selection policy, the gate's answer where it fired, the timings gathered."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from g2u.answer_prompt import answer_prompt_record
from g2u.plan import EditJob, RequestPlan
from g2u.results import G2UResult
from g2u.selection import Candidate, Judge, candidate_dicts, select
from g2u.types import Answer, EditOutput, Thought


def thought_of(job: EditJob, out: EditOutput, measures: dict[str, float], edit_ms: float,
               measure_ms: float) -> Thought:
    """One made thought with its record and timings (a cache hit reports its lookup, not an edit)."""
    record = replace(job.record, plan=out.plan, cached=out.cached)
    timings = {"write_prompt": job.write_ms}
    timings.update({"cache": out.cache_ms or 0.0} if out.cached else {"edit": edit_ms})
    timings["measures"] = measure_ms
    return Thought(image=out.image, edit=record, measures=measures, timings_ms=timings)


def gather(plan: RequestPlan, candidates: list[Thought]) -> Thought:
    """A request's thought: its first candidate, carrying every candidate (selection happens in stage II)."""
    return replace(candidates[0], candidates=candidates if len(candidates) > 1 else None, gate=plan.gated)


def result(plan: RequestPlan, thought: Thought | None, answers: dict[int | None, Answer], reasoning: str | None,
           stage_ms: dict[str, float], model: dict[str, Any], judge: Judge | None) -> G2UResult:
    """The result of one request from what the loop made for it. ``answers`` by candidate (None: its one
    answer, -1: the baseline's); ``stage_ms``: the batch's stage-II times (``reasoning``, ``understand``)."""
    req = plan.request
    timings = dict(thought.timings_ms) if thought else {}
    gate = plan.gated.to_dict() if plan.gated is not None else None
    if plan.gated is not None:
        timings["gate"] = plan.gated.ms
    extra: dict[str, Any] = {"candidates": None, "selection": None}
    stage2 = None
    if plan.fired:
        answer = plan.gated.baseline.text
    elif thought is not None and thought.candidates:
        answer, thought, extra = _select(plan, thought.candidates, answers, judge)
        stage2 = answers[0].stage2
        timings["understand"] = stage_ms["understand"]
    else:
        answer, stage2 = answers[None].text, answers[None].stage2
        if reasoning is not None:
            timings["reasoning"] = stage_ms["reasoning"]
        timings["understand"] = stage_ms["understand"]
    timings = {k: round(v, 2) for k, v in timings.items()}
    timings["total"] = round(sum(timings.values()), 2)
    return G2UResult(answer=answer, mode=req.mode, model=model, timings_ms=timings, thought=thought,
                     reasoning=reasoning, id=req.id, gate=gate, layout=req.layout if plan.needs_thought else None,
                     stage2=stage2, answer_prompt=answer_prompt_record(req, thought), **extra)


def _select(plan: RequestPlan, cands: list[Thought], answers: dict[int | None, Answer], judge: Judge | None
            ) -> tuple[str, Thought | None, dict[str, Any]]:
    """Apply the request's selection policy; returns (answer, chosen thought or None, result fields)."""
    req = plan.request
    policy = req.strategy.selection
    scored = [Candidate(c, answers[k]) for k, c in enumerate(cands)]
    if policy == "judge":
        for c in scored:
            c.judge = judge(req.image, c.thought.image, c.thought.edit.prompt)
    baseline = plan.gated.baseline if plan.gated is not None else answers.get(-1)
    choice = select(policy, scored, baseline)
    selection = {"policy": policy, "chosen": choice.index, "note": choice.note}
    if choice.votes:
        selection["votes"] = choice.votes
    if baseline is not None:
        selection["baseline_answer"] = baseline.text
    chosen = cands[choice.index] if choice.index is not None else None
    return choice.answer, chosen, {"candidates": candidate_dicts(scored, choice), "selection": selection}
