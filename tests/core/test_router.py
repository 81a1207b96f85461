"""The router (writer: route): question type → library prompt, from a versioned, learned table."""

from __future__ import annotations

import pytest

from g2u.backends import load_backend
from g2u.batch import RawItem, outcome_body, run_batch
from g2u.pipeline import G2UPipeline
from g2u.prompts import default_library
from g2u.router import Route, RouteTable, learn, question_type

FAST = {"steps": 2, "max_new_tokens": 3}


@pytest.mark.parametrize("question, qtype", [
    ("How many dogs are there?", "count"), ("What colour is the car?", "color"),
    ("What does the sign say?", "text"), ("What is to the left of the cup?", "position"),
    ("Is there a cat?", "yes_no"), ("Why is the man smiling?", "other"),
])
def test_question_types(question, qtype):
    assert question_type(question) == qtype


def test_shipped_table_is_versioned_and_names_library_prompts():
    table = RouteTable.load(library=default_library())
    assert table.version and table.source
    assert set(table.routes) <= {"count", "color", "text", "position", "yes_no", "other"}


def test_bad_tables_are_refused():
    lib = default_library()
    with pytest.raises(ValueError, match="not in the prompt library"):
        RouteTable.from_dict({"version": "1", "default": {"family": "enhancement", "prompt_name": "nope"}}, library=lib)
    with pytest.raises(ValueError, match="is a enhancement prompt"):
        RouteTable.from_dict({"version": "1", "default": {"family": "extension", "prompt_name": "denoise"}},
                             library=lib)
    with pytest.raises(ValueError, match="unknown question type"):
        RouteTable.from_dict({"version": "1", "default": {"family": "enhancement", "prompt_name": "denoise"},
                              "routes": {"weather": {"family": "enhancement", "prompt_name": "denoise"}}})


def test_route_writer_uses_the_table(demo_root, rgb_image):
    table = RouteTable("9", "test", Route("enhancement", "denoise"),
                       {"count": Route("extension", "isolate_subject")})
    pipe = G2UPipeline(load_backend(str(demo_root / "qwen_image_edit")), routes=table)
    outs = run_batch(pipe, [RawItem({"question": q, "writer": "route", **FAST}, rgb_image)
                            for q in ("How many squares?", "Why?")])
    bodies = [outcome_body(o) for o in outs]
    assert [b["edit"]["prompt_name"] for b in bodies] == ["isolate_subject", "denoise"]
    assert all(b["edit"]["writer"] == "route" for b in bodies)
    [bad] = run_batch(pipe, [RawItem({"question": "Why?", "writer": "route", "prompt_name": "denoise"}, rgb_image)])
    assert bad.status == 400 and bad.error["field"] == "writer"


def _rec(i, mode, correct, name=None, question="How many cats?"):
    edit = {"prompt_name": name, "writer": "library"} if name else None
    return {"id": str(i), "mode": mode, "correct": correct, "question": question, "edit": edit}


def test_learning_picks_the_prompt_with_the_largest_gain():
    lib = default_library()
    records = []
    for i in range(10):
        records.append(_rec(i, "baseline", i < 3))                      # baseline 30 %
        records.append(_rec(i, "g2u", i < 5, "isolate_subject"))         # +20 pts
        records.append(_rec(i, "g2u", i < 4, "denoise"))                 # +10 pts
        records.append(_rec(100 + i, "baseline", i < 8, question="Why?"))
        records.append(_rec(100 + i, "g2u", i < 6, "denoise", question="Why?"))  # a loss: no route
    table = learn(records, lib, version="2", source="run abc", min_n=5)
    assert table.routes["count"].prompt_name == "isolate_subject"
    assert table.routes["count"].delta == pytest.approx(0.2) and table.routes["count"].n == 10
    assert "other" not in table.routes
    again = RouteTable.from_dict(table.to_dict(), library=lib)
    assert again.routes["count"].prompt_name == "isolate_subject" and again.version == "2"
    assert learn(records, lib, "3", "x", min_n=11).routes == {}
