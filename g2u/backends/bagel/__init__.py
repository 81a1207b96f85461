"""The ``bagel`` backend: BAGEL-7B-MoT (the paper's model), native, from the released checkpoint layout."""

from g2u.backends.bagel.backend import BagelBackend
from g2u.backends.bagel.params import BagelEditParams, VaeImage

__all__ = ["BagelBackend", "BagelEditParams", "VaeImage"]
