"""The pruning mechanism itself: the thresholded operator, its attachment to modules, layer selection, the
``state_dict`` key codec, sparsity reports, calibration, FLOP counts, schedules and which layers a per-channel norm
reads (``norm_inputs.py``, where the pruned-gradient bound acts); and structured sparsity: the
granularities (``granularity.py``), channel and head sets (``channel_sets.py``) found through torch-pruning's
dependency graph (``coupling.py``), the cost of the shrunk model (``channel_cost.py``; in measured time:
``latency_table.py``, ``latency_cost.py``, timed with the allocator fixed: ``allocator.py``) and ``shrink.py``
with its smaller attention (``pruned_attention.py``).

Layer: the bottom one. Imports nothing from adasparse outside ``core`` (and ``adasparse._version``).
"""
