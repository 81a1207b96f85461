import json
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
import pandas as pd
from refload import base_ns, defs

HEAD = __import__("os").environ.get("REF", "/tmp/ref") + "/vlmeval/vlmeval/dataset"
FORK = __import__("os").environ.get("REF", "/tmp/ref") + "/fork/vlmeval/dataset"
NaN = float("nan")


def classes(root):
    ns = base_ns()
    defs(f"{root}/image_base.py", ["build_prompt"], ns, cls="ImageBaseDataset")
    defs(f"{root}/image_mcq.py", ["build_prompt"], ns, cls="ImageMCQDataset", base="ImageBaseDataset")
    defs(f"{root}/image_yorn.py", ["build_prompt"], ns, cls="ImageYORNDataset", base="ImageBaseDataset")
    return ns


def make(cls, name):
    obj = cls.__new__(cls)
    obj.meta_only = True
    obj.dataset_name = name
    obj.dump_image = lambda line: ["img.jpg"]
    return obj


def text(msgs):
    texts = [m["value"] for m in msgs if m["type"] == "text"]
    assert len(texts) == 1
    return texts[0]


ROWS = {
    "mcq": [  # ImageMCQDataset: MMBench, MMStar, R-Bench-Dis/Ref, SEEDBench...
        (
            "MMBench_DEV_EN",
            dict(
                index=0,
                question="What is the colour of the car?",
                hint="The picture was taken at noon.",
                A="red",
                B="blue",
                C="green",
                D="white",
                answer="A",
                category="color",
                image_path="x.jpg",
            ),
        ),
        (
            "MMBench_DEV_EN",
            dict(
                index=1000001,
                question="Which direction is the arrow pointing?",
                hint=NaN,
                A="left",
                B="right",
                C=NaN,
                D=NaN,
                answer="B",
                category="spatial",
                image_path="x.jpg",
            ),
        ),
        (
            "MMStar",
            dict(
                index=7,
                question="How many people are in the image?",
                hint=NaN,
                A="1",
                B="2",
                C="3",
                D="4",
                answer="C",
                category="coarse perception",
                image_path="x.jpg",
            ),
        ),
        (
            "R-Bench-Dis",
            dict(
                index=3,
                question="Is the object in the image a dog?",
                A="Yes",
                B="No",
                answer="A",
                category="object",
                image_path="x.jpg",
            ),
        ),
        (
            "MMBench_DEV_EN",
            dict(
                index=4,
                question="Read the sign:\nwhat does it say?",
                hint="Multi\nline hint",
                A="STOP",
                B="GO",
                C="Yield: 3 ways",
                answer="A",
                category="ocr",
                image_path="x.jpg",
            ),
        ),
    ],
    "yesno": [  # ImageYORNDataset: MME, HallusionBench
        (
            "MME",
            dict(
                index=0,
                question="Is there a red car in this image? Please answer yes or no.",
                answer="Yes",
                category="color",
                image_path="x.jpg",
            ),
        ),
        (
            "HallusionBench",
            dict(
                index="VD_figure_1_0_0",
                question="Is the left line longer than the right line?",
                answer="No",
                category="VD",
                image_path="x.jpg",
            ),
        ),
    ],
    "open": [  # MMVet: ImageBaseDataset.build_prompt
        (
            "MMVet",
            dict(
                index=0,
                question="What is the price difference between the two items?",
                answer="$2<OR>2",
                category="ocr,math",
                image_path="x.jpg",
            ),
        ),
    ],
}
KIVA = [
    (
        "KIVA",
        dict(
            index=0,
            question="Which option shows the same change as the example?",
            A="(1)",
            B="(2)",
            C="(3)",
            answer="B",
            image_path="x.jpg",
        ),
    ),
    ("KIVA", dict(index=1, question="Does the object rotate 90 degrees?", answer="Yes", image_path="x.jpg")),
]

out = {}
for tag, root in (("head", HEAD), ("fork", FORK)):
    ns = classes(root)
    kind = {"mcq": ns["ImageMCQDataset"], "yesno": ns["ImageYORNDataset"], "open": ns["ImageBaseDataset"]}
    for layout, rows in ROWS.items():
        for name, row in rows:
            out.setdefault(layout, []).append(
                {
                    "source": tag,
                    "dataset": name,
                    "row": row,
                    "prompt": text(kind[layout].build_prompt(make(kind[layout], name), pd.Series(row))),
                }
            )
ns = base_ns()
ns["ImageBaseDataset"] = object
defs(f"{FORK}/myvqabench.py", ["build_prompt"], ns, cls="MyVQABench", base="ImageBaseDataset")
for name, row in KIVA:
    obj = make(ns["MyVQABench"], name)
    out.setdefault("kiva", []).append(
        {"source": "fork", "dataset": name, "row": row, "prompt": text(obj.build_prompt(pd.Series(row)))}
    )


def clean(v):
    return None if isinstance(v, float) and v != v else v


for layout in out:
    for e in out[layout]:
        e["row"] = {k: clean(v) for k, v in e["row"].items() if k != "image_path"}
json.dump(out, open(sys.argv[1], "w"), indent=1, ensure_ascii=False)
for layout, es in out.items():
    for e in es:
        print(layout, e["source"], e["dataset"], repr(e["prompt"]))
