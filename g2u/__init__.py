"""g2u: Generation-to-Understanding inference (edit the image into a visual thought, then answer)."""

import logging

from g2u.errors import CheckpointError, G2UError, InputError, ModelError

# torchao (the int8/fp8 weight-only engine, imported by diffusers whenever it is installed) logs a warning
# per CUDA kernel library it cannot load on every import, even on CPU-only machines where none is needed.
logging.getLogger("torchao").setLevel(logging.ERROR)

__version__ = "0.1.0"
__all__ = ["CheckpointError", "G2UError", "InputError", "ModelError", "__version__"]
