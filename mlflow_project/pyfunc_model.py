"""The G→U pipeline as an MLflow pyfunc model.

Input: a DataFrame (or list of dicts) with the REST request fields — ``image`` (base64), ``question``,
optional ``options``, ``mode``, ``prompt_name``, ``steps``, ``seed``... Output: one row per request with
``answer``, ``mode``, ``edit_prompt``, ``family``, ``ssim``, ``psnr``, ``demo`` and, when asked
(``return_thought``), the thought as base64 PNG. Bad rows get ``error`` instead of failing the batch.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import mlflow.pyfunc

OUTPUT_COLUMNS = ["answer", "mode", "edit_prompt", "family", "ssim", "psnr", "demo", "thought", "error"]
# Request fields the signature declares (image and question required; the rest optional, as over REST).
INPUT_COLUMNS = {"image": "string", "question": "string", "options": "string", "mode": "string",
                 "prompt": "string", "prompt_name": "string", "family": "string", "writer": "string",
                 "steps": "long", "text_cfg": "double", "image_cfg": "double", "seed": "long",
                 "edit_size": "string", "max_new_tokens": "long", "return_thought": "boolean"}


def pyfunc_signature():
    """Image and question required, every other request field optional (``options`` as a JSON list)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec(kind, name, required=name in ("image", "question"))
                     for name, kind in INPUT_COLUMNS.items()])
    outputs = Schema([ColSpec("string", c, required=False) for c in OUTPUT_COLUMNS if c not in ("ssim", "psnr",
                                                                                                  "demo")]
                     + [ColSpec("double", "ssim", required=False), ColSpec("double", "psnr", required=False),
                        ColSpec("boolean", "demo", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


class G2UPyfuncModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from g2u.pipeline import G2UPipeline

        config = context.model_config or {}
        checkpoint = context.artifacts.get("checkpoint") if context.artifacts else None
        checkpoint = checkpoint or config.get("checkpoint_path")
        self.pipeline = G2UPipeline.from_checkpoint(checkpoint, config.get("backend") or None,
                                                    device=config.get("device"), dtype=config.get("dtype"))

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd

        from g2u.errors import InputError
        from g2u.images import png_bytes
        from g2u.requests import parse_request

        rows = model_input.to_dict("records") if isinstance(model_input, pd.DataFrame) else list(model_input)
        out: list[dict[str, Any] | None] = [None] * len(rows)
        requests, where = [], []
        for i, row in enumerate(rows):
            fields = {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and v != v)}
            if isinstance(fields.get("options"), str) and fields["options"].startswith("["):
                fields["options"] = json.loads(fields["options"])
            try:
                req = parse_request(fields, modes=self.pipeline.modes)
                self.pipeline.check(req)
            except InputError as exc:
                out[i] = {"error": json.dumps(exc.to_dict())}
                continue
            requests.append(req)
            where.append(i)
        for i, req, result in zip(where, requests, self.pipeline(requests) if requests else []):
            edit = result.thought.edit if result.thought else None
            fid = result.thought.fidelity if result.thought else {}
            out[i] = {"answer": result.answer, "mode": result.mode, "edit_prompt": edit.prompt if edit else None,
                      "family": edit.family if edit else None, "ssim": fid.get("ssim"), "psnr": fid.get("psnr"),
                      "demo": result.model["demo"],
                      "thought": base64.b64encode(png_bytes(result.thought.image)).decode()
                      if req.return_thought and result.thought else None}
        return pd.DataFrame([{c: row.get(c) for c in OUTPUT_COLUMNS} for row in out], columns=OUTPUT_COLUMNS)
