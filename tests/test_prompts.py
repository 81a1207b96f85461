"""The edit-prompt library is valid data, and the leak guard catches answers in prompts."""

from __future__ import annotations

import pytest

from g2u.errors import InputError
from g2u.prompts import PromptLibrary, default_library, find_leak


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
])
def test_leak_guard(prompt, options, answer, leaks):
    assert (find_leak(prompt, options, answer) is not None) == leaks
