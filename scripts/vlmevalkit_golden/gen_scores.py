"""Score prediction files with VLMEvalKit's own evaluate methods (exact matching), outside the repo.

ImageMCQDataset.evaluate_heuristic (MMBench circular, MMStar vanilla) and ImageYORNDataset.evaluate (MME,
HallusionBench) run as they are, with the helpers they call (multiple_choice.py, yorn.py, matching_util.py,
smp's get_intermediate_file_path/listinstr/istype/d2df/cn_string/build_option_str/process_punctuation)
cut out of the reference's files; only file I/O (load/dump) and the thread pool are stubbed.
Usage: gen_scores.py FOLDER (with g2u-demo-baseline_<dataset>.xlsx) → FOLDER/scores.json
"""

import datetime
import json
import os
import pickle
import random
import sys
import types
import warnings
from collections import defaultdict

import pandas as pd

sys.path.insert(0, os.path.dirname(__file__))
from refload import base_ns, defs  # noqa: E402

V = os.environ.get("REF", "/tmp/ref") + "/vlmeval/vlmeval"


def load(path):
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return pickle.load(f)
    if path.endswith(".xlsx"):
        return pd.read_excel(path)
    if path.endswith(".csv"):
        return pd.read_csv(path)
    raise ValueError(path)


def dump(obj, path):
    if path.endswith(".pkl"):
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    elif path.endswith(".xlsx"):
        obj.to_excel(path, index=False)
    elif path.endswith(".csv"):
        obj.to_csv(path, index=False)
    else:
        raise ValueError(path)


def track_progress_rich(func, tasks=(), nproc=1, save=None, keys=None, **kwargs):
    res = load(save) if save and os.path.exists(save) else {}
    out = []
    for i, t in enumerate(tasks):
        out.append(func(**t) if isinstance(t, dict) else func(*t))
        if keys is not None:
            res[keys[i]] = out[-1]
    if save:
        dump(res, save)
    return out


ns = base_ns()
ns.update(load=load, dump=dump, track_progress_rich=track_progress_rich, warnings=warnings, rd=random,
          defaultdict=defaultdict, datetime=datetime, MMB_abbrs={}, DEBUG_MESSAGE="", build_judge=None,
          get_pred_file_format=lambda: "xlsx", get_eval_file_format=lambda: "csv")
defs(f"{V}/smp/misc.py", ["istype", "d2df", "cn_string", "timestr", "listinstr", "process_punctuation"], ns)
defs(f"{V}/smp/vlm.py", ["build_option_str"], ns)
defs(f"{V}/smp/file.py", ["get_file_extension", "get_intermediate_file_path"], ns)
defs(f"{V}/utils/matching_util.py", ["_VERBOSE_ANSWER_RE", "can_infer_option", "can_infer_text", "can_infer"], ns)
mc = ["report_acc", "build_prompt", "build_choices", "prefetch_answer", "extract_answer_from_item",
      "prefetch_circular_group", "eval_vanilla", "eval_circular_group", "mcq_vanilla_eval", "mcq_circular_eval"]
defs(f"{V}/dataset/utils/multiple_choice.py", mc, ns)
yn = ["MME_rating", "Hallusion_rating", "default_rating", "YOrN_Extraction", "YOrN_auxeval"]
defs(f"{V}/dataset/utils/yorn.py", yn, ns)
# the evaluate methods import their helpers relatively: give them a package to import from
pkg = types.ModuleType("refpkg")
pkg.__path__ = []
utils = types.ModuleType("refpkg.utils")
utils.__path__ = []
for name, names in (("multiple_choice", mc + ["report_acc_MMSci", "report_acc_MMT", "report_acc_MMVP"]), ("yorn", yn + [
        "AMBER_rating", "POPE_rating", "VSR_rating"])):
    mod = types.ModuleType(f"refpkg.utils.{name}")
    for n in names:
        setattr(mod, n, ns.get(n))
    sys.modules[mod.__name__] = mod
sys.modules.update({"refpkg": pkg, "refpkg.utils": utils})
ns["__package__"] = "refpkg"
ns["__name__"] = "refpkg.dataset"
defs(f"{V}/dataset/image_mcq.py", ["evaluate_heuristic"], ns, cls="ImageMCQDataset")
defs(f"{V}/dataset/image_yorn.py", ["evaluate"], ns, cls="ImageYORNDataset")

folder = sys.argv[1]
scores = {}
for dataset in ("MMBench_DEV_EN", "MMStar", "MME", "HallusionBench"):
    src = os.path.join(folder, f"g2u-demo-baseline_{dataset}.xlsx")
    work = os.path.join(folder, "work", os.path.basename(src))
    os.makedirs(os.path.dirname(work), exist_ok=True)
    pd.read_excel(src).to_excel(work, index=False)
    cls = ns["ImageYORNDataset"] if dataset in ("MME", "HallusionBench") else ns["ImageMCQDataset"]
    obj = cls.__new__(cls)
    obj.dataset_name = dataset
    obj.data = pd.read_excel(src)
    if cls is ns["ImageMCQDataset"]:
        acc = obj.evaluate_heuristic(work, model="exact_matching")
        scores[dataset] = {k: float(v[0]) for k, v in acc.items() if k != "split"}
    else:
        acc = obj.evaluate(work, model="exact_matching")
        if dataset == "MME":
            scores[dataset] = {k: float(v[0]) for k, v in acc.items()}
        else:
            scores[dataset] = {row["split"]: {m: float(row[m]) for m in ("aAcc", "fAcc", "qAcc")}
                               for _, row in acc.iterrows()}
    print(dataset, scores[dataset])
scores["_reference"] = ("open-compass/VLMEvalKit e8e78f05f3080fe28154f2130321f17951c3be94: "
                        "ImageMCQDataset.evaluate_heuristic / ImageYORNDataset.evaluate, judge exact_matching")
json.dump(scores, open(os.path.join(folder, "scores.json"), "w"), indent=1)
