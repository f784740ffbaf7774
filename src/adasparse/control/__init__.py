"""What steers the thresholds during training: the sparsity loss (its modes, penalties and projection) and the
:class:`~adasparse.control.pruner.Pruner` that runs a whole pruning schedule.

Layer: above ``core``; may import ``core`` only.
"""
