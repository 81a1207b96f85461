"""The answer judge, used the way VLMEvalKit uses it: only for what exact matching cannot read, with the
reference's exact prompts (``tests/golden/vlmevalkit/judge_prompts.json``, made by running its own
``extract_answer_from_item`` prompt builders and ``YOrN_match_prompt`` outside the repo:
scripts/vlmevalkit_golden/gen_judge_prompts.py), its tries and fallback, cached, recorded per sample.
The judge is the real ``openai`` client talking to the in-process fake server. The prompt golden was shown to
fail on two plausible bugs: dropping the "?" the reference appends to the question, and giving the judge the
hint-joined question instead of the question column."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import openai
import pytest
from PIL import Image

from g2u.errors import InputError
from g2u.eval.answer_judge import (
    ExactMatching,
    OpenAIAnswerJudge,
    extract_record,
    fallback_pick,
    make_answer_judge,
    make_open_judge,
)
from g2u.eval.datasets import LETTERS, Sample, load_dataset
from g2u.eval.protocols import load_protocol
from g2u.eval.report import MixedJudges, compute_metrics
from g2u.eval.runner import EvalConfig, evaluate, read_records
from g2u.testing.fake_http import FakeHTTPServer, error

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "golden" / "vlmevalkit" / "judge_prompts.json").read_text())
PROTOCOL = load_protocol("vlmevalkit")


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _load(tmp_path: Path, name: str, row: dict) -> Sample:
    """A golden row as a one-row VLMEvalKit TSV, read by our loader (so the judge sees what a run sees)."""
    row = {k: v for k, v in row.items() if v is not None and k != "prediction"}
    row["image"] = _png()
    folder = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / f"{name}.tsv").write_text("\t".join(row) + "\n" + "\t".join(str(v) for v in row.values()) + "\n")
    [sample] = load_dataset(folder / f"{name}.tsv")
    return sample


def judge(server: FakeHTTPServer, cache_dir: Path | None = None, model: str = "gpt-4o-mini") -> OpenAIAnswerJudge:
    client = openai.OpenAI(api_key="test", base_url=server.base_url, max_retries=0, timeout=10)
    return OpenAIAnswerJudge(PROTOCOL, model, server.base_url, cache_dir=cache_dir, client=client)


def _text(request: dict) -> str:
    [message] = request["body"]["messages"]
    [part] = message["content"]
    return part["text"]


def test_the_judge_sends_the_references_exact_prompt_for_mcq_and_yesno_rows(tmp_path):
    cases = [(_load(tmp_path, "MMBench_DEV_EN", e["row"]), e) for e in GOLDEN["mcq"]]
    cases += [(_load(tmp_path, "MME", e["row"]), e) for e in GOLDEN["yesno"]]
    assert [s.answer_kind for s, _ in cases] == ["mcq"] * 3 + ["yesno"]
    assert cases[0][0].hint  # the MCQ row has a hint: the judge reads the question without it, as the reference
    with FakeHTTPServer([{"content": "A"}, {"content": "B"}, {"content": "A"}, {"content": "Yes"}]) as fake:
        j = judge(fake)
        records = [extract_record({"id": s.id, "mode": "baseline", "prediction": e["row"]["prediction"]}, s, j)
                   for s, e in cases]
        sent = [_text(r) for r in fake.requests]
        bodies = [r["body"] for r in fake.requests]
    assert sent == [e["prompt"] for _, e in cases]  # the reference's strings, byte for byte
    assert all(b["model"] == "gpt-4o-mini" and b["temperature"] == 0 and b["max_tokens"] == 2048 for b in bodies)
    assert [r["extracted"] for r in records] == ["A", "B", "A", "yes"]
    assert {r["extraction"] for r in records} == {"judge"}
    assert records[0]["answer_judge"] == j.label == f"openai:gpt-4o-mini@{fake.base_url}"
    assert [r["correct"] for r in records] == [True, True, True, True]


def test_tries_and_the_fallback_rule_are_the_references():
    assert len(PROTOCOL.judge.mcq.temperatures) == GOLDEN["tries"]["mcq"] == 3
    assert len(PROTOCOL.judge.yesno.temperatures) == GOLDEN["tries"]["yesno"] == 5
    for entry in GOLDEN["mcq"]:
        options = [entry["row"][c] for c in LETTERS if entry["row"].get(c) is not None]
        picks = {fallback_pick(options, f"s{i}", "x") for i in range(200)}
        assert picks == {None if c == "Z" else c for c in entry["fallback_options"]}  # the options and Z


def _mcq(sid="q1", answer="B") -> Sample:
    return Sample(sid, "Colour?", ["red", "blue", "green"], answer, "c", "mcq", image_path="-")


def test_exact_matching_reads_first_a_refusal_is_read_and_only_the_unreadable_is_judged():
    with FakeHTTPServer([{"content": "B"}]) as fake:
        j = judge(fake)
        plain = extract_record({"id": "q1", "prediction": "B"}, _mcq(), j)
        refusal = extract_record({"id": "q1", "prediction": "Cannot determine the answer"}, _mcq(), j)
        assert fake.hits == 0  # read by the rules: no judge call
        unread = extract_record({"id": "q1", "prediction": "B or C, hard to say"}, _mcq(), j)
        assert fake.hits == 1
    assert (plain["extraction"], plain["extracted"], plain["correct"]) == ("exact", "B", True)
    assert (refusal["extraction"], refusal["extracted"], refusal["correct"]) == ("exact", None, False)
    assert (unread["extraction"], unread["extracted"], unread["correct"]) == ("judge", "B", True)
    assert unread["judge_log"] == ["B"]
    offline = extract_record({"id": "q1", "prediction": "B or C, hard to say"}, _mcq(), ExactMatching())
    assert (offline["extraction"], offline["extracted"], offline["answer_judge"]) == ("unreadable", None,
                                                                                     "exact_matching")


def test_unreadable_replies_are_asked_again_then_the_fallback_seeded_per_sample():
    with FakeHTTPServer([{"content": "I cannot tell."}]) as fake:
        j = judge(fake)
        first = extract_record({"id": "q1", "prediction": "B or C"}, _mcq(), j)
        assert fake.hits == 3
        yesno = Sample("q2", "Is it dark?", None, "yes", "c", "yesno", image_path="-")
        yn = extract_record({"id": "q2", "prediction": "yes and no"}, yesno, j)
        temperatures = [r["body"]["temperature"] for r in fake.requests[3:]]
    assert first["extraction"] == "judge_fallback" and len(first["judge_log"]) == 3
    assert first["extracted"] in ("A", "B", "C", None)
    assert temperatures == [0, 0.5, 1.0, 1.5, 2.0]  # YOrN_auxeval: 5 tries at 0.5 * i
    assert (yn["extraction"], yn["extracted"], yn["correct"]) == ("judge_fallback", None, False)  # "Unknown"
    # a rerun (a new judge, no cache) picks the same; other samples do not all get one pick
    with FakeHTTPServer([{"content": "I cannot tell."}]) as fake:
        again = extract_record({"id": "q1", "prediction": "B or C"}, _mcq(), judge(fake))
    assert again["extracted"] == first["extracted"]
    assert len({fallback_pick(["a", "b", "c"], f"id{i}", "B or C") for i in range(40)}) > 2


def test_api_errors_are_tries_and_their_fallback_is_not_cached(tmp_path):
    with FakeHTTPServer([error(500), error(500), error(500), {"content": "C"}]) as fake:
        j = judge(fake, cache_dir=tmp_path / "cache")
        failed = extract_record({"id": "q1", "prediction": "B or C"}, _mcq(answer="C"), j)
        assert failed["extraction"] == "judge_fallback" and failed["judge_log"][0].startswith("API error")
        retried = extract_record({"id": "q1", "prediction": "B or C"}, _mcq(answer="C"), j)
        assert fake.hits == 4  # asked again: an outage never sticks
    assert (retried["extraction"], retried["extracted"], retried["correct"]) == ("judge", "C", True)


def test_judgements_are_cached_on_disk_per_judge_model(tmp_path):
    with FakeHTTPServer([{"content": "A"}]) as fake:
        extract_record({"id": "q1", "prediction": "B or C"}, _mcq(), judge(fake, tmp_path / "c"))
        hit = extract_record({"id": "q1", "prediction": "B or C"}, _mcq(), judge(fake, tmp_path / "c"))
        assert fake.hits == 1 and hit["extracted"] == "A"  # a new process: the disk cache answers
        extract_record({"id": "q1", "prediction": "B or C"}, _mcq(), judge(fake, tmp_path / "c", model="other"))
        assert fake.hits == 2  # another judge model is another judgement


def test_settings_are_checked_before_any_prediction(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert isinstance(make_answer_judge("exact_matching", PROTOCOL), ExactMatching)
    for spec, protocol, words in (("gpt4", PROTOCOL, "unknown answer judge"),
                                  ("openai", load_protocol("g2u_v1"), "exact matching only"),
                                  ("openai", PROTOCOL, "OPENAI_API_KEY")):
        with pytest.raises(InputError) as err:
            make_answer_judge(spec, protocol)
        assert err.value.field == "answer_judge" and words in str(err.value)
    fake = FakeHTTPServer()
    fake.close()  # nothing listens: the probe fails, named
    with pytest.raises(InputError) as err:
        judge(fake).check()
    assert err.value.field == "answer_judge" and "does not answer" in str(err.value)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("G2U_JUDGE_MODEL", "judge-7b")
    assert make_answer_judge("openai", PROTOCOL).label == "openai:judge-7b@http://127.0.0.1:9/v1"
    assert make_answer_judge("openai:m2", PROTOCOL).model == "m2"
    assert make_open_judge("openai") is None  # MM-Vet's grader needs a key: the rule score stands, judge none


class Scripted:
    label = "scripted"

    def __init__(self, answers):
        self.answers = answers

    def predict(self, samples, modes, config, thought_dir, reuse):
        return [{"id": s.id, "mode": m, "prediction": self.answers[s.id]} for s, ms in zip(samples, modes) for m in ms]


def test_a_run_reads_with_one_judge_and_a_resume_with_another_rereads(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "i.png")
    samples = [Sample("q1", "Colour?", ["red", "blue"], "B", "c", "mcq", image_path=str(tmp_path / "i.png")),
               Sample("q2", "Dark?", None, "yes", "c", "yesno", image_path=str(tmp_path / "i.png"))]
    predictor = Scripted({"q1": "maybe B or A", "q2": "yes, no"})
    config = EvalConfig(modes=("baseline",))
    out = tmp_path / "out"
    with FakeHTTPServer([{"content": "Yes B"}]) as fake:  # judged in threads: one reply both read
        j = judge(fake)
        first = evaluate(samples, predictor, config, out, progress=False, answer_judge=j)
    assert {r["id"]: (r["extraction"], r["correct"]) for r in first.records} == {"q1": ("judge", True),
                                                                                 "q2": ("judge", True)}
    flat = compute_metrics(first.records)["flat"]
    assert flat["acc/baseline/overall"] == 1.0 and flat["n_judged/baseline"] == 2
    assert compute_metrics(first.records)["judges"]["answer_judge"] == j.label

    again = evaluate(samples, predictor, config, out, progress=False)  # resumed, exact matching this time
    assert again.computed == 0
    assert {r["answer_judge"] for r in again.records} == {"exact_matching"}
    assert compute_metrics(again.records)["flat"]["acc/baseline/overall"] == 0.0
    assert {r["extraction"] for r in read_records(out / "predictions.jsonl")} == {"unreadable"}  # file rewritten

    mixed = [dict(first.records[0], mode="g2u"), *again.records]
    with pytest.raises(MixedJudges, match="answer_judge"):
        compute_metrics(mixed)  # modes read by different judges never share a table


def test_the_run_names_its_judges_in_mlflow_params_and_metrics_json(tmp_path, monkeypatch):
    """``mlflow_project.evaluate.run`` in process (a scripted predictor): the answer judge reads the MCQ
    answer, MM-Vet's grader the open one, and the run and metrics.json name both judges and models."""
    import mlflow

    import mlflow_project.evaluate as ev

    Image.new("RGB", (8, 8)).save(tmp_path / "i.png")
    rows = [{"id": "m1", "image": "i.png", "question": "Colour?", "options": ["red", "blue"], "answer": "A",
             "category": "rec"},
            {"id": "o1", "image": "i.png", "question": "What is it?", "answer": "a square", "category": "rec"}]
    (tmp_path / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(ev, "make_predictor", lambda args: Scripted({"m1": "red or blue", "o1": "a box"}))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with FakeHTTPServer([{"content": "hello"}, {"content": "A"}, {"content": "0.7"}]) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        monkeypatch.setenv("G2U_JUDGE_MODEL", "judge-x")
        args = ev.build_parser().parse_args(["--benchmark", str(tmp_path / "bench.jsonl"), "--modes", "baseline",
                                             "--out-dir", str(tmp_path / "out"), "--answer-judge", "openai",
                                             "--judge", "openai"])
        flat = ev.run(args)
        texts = [_text(r) for r in fake.requests[:2]]
    assert fake.hits == 3 and texts[0] == "hello"  # the probe, the MCQ judgement, MM-Vet's grade
    assert texts[1].endswith("Question: Colour??\nOptions: There are several options: \nA. red\nB. blue\n\n"
                             "Answer: red or blue\nYour output: ")
    [run] = mlflow.search_runs(output_format="list")
    params = run.data.params
    assert params["answer_judge"] == "openai" and params["answer_judge_model"] == "judge-x"
    assert params["answer_judge_label"] == f"openai:judge-x@{fake.base_url}"
    assert params["judge_model"] == "judge-x" and params["judge_label"] == f"openai:judge-x@{fake.base_url}"
    assert params["protocol_label"] == "vlmevalkit@v1"
    assert flat["acc/baseline/overall"] == pytest.approx((1 + 0.7) / 2) and flat["n_judged/baseline"] == 1
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["judges"]["answer_judge_model"] == "judge-x" and saved["protocol"]["protocol_label"] == "vlmevalkit@v1"
    records = {r["id"]: r for r in read_records(tmp_path / "out" / "predictions.jsonl")}
    assert records["m1"]["extraction"] == "judge" and records["m1"]["answer_judge"].startswith("openai:judge-x@")
    assert records["o1"]["judge"] == 0.7 and records["o1"]["judge_model"] == params["judge_label"]


def test_scoring_a_vlmevalkit_file_with_a_judge_reads_only_its_unreadable_rows(monkeypatch):
    from g2u.eval.vlmevalkit_io import score_summary

    path = Path(__file__).resolve().parents[1] / "golden" / "vlmevalkit" / "predictions"
    path = path / "g2u-demo-baseline_MMStar.xlsx"
    plain = score_summary(path)
    with FakeHTTPServer([{"content": "hello"}, {"content": "A"}]) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        judged = score_summary(path, answer_judge="openai:judge-x")
        assert fake.hits == 2  # the probe and the file's one row exact matching cannot read
    assert plain["params"]["answer_judge"] == "exact_matching" and plain["metrics"]["n_unreadable/baseline"] == 1
    assert judged["params"]["answer_judge"] == f"openai:judge-x@{fake.base_url}"
    assert judged["metrics"]["n_judged/baseline"] == 1 and judged["metrics"]["n_unreadable/baseline"] == 0
