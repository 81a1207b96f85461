"""The router (``writer: route``): what to imagine, per question type, from data.

The paper finds that prompt families transfer unevenly across question types. The router keeps a small
versioned table (``g2u/data/routes.yaml``): question type → (family, library prompt). The question type
comes from the question text alone (so it is known at serving time, where no benchmark category is);
the table is learned by ``mlflow_project/learn_routes.py`` from an ablation run's predictions: per type,
the library prompt whose G→U accuracy gained most over the baseline.

The question-type rules are hand-written keyword patterns (no classifier is worth its weight for six
coarse types; they are the same at learning and at serving time, which is what matters).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from g2u.prompts import EditPrompt, PromptLibrary

QUESTION_TYPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("count", re.compile(r"\bhow many\b|\bcount\b|\bnumber of\b", re.I)),
    ("color", re.compile(r"\bcolou?rs?\b", re.I)),
    ("text", re.compile(r"\b(text|written|write|says?|words?|letters?|read|sign|title|label|ocr)\b", re.I)),
    ("position", re.compile(r"\b(left|right|above|below|behind|front|top|bottom|where|position|next to|between|"
                            r"closest|farthest|nearest)\b", re.I)),
    ("yes_no", re.compile(r"^\s*(is|are|does|do|did|can|was|were|has|have|will|could|should)\b", re.I)),
)
"""First match wins; no match: ``other``."""
TYPE_NAMES = tuple(name for name, _ in QUESTION_TYPES) + ("other",)


def question_type(question: str) -> str:
    for name, pattern in QUESTION_TYPES:
        if pattern.search(question):
            return name
    return "other"


@dataclass(frozen=True)
class Route:
    family: str
    prompt_name: str
    delta: float | None = None
    """Accuracy gain over the baseline measured for this type (None: a prior)."""
    n: int | None = None


@dataclass
class RouteTable:
    version: str
    source: str
    default: Route
    routes: dict[str, Route]

    @classmethod
    def load(cls, path: str | Path | None = None, library: PromptLibrary | None = None) -> RouteTable:
        """The shipped table (or ``path``); every prompt it names must be in ``library``."""
        if path is None:
            text = resources.files("g2u.data").joinpath("routes.yaml").read_text()
            source = "g2u/data/routes.yaml"
        else:
            text, source = Path(path).read_text(), str(path)
        return cls.from_dict(yaml.safe_load(text) or {}, source, library)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>", library: PromptLibrary | None = None) -> RouteTable:
        def route(value: Any, where: str) -> Route:
            if not isinstance(value, dict) or not value.get("prompt_name") or not value.get("family"):
                raise ValueError(f"{source}: {where} needs 'family' and 'prompt_name'")
            r = Route(str(value["family"]), str(value["prompt_name"]), value.get("delta"), value.get("n"))
            if library is not None:
                try:
                    prompt = library.get(r.prompt_name)
                except Exception as exc:
                    raise ValueError(f"{source}: {where} names {r.prompt_name!r}, not in the prompt library") from exc
                if prompt.family != r.family:
                    raise ValueError(f"{source}: {where}: {r.prompt_name!r} is a {prompt.family} prompt, "
                                     f"not {r.family}")
            return r

        if "version" not in data or "default" not in data:
            raise ValueError(f"{source}: needs top-level 'version' and 'default'")
        routes = {}
        for name, value in (data.get("routes") or {}).items():
            if name not in TYPE_NAMES:
                raise ValueError(f"{source}: unknown question type {name!r}; known: {', '.join(TYPE_NAMES)}")
            routes[name] = route(value, f"routes.{name}")
        return cls(str(data["version"]), str(data.get("source", "")), route(data["default"], "default"), routes)

    def to_dict(self) -> dict[str, Any]:
        def plain(r: Route) -> dict[str, Any]:
            out: dict[str, Any] = {"family": r.family, "prompt_name": r.prompt_name}
            if r.delta is not None:
                out.update(delta=round(float(r.delta), 4), n=r.n)
            return out

        return {"version": self.version, "source": self.source, "default": plain(self.default),
                "routes": {k: plain(v) for k, v in self.routes.items()}}

    def pick(self, question: str, library: PromptLibrary, family: str | None = None) -> tuple[str, EditPrompt]:
        """(question type, library prompt) for ``question``; with ``family`` set, the route must be of that
        family, else that family's default prompt."""
        qtype = question_type(question)
        r = self.routes.get(qtype, self.default)
        if family is not None and r.family != family:
            return qtype, library.default(family)
        return qtype, library.get(r.prompt_name)


def learn(records: Iterable[dict], library: PromptLibrary, version: str, source: str,
          min_n: int = 5, default: Route | None = None) -> RouteTable:
    """A route table from evaluation records (``predictions.jsonl``): per question type, the library prompt
    whose ``g2u`` accuracy minus the same samples' ``baseline`` accuracy is highest (at least ``min_n``
    samples, and a positive gain; otherwise the type keeps the default route)."""
    baseline: dict[str, bool] = {}
    g2u: dict[tuple[str, str], list[tuple[str, bool]]] = defaultdict(list)
    types: dict[str, str] = {}
    for r in records:
        if r.get("correct") is None or r.get("error"):
            continue
        types[r["id"]] = question_type(str(r.get("question", "")))
        if r.get("mode") == "baseline":
            baseline[r["id"]] = bool(r["correct"])
        elif r.get("mode") == "g2u" and (r.get("edit") or {}).get("prompt_name") and \
                (r.get("edit") or {}).get("writer") == "library":
            g2u[(types[r["id"]], r["edit"]["prompt_name"])].append((r["id"], bool(r["correct"])))
    default = default or Route(library.default("enhancement").family, library.default("enhancement").name)
    best: dict[str, Route] = {}
    for (qtype, name), rows in sorted(g2u.items()):
        paired = [(ok, baseline[i]) for i, ok in rows if i in baseline]
        if len(paired) < min_n:
            continue
        delta = sum(a for a, _ in paired) / len(paired) - sum(b for _, b in paired) / len(paired)
        if delta > 0 and (qtype not in best or delta > (best[qtype].delta or 0)):
            best[qtype] = Route(library.get(name).family, name, delta, len(paired))
    return RouteTable(version, source, default, best)


def write_table(table: RouteTable, path: str | Path) -> None:
    header = ("# Router table (writer: route), written by mlflow_project/learn_routes.py; see g2u/router.py.\n")
    Path(path).write_text(header + yaml.safe_dump(table.to_dict(), sort_keys=False))


__all__ = ["QUESTION_TYPES", "TYPE_NAMES", "Route", "RouteTable", "learn", "question_type", "write_table"]


