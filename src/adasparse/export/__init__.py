"""Pruned models leaving the library: the compressed sparse safetensors format (:mod:`~adasparse.export.sparse`),
sparse CPU inference layers (:mod:`~adasparse.export.inference`) and ONNX export
(:mod:`~adasparse.export.onnx_export`).

Layer: beside ``baselines``, above ``control``; may import ``control`` and ``core``. Nothing here knows about run
directories or training; that lives in :mod:`adasparse.app.runs`.

``adasparse.export`` was a single module before this package; its public names are re-exported here so
``from adasparse.export import save_sparse`` keeps working (the run-directory names are added by the top-level
package, see ``adasparse/__init__.py``).
"""

from . import sparse
from .sparse import *  # noqa: F403 - the format's public names, listed once: in sparse.__all__

__all__ = list(sparse.__all__)
