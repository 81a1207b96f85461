"""The judge prompts VLMEvalKit (HEAD e8e78f05; the fork d10606c8 has the same functions) sends for answers exact
matching cannot read: ``extract_answer_from_item``'s MCQ prompt (``build_prompt`` / ``build_prompt_cn`` over
``build_option_str(build_choices(item))``) and ``YOrN_match_prompt``; plus each one's retry count and the MCQ
fallback's option set, read from the same functions."""

import ast
import json
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
import pandas as pd
from refload import base_ns, defs

V = __import__("os").environ.get("REF", "/tmp/ref") + "/vlmeval/vlmeval"
NaN = float("nan")
ns = base_ns()
defs(f"{V}/smp/misc.py", ["cn_string"], ns)
defs(f"{V}/smp/vlm.py", ["build_option_str"], ns)
defs(f"{V}/dataset/utils/multiple_choice.py", ["build_prompt", "build_prompt_cn", "build_choices"], ns)
defs(f"{V}/dataset/utils/yorn.py", ["YOrN_match_prompt"], ns)


def retry_of(path, func):
    """The ``retry = N`` constant of a reference function (its number of judge tries)."""
    tree = ast.parse(open(path).read())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func)
    return next(a.value.value for a in ast.walk(node) if isinstance(a, ast.Assign)
                and getattr(a.targets[0], "id", None) == "retry")


def mcq_prompt(item):
    """What extract_answer_from_item builds (not BLINK / WeMath / LEGO)."""
    choices = ns["build_choices"](item)
    option_str = ns["build_option_str"](choices)
    build = ns["build_prompt_cn"] if ns["cn_string"](item["question"]) else ns["build_prompt"]
    return build(item["question"], option_str, item["prediction"]), list(choices) + ["Z"]


MCQ = [
    dict(index=0, question="What is the colour of the car?", hint="The picture was taken at noon.", A="red",
         B="blue", C="green", D="white", answer="A", category="color",
         prediction="It looks reddish to me, though the light could make it seem blue or green."),
    dict(index=5, question="Which direction is the arrow pointing?", hint=NaN, A="left", B="right", C=NaN,
         D=NaN, answer="B", category="spatial", prediction="B or maybe A"),
    dict(index=9, question="图中的动物是什么?", hint=NaN, A="猫", B="狗", C="鸟", D="鱼", answer="A",
         category="recognition", prediction="这是一只可爱的小猫和一只狗"),
]
YORN = [
    dict(index=3, question="Is there a red car in the image? Please answer yes or no.", answer="Yes",
         category="color", prediction="Yes, a red car, though no other car is there."),
]
out = {"reference": "open-compass/VLMEvalKit@e8e78f05f3080fe28154f2130321f17951c3be94",
       "tries": {"mcq": retry_of(f"{V}/dataset/utils/multiple_choice.py", "extract_answer_from_item"),
                 "yesno": retry_of(f"{V}/dataset/utils/yorn.py", "YOrN_auxeval")},
       "mcq": [], "yesno": []}
for item in MCQ:
    prompt, fallback = mcq_prompt(pd.Series(item))
    out["mcq"].append({"row": {k: (None if v != v else v) for k, v in item.items()}, "prompt": prompt,
                       "fallback_options": fallback})
for item in YORN:
    out["yesno"].append({"row": item, "prompt": ns["YOrN_match_prompt"](pd.Series(item))})
json.dump(out, open(sys.argv[1], "w"), indent=1, ensure_ascii=False)
print(json.dumps(out["tries"]), len(out["mcq"]), len(out["yesno"]))
