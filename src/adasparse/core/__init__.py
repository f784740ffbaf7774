"""The pruning mechanism itself: the thresholded operator, its attachment to modules, layer selection, the
``state_dict`` key codec, sparsity reports, calibration, FLOP counts and schedules.

Layer: the bottom one. Imports nothing from adasparse outside ``core`` (and ``adasparse._version``).
"""
