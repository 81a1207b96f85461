"""The G→U pipeline as an MLflow pyfunc model.

Input: a DataFrame (or list of dicts) with the REST request fields — every field of ``g2u.schema``
(``image`` as base64 and ``question`` required; ``options`` as a JSON list; backend fields such as BAGEL's
``think`` included). Output: one row per request with ``answer``, ``mode``, ``id``, ``edit`` and ``fidelity``
(JSON), ``edit_prompt``, ``family``, ``ssim``, ``psnr``, ``demo``, the thought as base64 PNG when asked
(``return_thought``), and for a bad row its ``id``, ``status`` and ``error`` instead of failing the batch: rows go
through the core's batch path (``g2u.batch``), so one bad row never fails the others.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import mlflow.pyfunc

TEXT_OUTPUTS = ["answer", "mode", "id", "edit", "fidelity", "edit_prompt", "family", "thought", "error"]
OUTPUT_COLUMNS = [*TEXT_OUTPUTS, "ssim", "psnr", "demo", "status"]


def pyfunc_signature():
    """Every request field of the schema: image and question required, the rest optional, as over REST."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from g2u.schema import pyfunc_columns

    inputs = Schema([ColSpec(kind, name, required=name in ("image", "question"))
                     for name, kind in pyfunc_columns().items()])
    outputs = Schema([ColSpec("string", c, required=False) for c in TEXT_OUTPUTS]
                     + [ColSpec("double", "ssim", required=False), ColSpec("double", "psnr", required=False),
                        ColSpec("boolean", "demo", required=False), ColSpec("long", "status", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _present(value: Any) -> bool:
    """DataFrames fill absent optional fields with None/NaN."""
    return value is not None and not (isinstance(value, float) and value != value)


class G2UPyfuncModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from g2u.loading import LOADER_FIELDS, LoaderOptions

        config = dict(context.model_config or {})
        checkpoint = context.artifacts.get("checkpoint") if context.artifacts else None
        config["checkpoint"] = checkpoint or config.pop("checkpoint_path", None)
        # model_config: the loader options (g2u.loading), the checkpoint copied in the artifacts or by path
        options = LoaderOptions.parse({k: v for k, v in config.items() if k in LOADER_FIELDS})
        self.pipeline = options.load()

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd

        from g2u.batch import RawItem, outcome_body, run_batch
        from g2u.images import png_bytes

        rows = model_input.to_dict("records") if isinstance(model_input, pd.DataFrame) else list(model_input)
        raws = [RawItem({k: v for k, v in row.items() if _present(v)}) for row in rows]
        out = []
        for raw, outcome in zip(raws, run_batch(self.pipeline, raws), strict=True):
            if not outcome.ok or outcome.result is None:  # the row's id comes back even when the row is refused
                rid = raw.fields.get("id")
                out.append({"error": json.dumps(outcome_body(outcome)), "status": outcome.status,
                            "id": None if rid is None else str(rid)})
                continue
            result, body = outcome.result, outcome_body(outcome)
            edit = body["edit"] or {}
            fid = body["fidelity"] or {}
            thought = result.thought if outcome.request and outcome.request.return_thought else None
            out.append({"answer": result.answer, "mode": result.mode, "id": result.id,
                        "edit": json.dumps(body["edit"]), "fidelity": json.dumps(body["fidelity"]),
                        "edit_prompt": edit.get("prompt"), "family": edit.get("family"),
                        "ssim": fid.get("ssim"), "psnr": fid.get("psnr"), "demo": result.model["demo"],
                        "status": 200,
                        "thought": base64.b64encode(png_bytes(thought.image)).decode() if thought else None})
        return pd.DataFrame([{c: row.get(c) for c in OUTPUT_COLUMNS} for row in out], columns=OUTPUT_COLUMNS)
