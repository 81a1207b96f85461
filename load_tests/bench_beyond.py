"""What each beyond-the-paper option costs on a demo checkpoint: backend passes and wall time per request.

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 python load_tests/bench_beyond.py --backend qwen_image_edit --steps 2

Counts the items each backend call handles (edit items, answer items) and times the whole request, median
of ``--repeat`` runs after one warm-up, against the paper's default loop. Prints a Markdown table.
Numbers on demo checkpoints are about the structure of the cost (extra passes), not real latencies.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import tempfile
import time

from PIL import Image, ImageDraw

from g2u.batch import RawItem, run_batch
from g2u.checkpoints import resolve_checkpoint
from g2u.pipeline import G2UPipeline
from g2u.thought_cache import ThoughtCache


class Counting:
    """Counts backend calls and the items they carry."""

    def __init__(self, inner):
        self.inner = inner
        self.reset()

    def reset(self):
        self.edit_calls = self.edit_items = self.answer_calls = self.answer_items = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def edit(self, images, prompts, params):
        self.edit_calls += 1
        self.edit_items += len(images)
        return self.inner.edit(images, prompts, params)

    def answer(self, contents, params):
        self.answer_calls += 1
        self.answer_items += len(contents)
        return self.inner.answer(contents, params)


def picture() -> Image.Image:
    img = Image.new("RGB", (96, 64), (40, 90, 160))
    ImageDraw.Draw(img).ellipse((20, 10, 60, 50), fill=(240, 220, 0))
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backend", default="qwen_image_edit")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    pipe = G2UPipeline.from_checkpoint(resolve_checkpoint(None, args.backend), args.backend, thought_cache=None)
    counting = Counting(pipe.backend)
    pipe.backend = counting
    img = picture()
    buf = io.BytesIO()
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buf, format="PNG")
    brought = base64.b64encode(buf.getvalue()).decode()
    base = {"question": "What color is the disc?", "steps": args.steps, "max_new_tokens": 8}
    cache_dir = tempfile.mkdtemp(prefix="g2u-bench-cache-")
    rows = [
        ("baseline (no thought)", {"mode": "baseline"}, None),
        ("g2u (paper default)", {}, None),
        ("g2u + thought cache, hit", {}, "hit"),
        ("g2u, brought thought", {"thought": brought}, None),
        ("g2u router", {"writer": "route"}, None),
        ("gate fired (τ=0)", {"gate": "confidence", "gate_threshold": 0.0}, None),
        ("gate not fired (τ=1)", {"gate": "confidence", "gate_threshold": 1.0}, None),
        ("3 candidates, confidence", {"candidates": 3, "selection": "confidence"}, None),
        ("3 candidates, agreement", {"candidates": 3, "selection": "agreement"}, None),
    ]
    print(f"backend {args.backend}, steps {args.steps}, median of {args.repeat} (after one warm-up)\n")
    print("| setting | edit calls / items | answer calls / items | ms / request | × g2u |")
    print("| --- | --- | --- | --- | --- |")
    reference = None
    for label, fields, cache in rows:
        pipe.thought_cache = ThoughtCache(cache_dir) if cache else None
        run_batch(pipe, [RawItem({**base, **fields}, img)])  # warm-up (and, for the cache row, the fill)
        times = []
        for _ in range(args.repeat):
            counting.reset()
            start = time.perf_counter()
            [out] = run_batch(pipe, [RawItem({**base, **fields}, img)])
            times.append((time.perf_counter() - start) * 1000)
            assert out.ok, out.error
        ms = statistics.median(times)
        if label.startswith("g2u (paper"):
            reference = ms
        ratio = f"{ms / reference:.2f}" if reference else "—"
        print(f"| {label} | {counting.edit_calls} / {counting.edit_items} | "
              f"{counting.answer_calls} / {counting.answer_items} | {ms:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
