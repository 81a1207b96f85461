import base64
import io
import json
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
import pandas as pd
from PIL import Image
from refload import base_ns, defs

ns = base_ns()
ns.update(Image=Image, BytesIO=io.BytesIO, base64=base64, process_conversation=lambda images, q: (images, q))
defs(
    __import__("os").environ.get("REF", "/tmp/ref") + "/bagel/eval/vlm/eval/mmbench/evaluate_mmbench.py",
    ["__getitem__", "load_from_df"],
    ns,
    cls="MMBenchDataset",
)
buf = io.BytesIO()
Image.new("RGB", (4, 4)).save(buf, format="PNG")
img = base64.b64encode(buf.getvalue()).decode()
src = json.load(open(sys.argv[1]))
prompt = {"en": "Answer with the option's letter from the given choices directly.", "cn": "请直接回答选项字母。"}
out = []
for e in [x for x in src["mcq"] if x["source"] == "head"]:
    row = dict(e["row"], image=img)
    obj = ns["MMBenchDataset"].__new__(ns["MMBenchDataset"])
    obj.df = pd.DataFrame([row])
    obj.prompt = prompt
    obj.language = "en"
    item = obj.__getitem__(0)
    out.append({"source": "bagel", "dataset": e["dataset"], "row": e["row"], "prompt": item["question"]})
    print(repr(item["question"]))
json.dump({"mcq": out}, open(sys.argv[2], "w"), indent=1, ensure_ascii=False)
