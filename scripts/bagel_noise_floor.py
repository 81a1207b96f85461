"""The noise floor between our BAGEL backend (float32) and a golden folder of the official code.

    python scripts/bagel_noise_floor.py                            # the stored float32 goldens
    python scripts/bagel_noise_floor.py --golden /tmp/bagel_bf16   # a bf16 run of scripts/bagel_golden.py

Prints, per quantity, the largest relative L2 error (velocities: the reference's own x_t fed to ours at
every step) and, for decoded images, how many uint8 values differ and by how much. The tolerances of
``tests/backends/test_bagel_golden.py`` are set from the float32 numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def _tests():
    path = ROOT / "tests" / "backends" / "test_bagel_golden.py"
    spec = importlib.util.spec_from_file_location("bagel_golden_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--golden", type=Path, default=ROOT / "tests" / "golden" / "bagel")
    args = parser.parse_args()
    t = _tests()
    from g2u.backends.bagel import BagelBackend
    from g2u.backends.bagel.layout import patchify
    from g2u.backends.bagel.sampler import guided_velocity
    from g2u.backends.bagel.vae import encode_latents
    from g2u.demo.bagel import build_bagel_demo
    from g2u.types import AnswerParams

    golden = load_file(str(args.golden / "golden.safetensors"))
    meta = json.loads((args.golden / "meta.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        backend = BagelBackend.from_pretrained(str(build_bagel_demo(Path(tmp) / "b", seed=meta["seed"])),
                                               device="cpu", dtype="float32")
    rows: list[tuple[str, str]] = [("reference dtype", meta["reference_dtype"])]
    with t.decoded_ids(backend) as (_, logits):
        backend.answer([[t.golden_picture(), t.QUESTION]], AnswerParams(max_new_tokens=meta["understanding"]["budget"]))
    ours = torch.cat([x.reshape(-1, x.shape[-1]) for x in logits])
    rows.append(("understanding logits", f"{t.rel_l2(ours, golden['understanding_logits']):.2e}"))
    mean = encode_latents(backend.vae, golden["vae_pixels"], None)
    rows.append(("posterior mean", f"{t.rel_l2(mean, golden['vae_mean']):.2e}"))
    image = backend.plan_edit_size(t.golden_picture().size).placement.apply(t.golden_picture())
    w, h = image.size
    grid = (h // backend.size_multiple, w // backend.size_multiple)
    for name, case in meta["edits"].items():
        settings = t._settings(case)
        context = [patchify(golden[f"{name}_posterior"][0], backend.model.dims.latent_patch)]
        cache, _ = backend.edit_contexts([image], [t.EDIT_PROMPT], context, grid, settings)
        x = golden[f"{name}_noise"][None].clone()
        cache.reserve(x.shape[1] + 2)
        errs = []
        for i, (tt, dt) in enumerate(zip(*settings.schedule())):
            v = guided_velocity(backend.model, cache, x, tt, grid, settings)
            errs.append(t.rel_l2(v[0], golden[f"{name}_velocities"][i]))
            x = x - golden[f"{name}_velocities"][i][None] * dt
        rows.append((f"{name}: velocity per step", " ".join(f"{e:.1e}" for e in errs)))
        (out,) = backend.edit([t.golden_picture()], [t.EDIT_PROMPT], [t._edit_params(backend, case)])
        diff = np.abs(np.asarray(out.image, dtype=np.int32) - golden[f"{name}_image"].numpy().astype(np.int32))
        rows.append((f"{name}: image", f"{int((diff > 0).sum())}/{diff.size} values differ, max {int(diff.max())}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
