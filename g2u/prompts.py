"""The edit-prompt library (named, versioned data) and the leak guard.

Prompts live in ``g2u/data/edit_prompts.yaml`` (or a file the user points at); code refers to them by
name or family. The leak guard keeps an edit prompt from carrying the question's options or answer: a
visual thought must help the model see, never tell it what to say.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from g2u.errors import InputError
from g2u.types import FAMILIES

MAX_PROMPT_CHARS = 1000

# Phrases that announce an answer rather than describe an edit.
_ANSWER_PHRASES = re.compile(
    r"\b(the\s+(correct\s+|right\s+)?answer|correct\s+(option|choice)|answer\s+is|"
    r"(option|choice)\s+\(?[a-h]\)?(?![a-z])|choose\s+\(?[a-h]\)?(?![a-z]))",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class EditPrompt:
    name: str | None
    family: str | None
    text: str
    purpose: str = ""
    suits: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromptLibrary:
    version: str
    prompts: dict[str, EditPrompt]
    family_defaults: dict[str, str]

    @classmethod
    def load(cls, path: str | Path | None = None) -> PromptLibrary:
        """Load and validate a library file (default: the one shipped with g2u)."""
        if path is None:
            text = resources.files("g2u.data").joinpath("edit_prompts.yaml").read_text()
            source = "g2u/data/edit_prompts.yaml"
        else:
            text, source = Path(path).read_text(), str(path)
        return cls.from_dict(yaml.safe_load(text), source)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> PromptLibrary:
        def bad(reason: str) -> ValueError:
            return ValueError(f"prompt library {source}: {reason}")

        if not isinstance(data, dict) or "prompts" not in data or "families" not in data:
            raise bad("needs top-level 'version', 'families' and 'prompts'")
        prompts: dict[str, EditPrompt] = {}
        for entry in data["prompts"]:
            name, family, text = entry.get("name"), entry.get("family"), entry.get("text", "")
            if not name or not re.fullmatch(r"[a-z0-9_]+", name):
                raise bad(f"prompt name {name!r} must be lower_snake_case")
            if name in prompts:
                raise bad(f"duplicate prompt name {name!r}")
            if family not in FAMILIES:
                raise bad(f"prompt {name!r}: family {family!r} is not one of {FAMILIES}")
            if not text.strip() or len(text) > MAX_PROMPT_CHARS:
                raise bad(f"prompt {name!r}: text must be 1..{MAX_PROMPT_CHARS} characters")
            if _ANSWER_PHRASES.search(text):
                raise bad(f"prompt {name!r}: text contains answer-like phrasing")
            prompts[name] = EditPrompt(name, family, text.strip(), entry.get("purpose", ""),
                                       tuple(entry.get("suits", ())))
        defaults = {}
        for family in FAMILIES:
            default = (data["families"].get(family) or {}).get("default")
            if default not in prompts or prompts[default].family != family:
                raise bad(f"family {family!r} needs a default naming one of its own prompts")
            defaults[family] = default
        return cls(str(data.get("version", "0")), prompts, defaults)

    def names(self, family: str | None = None) -> list[str]:
        return [n for n, p in self.prompts.items() if family is None or p.family == family]

    def get(self, name: str) -> EditPrompt:
        if name not in self.prompts:
            raise InputError("prompt_name", f"unknown prompt {name!r}; known: {', '.join(self.prompts)}")
        return self.prompts[name]

    def default(self, family: str) -> EditPrompt:
        if family not in self.family_defaults:
            raise InputError("family", f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
        return self.prompts[self.family_defaults[family]]

    def resolve(self, prompt: str | None = None, prompt_name: str | None = None,
                family: str | None = None) -> EditPrompt:
        """The edit prompt a request asks for: free text, a named prompt, or a family's default
        (the enhancement default when nothing is given)."""
        if prompt is not None and prompt_name is not None:
            raise InputError("prompt", "give either 'prompt' or 'prompt_name', not both")
        if family is not None and family not in FAMILIES:
            raise InputError("family", f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
        if prompt is not None:
            if not prompt.strip():
                raise InputError("prompt", "is empty")
            if len(prompt) > MAX_PROMPT_CHARS:
                raise InputError("prompt", f"is longer than {MAX_PROMPT_CHARS} characters")
            return EditPrompt(None, family, prompt.strip())
        if prompt_name is not None:
            chosen = self.get(prompt_name)
            if family is not None and chosen.family != family:
                raise InputError("family", f"prompt {prompt_name!r} belongs to {chosen.family!r}, not {family!r}")
            return chosen
        return self.default(family or "enhancement")


@lru_cache(maxsize=1)
def default_library() -> PromptLibrary:
    return PromptLibrary.load()


_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "once": "1", "twice": "2",
                      "first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5"})


def _stem(word: str) -> str:
    """A light plural stem, so "circles" meets "circle" and "boxes" meets "box" (not a full stemmer:
    the guard only needs singular and plural of one noun to compare equal)."""
    if word.isdigit() or len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@lru_cache(maxsize=4096)
def _latin_lookalike(char: str) -> str:
    """The Latin letter a non-Latin character is confusable with (Unicode's confusables data, through
    ``confusable_homoglyphs``), or the character itself."""
    try:
        from confusable_homoglyphs import confusables
    except ImportError:  # the serve extra is not installed: NFKC, zero-width and accents are still folded
        return char
    found = confusables.is_confusable(char, greedy=True, preferred_aliases=["latin"]) or []
    for entry in found:
        for glyph in entry.get("homoglyphs", ()):
            latin = glyph.get("c", "")
            if latin and all(c.isascii() for c in latin):
                return latin
    return char


def normalize(text: str) -> str:
    """Text as the leak guard compares it: NFKC (full-width "ｒｅｄ" → "red", "Ⅳ" → "IV"), format
    characters dropped (zero-width spaces and joiners, bidi marks), combining marks dropped ("réd" →
    "red"), and non-Latin homoglyphs of Latin letters mapped to them (Cyrillic "с" → "c")."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) not in ("Cf", "Mn", "Me"))
    text = "".join(c if c.isascii() or not c.isalpha() else _latin_lookalike(c) for c in text)
    return unicodedata.normalize("NFC", text)


def _words(text: str) -> list[str]:
    """Lowercase words (normalised: ``normalize``), number words as digits ("three" → "3"), plurals stemmed."""
    return [_stem(_NUMBER_WORDS.get(w, w)) for w in re.findall(r"[\w']+", normalize(text).lower())]


def _letter_patterns(letters: Sequence[str]) -> re.Pattern | None:
    """Option letters written as choices: "(B)", "[B]", "B.", "B)", "B:" (capital letter, on its own)."""
    if not letters:
        return None
    group = "".join(sorted(set(letters)))
    return re.compile(rf"[(\[]\s*[{group}]\s*[)\]]|(?<![\w'])[{group}][.):](?!\w)")


def find_leak(prompt: str, options: Sequence[str] | None = None, answer: str | None = None) -> str | None:
    """Why a free or written ``prompt`` leaks the answer, or None when it is clean.

    A prompt leaks when it contains an option's text or the answer as whole words (case-insensitive,
    digits and number words alike: "3" = "three"; singular and plural alike: "circle" = "circles"), an
    option letter written as a choice ("(B)", "B.") when the question has options or a letter answer, or
    answer-like phrasing ("the answer is", "option B"). A bare single letter is not a leak: letters occur
    everywhere in plain text. A library prompt (fixed text that never saw the question) goes through
    ``prompt_leak``, which does not look for options or answers.
    """
    prompt = normalize(prompt)  # homoglyph, full-width, zero-width and accented spellings compare as plain
    match = _ANSWER_PHRASES.search(prompt)
    if match:
        return f"contains answer-like phrasing {match.group(0)!r}"
    letters = [chr(65 + i) for i in range(len(options or ()))]
    if answer and re.fullmatch(r"[A-Z]", answer.strip()):
        letters.append(answer.strip())
    pattern = _letter_patterns(letters)
    found = pattern.search(prompt) if pattern else None
    if found:
        return f"names an option letter {found.group(0).strip()!r}"
    joined = " " + " ".join(_words(prompt)) + " "
    for kind, candidates in (("an option", options or ()), ("the answer", [answer] if answer else ())):
        for candidate in candidates:
            cand_words = _words(str(candidate))
            if not cand_words or (len(cand_words) == 1 and len(cand_words[0]) < 2 and not cand_words[0].isdigit()):
                continue
            if " " + " ".join(cand_words) + " " in joined:
                return f"contains {kind} ({str(candidate)!r})"
    return None


def prompt_leak(prompt: EditPrompt, options: Sequence[str] | None = None, answer: str | None = None) -> str | None:
    """The leak check for the prompt a request will use. A library prompt (it has a ``name``) is fixed
    text written before any question was asked, so an option word in it ("white" in a prompt that
    isolates the subject on a white background) is a coincidence, not a leak: only answer-like phrasing
    counts. Free and written prompts get the full ``find_leak``."""
    if prompt.name is not None:
        match = _ANSWER_PHRASES.search(normalize(prompt.text))
        return f"contains answer-like phrasing {match.group(0)!r}" if match else None
    return find_leak(prompt.text, options, answer)
