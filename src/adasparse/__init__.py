"""adasparse: prune any PyTorch model to the sparsity you ask for, during ordinary training.

One trainable threshold per layer, learned with the adaptive sparsity loss (Retsinas et al., ICIP 2021)::

    import adasparse
    adasparse.sparsify(model, target=0.9)
    criterion = adasparse.SparsityLoss(model, target=0.9, mode="adaptive", weight=10.0)
    optimizer = torch.optim.SGD(adasparse.param_groups(model, lr=0.1, weight_decay=5e-4), momentum=0.9)
    for x, y in loader:
        loss = F.cross_entropy(model(x), y) + criterion()
        ...
    adasparse.calibrate(model, 0.9)            # optional: exact target
    print(adasparse.sparsity_report(model))
    adasparse.desparsify(model)                # plain modules, zeros baked in
    adasparse.save_sparse(model, "pruned.safetensors")   # compressed checkpoint (pip install "adasparse[export]")
    adasparse.to_sparse_inference(model)       # sparse Linear layers where they beat dense ones on CPU

The package is layered (``core`` < ``control`` < ``export`` | ``baselines`` < ``integrations`` < ``app``, see the
README's Layout); this module and :mod:`adasparse.compat` sit above every layer and only re-export. The module paths
of the flat layout before it (``adasparse.loss``, ``adasparse.train``, ...) stay importable: :mod:`adasparse._paths`.
"""

from . import _paths, compat
from ._version import __version__
from .baselines import magnitude
from .compat import adaptive_loss, iter_desparsify, iter_sparsify, sparsity
from .control.loss import SparsityLoss
from .control.pruner import Pruner, PrunerConfig, PrunerResult
from .core import schedules
from .core.attention_heads import AttentionHeads
from .core.calibrate import CalibrationResult, calibrate
from .core.latency_table import LatencyTable, measure_latency
from .core.operator import analytic_sparsity, effective_weight, threshold_for_sparsity
from .core.parametrization import PrunedTensor, is_sparsified, original_class, pruned_tensors
from .core.report import LayerSparsity, SparsityReport, sparsity_report, state_dict_report
from .core.selection import select_layers
from .core.shrink import shrink
from .core.sparsify import desparsify, param_groups, reset_thresholds, sparsify, threshold_parameters
from .export.inference import SparseLinear, to_sparse_inference
from .export.onnx_export import export_onnx
from .export.sparse import load_sparse, save_sparse

_paths.install()

__all__ = [
    "AttentionHeads",
    "CalibrationResult",
    "LatencyTable",
    "LayerSparsity",
    "PrunedTensor",
    "Pruner",
    "PrunerConfig",
    "PrunerResult",
    "SparseLinear",
    "SparsityLoss",
    "SparsityReport",
    "__version__",
    "adaptive_loss",
    "analytic_sparsity",
    "calibrate",
    "compat",
    "desparsify",
    "effective_weight",
    "export_onnx",
    "is_sparsified",
    "iter_desparsify",
    "iter_sparsify",
    "load_sparse",
    "magnitude",
    "measure_latency",
    "original_class",
    "param_groups",
    "pruned_tensors",
    "reset_thresholds",
    "save_sparse",
    "schedules",
    "select_layers",
    "shrink",
    "sparsify",
    "sparsity",
    "sparsity_report",
    "state_dict_report",
    "threshold_for_sparsity",
    "threshold_parameters",
    "to_sparse_inference",
]
