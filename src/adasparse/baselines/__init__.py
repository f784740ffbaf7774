"""Reference pruning methods the adaptive loss is compared against: magnitude pruning (one-shot and gradual).

Layer: beside ``export``, above ``control``; may import ``control`` and ``core``, not ``export``.
"""
