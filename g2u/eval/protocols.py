"""Named evaluation protocols: the question text per dataset layout, the answer budget per backend, the
extraction rules and the judge, as versioned data files (``g2u/data/protocols/<name>.yaml``).

A protocol decides *what* the answer model reads as the question (VLMEvalKit's "Hint / Question / Options /
Please select…", BAGEL's InternVL2-style instruction, or this project's first prompt); the stage-II layout
(``g2u.answer_prompt``) still decides where the thought goes around it. Every run records the protocol's
name and version, so a number always says which protocol made it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from g2u.eval.datasets import LETTERS

DEFAULT_PROTOCOL = "vlmevalkit"
"""What evaluation uses unless told otherwise: the paper's harness."""
LAYOUTS = ("mcq", "yesno", "open")
"""Every protocol builds these (a sample's answer kind); datasets may map to further layouts (``kiva``)."""
EXTRACTIONS = ("vlmevalkit",)
JUDGES = ("exact_matching",)


class Layout(BaseModel):
    """How one dataset layout's question text is built: ``template`` with ``{hint}``, ``{question}`` and
    ``{options}``; ``hint`` is used only when the sample has one, ``options`` only when it has options
    (``{items}``: each option through ``option`` with ``{letter}``/``{text}``, joined by ``option_separator``)."""

    model_config = ConfigDict(extra="forbid")

    template: str
    hint: str = ""
    options: str = "{items}"
    option: str = "{letter}. {text}"
    option_separator: str = ""
    source: str = ""

    def render(self, question: str, options: Sequence[str] | None = None, hint: str | None = None) -> str:
        items = self.option_separator.join(self.option.format(letter=LETTERS[i], text=opt)
                                           for i, opt in enumerate(options or []))
        return self.template.format(hint=self.hint.format(hint=hint) if hint else "", question=question,
                                    options=self.options.format(items=items) if options else "")


class Budget(BaseModel):
    """Answer tokens: ``demo`` for demo checkpoints, then ``by_layout``, then ``by_backend``, else ``default``."""

    model_config = ConfigDict(extra="forbid")

    by_backend: dict[str, int] = Field(default_factory=dict)
    by_layout: dict[str, int] = Field(default_factory=dict)
    demo: int | None = None
    default: int


class BudgetSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decoding: str = "greedy"
    max_new_tokens: Budget


class JudgePrompt(BaseModel):
    """How an answer judge is asked about one answer kind: ``template`` with ``{question}``, ``{options}``
    (``options`` with ``{items}``, each option through ``option``) and ``{prediction}``; ``cjk_template``
    when the question holds CJK ideographs (the reference's ``cn_string``); one try per temperature, then
    ``fallback``: ``random_option`` (a seeded pick among the options and Z, "no answer") or ``unknown``."""

    model_config = ConfigDict(extra="forbid")

    template: str
    cjk_template: str | None = None
    options: str = "{items}"
    option: str = "{letter}. {text}\n"
    temperatures: list[float] = Field(min_length=1)
    fallback: Literal["random_option", "unknown"]
    source: str = ""

    def render(self, question: str, prediction: str, options: Sequence[str] | None = None) -> str:
        items = "".join(self.option.format(letter=LETTERS[i], text=opt) for i, opt in enumerate(options or []))
        cjk = self.cjk_template is not None and any("\u4e00" <= ch <= "\u9fff" for ch in question)
        template = self.cjk_template if cjk else self.template
        return template.format(question=question, options=self.options.format(items=items),
                               prediction=prediction)


class JudgeSection(BaseModel):
    """The protocol's answer judge: the default (``exact_matching``), the model the reference uses, and the
    prompts for the answer kinds a judge may read (none: this protocol reads answers by exact matching only)."""

    model_config = ConfigDict(extra="forbid")

    default: str = "exact_matching"
    reference_model: str = ""
    version: int = 1
    max_tokens: int = 2048
    mcq: JudgePrompt | None = None
    yesno: JudgePrompt | None = None

    def prompt(self, kind: str) -> JudgePrompt | None:
        return {"mcq": self.mcq, "yesno": self.yesno}.get(kind)


class Protocol(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    description: str = ""
    reference: dict[str, str] = Field(default_factory=dict)
    layouts: dict[str, Layout]
    datasets: dict[str, str] = Field(default_factory=dict)
    budget: BudgetSection
    extraction: str = "vlmevalkit"
    judge: JudgeSection = Field(default_factory=JudgeSection)

    @field_validator("layouts")
    @classmethod
    def _every_layout(cls, value: dict[str, Layout]) -> dict[str, Layout]:
        missing = [name for name in LAYOUTS if name not in value]
        if missing:
            raise ValueError(f"misses the layouts {missing}")
        return value

    @field_validator("extraction")
    @classmethod
    def _extraction(cls, value: str) -> str:
        if value not in EXTRACTIONS:
            raise ValueError(f"unknown extraction {value!r}; known: {', '.join(EXTRACTIONS)}")
        return value

    @property
    def label(self) -> str:
        """``name@vVERSION``: what runs, records and prediction files carry."""
        return f"{self.name}@v{self.version}"

    def layout_of(self, answer_kind: str, dataset: str = "") -> str:
        """The layout a sample's question is built with: its dataset's own class where the reference has
        one (``datasets``), else its answer kind."""
        special = self.datasets.get(Path(dataset).stem.lower()) if dataset else None
        if special is not None:
            return special
        return answer_kind if answer_kind in self.layouts else "open"

    def render(self, layout: str, question: str, options: Sequence[str] | None = None,
               hint: str | None = None) -> str:
        return self.layouts[layout].render(question, options, hint)

    def max_new_tokens(self, layout: str, backend: str | None = None, demo: bool = False) -> int:
        budget = self.budget.max_new_tokens
        if demo and budget.demo is not None:
            return budget.demo
        if layout in budget.by_layout:
            return budget.by_layout[layout]
        if backend in budget.by_backend:
            return budget.by_backend[backend]
        return budget.default

    def sample_fields(self, sample: Any, backend: str | None = None, demo: bool = False) -> dict[str, Any]:
        """What a sample's request carries under this protocol: the question text as the model reads it
        (``prompt_text``) and the answer budget."""
        layout = self.layout_of(sample.answer_kind, getattr(sample, "dataset", ""))
        text = self.render(layout, sample.prompt_question, sample.options, sample.hint)
        return {"prompt_text": text, "max_new_tokens": self.max_new_tokens(layout, backend, demo)}


PROTOCOL_DIR = Path(__file__).resolve().parents[1] / "data" / "protocols"


def protocol_names() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


@functools.lru_cache(maxsize=16)
def load_protocol(name: str = DEFAULT_PROTOCOL) -> Protocol:
    """A shipped protocol by name, or a protocol YAML file by path."""
    from g2u.errors import InputError

    path = Path(name)
    if name.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise InputError("protocol", f"no such protocol file {name!r}")
        text = path.read_text()
    elif name in protocol_names():
        text = (PROTOCOL_DIR / f"{name}.yaml").read_text()
    else:
        raise InputError("protocol", f"unknown protocol {name!r}; choose from {', '.join(protocol_names())} "
                                     "or give a protocol YAML file")
    try:
        return Protocol.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError("protocol", f"{name}: {where}: {first['msg']}") from exc
