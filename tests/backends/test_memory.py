"""Memory fit (g2u.memory): settings that cannot run here are refused by field before anything changes;
torchao int8 weight-only runs end to end on the demo on CPU, with its drift against the unquantized model
measured and bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from g2u.backends import backend_class
from g2u.errors import InputError
from g2u.memory import apply_memory_fit, validate_memory_fit
from g2u.pipeline import G2UPipeline
from g2u.schema import parse_request


@pytest.mark.parametrize(("offload", "quantize", "backend", "field", "reason"), [
    ("none", "fp8", None, "quantize", "needs a CUDA device"),
    ("none", "nf4", None, "quantize", "needs a CUDA device"),
    ("model", "none", None, "offload", "moves weights between CPU memory and a GPU"),
    ("group", "int8", None, "offload", "moves weights between CPU memory and a GPU"),
    ("sequential", "int8", None, "offload", "do not carry int8-quantized weights"),
    ("model", "none", "bagel", "offload", "hooks would never fire"),
    ("disk", "none", None, "offload", "unknown setting 'disk'"),
    ("none", "int4", None, "quantize", "unknown setting 'int4'"),
])
def test_settings_that_cannot_run_are_refused_by_field(offload, quantize, backend, field, reason):
    with pytest.raises(InputError, match=reason) as info:
        validate_memory_fit(offload, quantize, "cpu", backend_class(backend).no_offload if backend else None)
    assert info.value.field == field


def test_int8_and_none_are_accepted_on_cpu():
    validate_memory_fit("none", "int8", "cpu", backend_class("bagel").no_offload)
    validate_memory_fit("none", "none", "cpu", backend_class("qwen_image_edit").no_offload)


def _request(image):
    return parse_request({"question": "What colour is the disc?", "options": ["red", "blue"], "mode": "g2u",
                          "steps": 2, "seed": 3}, image=image)


def _answer_logits(pipe: G2UPipeline) -> torch.Tensor:
    """Logits of the understanding model (the pipeline's text encoder) on a fixed token sequence."""
    model = pipe.backend.answer_model
    ids = torch.arange(3, 35).remainder(model.config.get_text_config().vocab_size).unsqueeze(0)
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)


def test_int8_weight_only_runs_the_demo_end_to_end_with_bounded_drift(demo_root, rgb_image):
    checkpoint = str(demo_root / "qwen_image_edit")
    reference = G2UPipeline.from_checkpoint(checkpoint, "qwen_image_edit")
    quantized = G2UPipeline.from_checkpoint(checkpoint, "qwen_image_edit")
    linears = {name: sum(isinstance(m, torch.nn.Linear) for m in module.modules())
               for name, module in (("transformer", quantized.backend.pipe.transformer),
                                    ("text_encoder", quantized.backend.pipe.text_encoder))}

    fit = apply_memory_fit(quantized.backend, quantize="int8")

    # what was reported is what happened: each model's Linear layers whose weight is now a torchao int8
    # tensor, counted on the quantized model itself — every Linear of both models
    models = {"transformer": quantized.backend.pipe.transformer, "text_encoder": quantized.backend.pipe.text_encoder}
    int8 = {name: sum(isinstance(m, torch.nn.Linear) and type(m.weight).__module__.startswith("torchao")
                      for m in module.modules()) for name, module in models.items()}
    assert fit.quantized == int8 == linears and all(linears.values())
    assert quantized.model_info["dtype"] == "float32+int8"  # results tell quantized runs apart

    [ref] = reference([_request(rgb_image)])
    [out] = quantized([_request(rgb_image)])
    assert isinstance(out.answer, str) and out.thought is not None
    assert out.thought.image.size == ref.thought.image.size

    l0, l1 = _answer_logits(reference), _answer_logits(quantized)
    rel = ((l1 - l0).norm() / l0.norm()).item()
    similarity = ssim(_to_tensor(out.thought.image), _to_tensor(ref.thought.image), data_range=1.0).item()
    print(f"int8 weight-only drift on the demo: answer-logit relative error {rel:.2e}, thought SSIM {similarity:.4f}")
    # int8 per-channel weights keep ~2-3 significant digits: the logits move by well under a percent, the
    # thought stays structurally the same picture. Both must have moved at all (the weights did change).
    assert 0 < rel < 0.02
    assert 0.95 < similarity <= 1.0


def test_a_refused_setting_leaves_the_backend_untouched(demo_root):
    pipe = G2UPipeline.from_checkpoint(str(demo_root / "qwen_image_edit"), "qwen_image_edit")
    before = {k: v.clone() for k, v in pipe.backend.pipe.transformer.state_dict().items()}
    with pytest.raises(InputError) as info:
        apply_memory_fit(pipe.backend, quantize="nf4")
    assert info.value.field == "quantize"
    after = pipe.backend.pipe.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert pipe.model_info["dtype"] == "float32"
