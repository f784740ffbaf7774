"""Models for `adasparse train`, written with torch alone, one per file, created by name.

``create_model("wrn-16-8", num_classes=100, input_shape=(3, 32, 32))``.
"""

from __future__ import annotations

__all__ = ["create_model", "MODELS", "default_model"]
