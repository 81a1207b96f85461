"""The ``bagel`` backend: BAGEL-7B-MoT (the paper's model), native, from the released checkpoint layout."""

from __future__ import annotations

from typing import Any

__all__ = ["BagelBackend", "BagelOptions", "VaeImage"]


def __getattr__(name: str) -> Any:
    # Lazy: the request schema imports BagelOptions without loading the model code.
    if name == "BagelBackend":
        from g2u.backends.bagel.backend import BagelBackend

        return BagelBackend
    if name in ("BagelOptions", "VaeImage"):
        from g2u.backends.bagel import params

        return getattr(params, name)
    raise AttributeError(name)
