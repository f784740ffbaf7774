"""The pruning mechanism itself: the thresholded operator, its attachment to modules, layer selection, the
``state_dict`` key codec, sparsity reports, calibration, FLOP counts and schedules; and structured sparsity: the
granularities (``granularity.py``), channel and head sets (``channel_sets.py``) found through torch-pruning's
dependency graph (``coupling.py``), the cost of the shrunk model (``channel_cost.py``) and ``shrink.py`` with its
smaller attention (``pruned_attention.py``).

Layer: the bottom one. Imports nothing from adasparse outside ``core`` (and ``adasparse._version``).
"""
