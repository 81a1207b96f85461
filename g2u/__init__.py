"""g2u: Generation-to-Understanding inference (edit the image into a visual thought, then answer)."""

from g2u.errors import CheckpointError, G2UError, InputError, ModelError

__version__ = "0.1.0"
__all__ = ["CheckpointError", "G2UError", "InputError", "ModelError", "__version__"]
