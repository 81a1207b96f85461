"""Prompt parity with the references. ``tests/golden/vlmevalkit/prompts.json`` holds the exact strings
VLMEvalKit's own ``build_prompt`` (HEAD e8e78f05 and the paper's fork d10606c8) produced for a few rows of each
dataset layout, ``prompts_bagel.json`` those of BAGEL's MMBench script (scripts/vlmevalkit_golden/ ran them
outside the repo). Each row goes through our loader (a VLMEvalKit TSV) and the named protocol."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from g2u.answer_prompt import format_question
from g2u.errors import InputError
from g2u.eval.datasets import LETTERS, load_dataset
from g2u.eval.protocols import load_protocol, protocol_names

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "vlmevalkit"


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


IMG = _png()


def _golden(name: str) -> list[tuple[str, dict]]:
    data = json.loads((GOLDEN / name).read_text())
    return [(layout, entry) for layout, entries in data.items() for entry in entries]


def _sample(tmp_path: Path, entry: dict):
    """The golden row as a one-row VLMEvalKit TSV named after its dataset, loaded by our loader."""
    row = {k: v for k, v in entry["row"].items() if v is not None}
    row["image"] = IMG
    header = list(row)
    folder = tmp_path / f"{entry['source']}-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    path = folder / f"{entry['dataset']}.tsv"
    esc = {k: str(v).replace("\n", "\\n") for k, v in row.items()}
    path.write_text("\t".join(header) + "\n" + "\t".join(esc[h] for h in header) + "\n")
    [sample] = load_dataset(path)
    # TSV cells cannot hold a newline: put the golden's multi-line texts back as they are
    sample.raw_question = entry["row"]["question"] if sample.hint else None
    sample.question = entry["row"]["question"] if not sample.hint else sample.question
    sample.hint = entry["row"].get("hint")
    if sample.options:
        sample.options = [entry["row"][c] for c in LETTERS if entry["row"].get(c) is not None]
    if sample.hint:
        sample.question = f"Hint: {sample.hint}\nQuestion: {sample.raw_question}"
    return sample


@pytest.mark.parametrize(("layout", "entry"), _golden("prompts.json"),
                         ids=lambda v: v if isinstance(v, str) else f"{v['source']}-{v['dataset']}")
def test_vlmevalkit_protocol_builds_the_reference_prompt(tmp_path, layout, entry):
    protocol = load_protocol("vlmevalkit")
    sample = _sample(tmp_path, entry)
    assert protocol.layout_of(sample.answer_kind, sample.dataset) == layout
    assert protocol.sample_fields(sample)["prompt_text"] == entry["prompt"]


@pytest.mark.parametrize("entry", [e for _, e in _golden("prompts_bagel.json")], ids=lambda e: e["dataset"])
def test_bagel_readme_protocol_builds_bagels_mmbench_prompt(tmp_path, entry):
    sample = _sample(tmp_path, entry)
    assert load_protocol("bagel_readme").sample_fields(sample)["prompt_text"] == entry["prompt"]


@pytest.mark.parametrize(("layout", "entry"), _golden("prompts.json"),
                         ids=lambda v: v if isinstance(v, str) else f"{v['source']}-{v['dataset']}")
def test_g2u_v1_is_the_prompt_answer_prompt_built_before_protocols(tmp_path, layout, entry):
    """The old rule, written out: the loader's hint-joined question, "A. …" lines, one instruction."""
    sample = _sample(tmp_path, entry)
    tail = ("Answer with the option's letter from the given choices directly." if sample.options
            else "Answer the question using a single word or phrase.")
    assert load_protocol("g2u_v1").sample_fields(sample)["prompt_text"] == \
        f"{format_question(sample.question, sample.options)}\n{tail}"


def test_the_protocols_differ_where_the_references_do(tmp_path):
    """The three protocols give three different MCQ texts for one row (none is a copy of another)."""
    entry = next(e for layout, e in _golden("prompts.json") if layout == "mcq" and e["row"].get("hint"))
    sample = _sample(tmp_path, entry)
    texts = {name: load_protocol(name).sample_fields(sample)["prompt_text"] for name in protocol_names()}
    assert set(texts) >= {"vlmevalkit", "bagel_readme", "g2u_v1"}
    assert len(set(texts.values())) == len(texts)


@pytest.mark.parametrize(("protocol", "backend", "demo", "layout", "tokens"), [
    ("vlmevalkit", "bagel", False, "mcq", 1000),            # VLMEvalKit's BAGEL wrapper
    ("vlmevalkit", "qwen_image_edit", False, "yesno", 2048),  # its Qwen2.5-VL wrapper
    ("vlmevalkit", "bagel", True, "mcq", 32),               # demo checkpoints keep a short budget
    ("bagel_readme", "bagel", False, "yesno", 20),          # BAGEL's MME script
    ("bagel_readme", "bagel", False, "open", 1000),         # its MM-Vet script
    ("g2u_v1", "bagel", False, "mcq", 32),
])
def test_answer_budget_per_backend_and_layout(protocol, backend, demo, layout, tokens):
    assert load_protocol(protocol).max_new_tokens(layout, backend, demo) == tokens


def test_a_protocol_names_its_version_and_reference():
    protocol = load_protocol("vlmevalkit")
    assert protocol.label == "vlmevalkit@v1"
    assert protocol.reference["commit"].startswith("e8e78f05")


def test_unknown_protocol_and_bad_file_are_named(tmp_path):
    with pytest.raises(InputError, match="unknown protocol 'vlmevalkt'") as exc:
        load_protocol("vlmevalkt")
    assert exc.value.field == "protocol"
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nversion: 1\nlayouts: {mcq: {template: '{question}'}}\n"
                   "budget: {max_new_tokens: {default: 8}}\n")
    with pytest.raises(InputError, match="misses the layouts"):
        load_protocol(str(bad))


# ---------------------------------------------------------------- the stage-II prompt keeps its layout
class _Backend:
    def thought_part(self, image, mode):
        return image


def _thought(image):
    from types import SimpleNamespace

    return SimpleNamespace(image=image)


@pytest.mark.parametrize("layout", ["paper", "labelled", "multiturn"])
def test_a_protocols_text_is_the_question_and_the_layout_still_places_the_thought(layout):
    from g2u.answer_prompt import answer_contents
    from g2u.schema import parse_request

    image, thought = Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), (9, 9, 9))
    text = "Question: Which?\nOptions:\nA. x\nB. y\nPlease select the correct answer from the options above. \n"

    def request(**fields):
        return parse_request({"question": "Which?", "options": ["x", "y"], "layout": layout, **fields}, image=image)

    req = request(prompt_text=text)
    parts = answer_contents(req, _thought(thought), None, _Backend())
    texts = [p for p in parts if isinstance(p, str)]
    assert texts[-1] == text                                   # nothing appended: no second instruction
    assert not any("Answer with the option" in t for t in texts)
    assert any(p is thought for p in parts) and any(p is image for p in parts)
    if layout == "paper":
        assert parts == [image, text, thought]                 # [I, q, Î] as the paper writes it
    plain = answer_contents(request(), _thought(thought), None, _Backend())
    assert [p for p in plain if isinstance(p, str)][-1].endswith(
        "A. x\nB. y\nAnswer with the option's letter from the given choices directly.")  # without: as before


def test_a_users_budget_wins_and_an_unknown_server_keeps_its_own(tmp_path):
    from g2u.eval.runner import EvalConfig

    entry = next(e for layout, e in _golden("prompts.json") if layout == "mcq")
    sample = _sample(tmp_path, entry)
    config = EvalConfig.create(("baseline",), protocol="vlmevalkit")
    assert config.sample_fields(sample, "baseline", backend="bagel")["max_new_tokens"] == 1000
    assert config.sample_fields(sample, "baseline", backend="bagel")["prompt_text"] == entry["prompt"]
    assert "max_new_tokens" not in config.sample_fields(sample, "baseline", budget=False)
    mine = EvalConfig.create(("baseline",), protocol="vlmevalkit", max_new_tokens=7)
    assert mine.sample_fields(sample, "baseline", backend="bagel")["max_new_tokens"] == 7
    with pytest.raises(InputError, match="unknown protocol"):
        EvalConfig.create(("baseline",), protocol="nope")
    assert config.key("baseline") != EvalConfig.create(("baseline",), protocol="bagel_readme").key("baseline")
