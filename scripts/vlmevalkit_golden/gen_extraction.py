"""Generated model outputs labelled by VLMEvalKit's own can_infer / YOrN_Extraction (HEAD e8e78f05)."""

import gzip
import json
import random
import sys
from collections import Counter

sys.path.insert(0, __import__("os").path.dirname(__file__))
from refload import base_ns, defs

V = __import__("os").environ.get("REF", "/tmp/ref") + "/vlmeval/vlmeval"
ns = base_ns()
defs(f"{V}/utils/matching_util.py", ["_VERBOSE_ANSWER_RE", "can_infer_option", "can_infer_text", "can_infer"], ns)
defs(f"{V}/smp/misc.py", ["process_punctuation"], ns)
defs(f"{V}/dataset/utils/yorn.py", ["YOrN_Extraction"], ns)
rng = random.Random(23)
OPTION_SETS = [
    ["red", "blue", "green", "white"],
    ["left", "right"],
    ["1", "2", "3", "4"],
    ["a cat", "a dog", "a bird"],
    ["Yes", "No"],
    ["The sky", "The sea", "A tree", "Dog"],
    ["10 cm", "12 cm", "14 cm", "16 cm"],
    ["circle", "square", "triangle"],
    ["B", "C", "D", "E"],
    ["apple pie", "apple", "pie", "cake"],
]
LEAD = [
    "",
    "",
    "",
    "I think ",
    "The answer is ",
    "the answer is ",
    "Answer: ",
    "answer is ",
    "The correct answer is ",
    "Correct answer is ",
    "**Answer:** ",
    "Option ",
    "option ",
    "Choice: ",
    "So the answer is ",
    "ANSWER IS ",
    "Final answer: ",
    "My answer is ",
    "It is ",
    "Looking at the image, the answer is ",
]
WRAP = ["{}", "{}", "({})", "{}.", "**{}**", "{})", "[{}]", "{}:", "'{}'", "{{{}}}", " {} ", "{}!"]
TAIL = [
    "",
    "",
    "",
    ".",
    " because it is visible.",
    "\nThe image shows it clearly.",
    " is the best choice",
    " or {o}",
    ". B is wrong.",
    " (not A)",
    ", I'm sure",
    " - final",
    "\n\nExplanation: A bird sits on the left side of the picture and looks at the camera.",
]
REFUSE = [
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "Cannot determine the answer",
    "Failed to obtain answer via API.",
    "I'm sorry, but without the image provided I cannot answer.",
    "Z",
    "None of them (Z)",
]


def mcq_output(opts):
    letters = "ABCDEFGH"[: len(opts)]
    r = rng.random()
    if r < 0.05:
        return rng.choice(REFUSE)
    if r < 0.18:  # the option's text
        o = rng.choice(opts)
        return rng.choice(["{}", "It is {}.", "{}", "The {} one", "I see {} and maybe {o}", "{}"]).format(
            o, o=rng.choice(opts)
        )
    if r < 0.23:  # free text
        return rng.choice(
            [
                "The dog is on the mat.",
                "A cat sits on a chair.",
                "The answer is dog.",
                "answer is clear",
                "I cannot tell.",
                "",
                "The answer is d.",
                "the answer is a bird",
                "It depends on A and B.",
                "Answer is: B",
                "The correct answer is\nC",
                "answer  is  **c**",
                "Answer is *b*",
            ]
        )
    letter = rng.choice(letters + rng.choice(["E", "Z", "a", "b", "c", ""]))
    if rng.random() < 0.25:
        letter = letter.lower()
    text = rng.choice(LEAD) + rng.choice(WRAP).format(letter) + rng.choice(TAIL).format(o=rng.choice(letters))
    if rng.random() < 0.1:
        text = text + " " + rng.choice(opts)
    if rng.random() < 0.05:
        text = text.upper()
    return text


YES = [
    "yes",
    "Yes",
    "YES",
    "Yes.",
    "yes,",
    "**Yes**",
    "Yes/No",
    "No",
    "no",
    "No.",
    "NO",
    "no!",
    "Yes, there is.",
    "No, there isn't.",
    "Yes and no",
    "I don't know",
    "",
    "Maybe",
    "Yes-",
    "No;",
    "(Yes)",
    "yes\nno",
    "Nope",
    "Yes it is. No doubt.",
    "There is no car.",
    "Yes? No?",
    "Not sure, yes",
    "The answer is yes.",
    "yes.no",
    "It is 3,5 - yes",
    "yes_no",
    "no-one",
    "Yes-no",
    "[Yes]",
    "Yes, 1.5 m",
    "No. Yes.",
    "yes,no",
    '"no"',
    "Y e s",
]


def yes_output():
    base = rng.choice(YES)
    if rng.random() < 0.3:
        base = (
            rng.choice(["", "I think ", "The answer: ", "Answer - "])
            + base
            + rng.choice(["", ".", " ", "!", " because..."])
        )
    return base


mcq = []
for _ in range(3000):
    opts = rng.choice(OPTION_SETS)
    out = mcq_output(opts)
    choices = {k: v for k, v in zip("ABCDEFGH", opts)}
    label = ns["can_infer"](out, dict(choices))
    mcq.append([out, opts, label if label else None])
yn = []
for _ in range(1000):
    out = yes_output()
    yn.append([out, ns["YOrN_Extraction"](out)])
data = {
    "reference": "open-compass/VLMEvalKit e8e78f05f3080fe28154f2130321f17951c3be94: vlmeval/utils/matching_util.py "
    "can_infer (label: the letter, 'Z' for a refusal, null for no answer); vlmeval/dataset/utils/yorn.py "
    "YOrN_Extraction ('Yes'/'No'/'Unknown')",
    "mcq": mcq,
    "yesno": yn,
}
raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
with gzip.GzipFile(sys.argv[1], "wb", mtime=0) as f:
    f.write(raw)
print(len(raw), Counter(x[2] for x in mcq).most_common(), Counter(x[1] for x in yn))
