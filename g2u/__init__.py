"""g2u: Generation-to-Understanding inference (edit the image into a visual thought, then answer)."""

import logging

from g2u.errors import CheckpointError, G2UError, InputError, ModelError

# torchao (the int8/fp8 weight-only engine, imported by diffusers whenever it is installed) logs a warning
# per CUDA kernel library it cannot load on every import, even on CPU-only machines where none is needed.
logging.getLogger("torchao").setLevel(logging.ERROR)
# ...and registers its enums with torch's pytree, which warns that this is deprecated, on every import.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
# diffusers 0.42 looks for torchao tensor classes that torchao 0.18 moved, to load checkpoints *serialized*
# quantized; g2u quantizes after loading (g2u.memory), so that warning on every import does not apply.
logging.getLogger("diffusers.quantizers.torchao.torchao_quantizer").setLevel(logging.ERROR)

__version__ = "0.1.0"
__all__ = ["CheckpointError", "G2UError", "InputError", "ModelError", "__version__"]
