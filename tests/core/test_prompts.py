"""The edit-prompt library is valid data, and the leak guard catches answers in prompts."""

from __future__ import annotations

import pytest

from g2u.errors import InputError
from g2u.prompts import EditPrompt, PromptLibrary, default_library, find_leak, prompt_leak


def test_shipped_library_has_both_families():
    lib = default_library()
    assert len(lib.names("enhancement")) >= 6 and len(lib.names("extension")) >= 6
    for prompt in lib.prompts.values():
        assert prompt.purpose and prompt.suits and prompt.text
    assert lib.default("enhancement").family == "enhancement"
    assert lib.default("extension").family == "extension"


def test_shipped_prompts_carry_no_answer_phrasing():
    for prompt in default_library().prompts.values():
        assert find_leak(prompt.text) is None, prompt.name


def test_resolve_by_name_family_and_text():
    lib = default_library()
    assert lib.resolve(prompt_name="deblur").name == "deblur"
    assert lib.resolve(family="extension").family == "extension"
    free = lib.resolve(prompt="Make it brighter", family="enhancement")
    assert free.name is None and free.text == "Make it brighter"


@pytest.mark.parametrize("kwargs, field", [
    ({"prompt_name": "nope"}, "prompt_name"),
    ({"family": "other"}, "family"),
    ({"prompt": "x", "prompt_name": "deblur"}, "prompt"),
    ({"prompt_name": "deblur", "family": "extension"}, "family"),
])
def test_resolve_errors_name_the_field(kwargs, field):
    with pytest.raises(InputError) as err:
        default_library().resolve(**kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("data, message", [
    ({"version": "1", "families": {}, "prompts": [{"name": "a", "family": "enhancement", "text": "t"}]},
     "default"),
    ({"version": "1", "families": {}, "prompts": [{"name": "Bad Name", "family": "enhancement", "text": "t"}]},
     "lower_snake_case"),
    ({"version": "1", "families": {}, "prompts": [{"name": "a", "family": "magic", "text": "t"}]}, "family"),
    ({"version": "1", "families": {}, "prompts": [{"name": "a", "family": "enhancement",
                                                   "text": "The answer is B"}]}, "answer-like"),
])
def test_invalid_library_is_rejected(data, message):
    with pytest.raises(ValueError, match=message):
        PromptLibrary.from_dict(data)


@pytest.mark.parametrize("prompt, options, answer, leaks", [
    ("Remove the red car", ["red", "blue"], None, True),
    ("Sharpen the image", ["red", "blue"], None, False),
    ("Make the cat larger", None, "cat", True),
    ("Make the category clear", None, "cat", False),
    ("The correct option is (B)", ["x1", "x2"], None, True),
    ("Zoom on the big dog", ["a big dog", "a small dog"], None, False),
    ("Zoom on a big dog", ["a big dog", "a small dog"], None, True),
    ("Increase the contrast", ["A", "B", "C"], "B", False),
    # digits and number words are one number
    ("Draw exactly 3 birds", None, "3", True),
    ("Draw exactly 3 birds", None, "three", True),
    ("Draw exactly three birds", ["2", "3", "4"], None, True),
    ("Draw the birds again", None, "3", False),
    ("Redraw at 300 dpi", None, "3", False),           # whole numbers only
    # singular and plural are one noun
    ("Highlight the circles", None, "circle", True),
    ("Highlight every circle", ["circles", "squares"], None, True),
    ("Make the boxes sharper", None, "box", True),
    ("Outline the circular shapes", None, "circle", False),
    # option letters written as choices
    ("Zoom into region (B) of the chart", ["x1", "x2"], None, True),
    ("Focus on B. and nothing else", ["x1", "x2"], None, True),
    ("Crop to panel [C]", ["p", "q", "r"], None, True),
    ("Focus on panel (C)", ["x1", "x2"], None, False),  # C is not one of two options' letters
    ("Zoom on plan B and keep details", ["x1", "x2"], None, False),  # a bare letter is not a choice
    ("Zoom into (B) only", None, "B", True),           # a letter answer without options
])
def test_leak_guard(prompt, options, answer, leaks):
    assert (find_leak(prompt, options, answer) is not None) == leaks


def test_a_library_prompt_is_never_refused_for_an_option_word():
    isolate = default_library().get("isolate_subject")
    assert "white" in isolate.text
    assert prompt_leak(isolate, ["white", "black"], "A") is None                # fixed text never saw the question
    free = EditPrompt(None, "extension", isolate.text)
    assert prompt_leak(free, ["white", "black"], "A") == "contains an option ('white')"  # the same text, written
    assert prompt_leak(EditPrompt("x", "extension", "The answer is B"), None, None) is not None


def test_writer_fallback_is_rechecked_and_a_failing_default_gives_way():

    from g2u.writers.guard import fallback, guarded

    lib = default_library()
    bad = EditPrompt("bad_default", "enhancement", "Sharpen; the answer is B")
    broken = PromptLibrary(lib.version, {"bad_default": bad, **lib.prompts},
                           {**lib.family_defaults, "enhancement": "bad_default"})
    written = guarded(broken, "openai", "Draw exactly 3 birds", "enhancement", None, "three")
    assert written.fallback and written.prompt.name != "bad_default"
    assert "leak: contains the answer ('three')" in written.fallback_reason
    assert "library default 'bad_default'" in written.fallback_reason
    kept = fallback(lib, "openai", "extension", "timeout", ["white", "black"], "A")
    assert kept.prompt.name == lib.family_defaults["extension"] and kept.fallback_reason == "timeout"
