"""A leak-free G→U sandbox: procedurally drawn scenes whose answers are known by construction.

Each sample is a clean scene, a question about it, and a controlled degradation of the image with a
severity. The clean image is the sample's oracle thought, so the G→U effect is known in advance:
answering from the degraded image should be worse than from the clean one, and answering from
[degraded I, q, clean Î] should recover the gap. Modules: ``scenes`` (drawing), ``questions``,
``degrade``, ``build`` (the manifest writer), ``leaks`` (the leak check), ``report`` and ``cli``.
"""
