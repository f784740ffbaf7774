"""What steers the thresholds during training: the sparsity loss and the :class:`~adasparse.control.pruner.Pruner`
that runs a whole pruning schedule.

``loss.py`` holds :class:`~adasparse.control.loss.SparsityLoss`, which composes the penalty modes
(``penalties.py``: adaptive, fixed, upper, constraint) or the projection mode (``projection.py``: the solver, the
measured distributions, the idle layers; for a model pruned by channels, the common shift of every set onto
``channel_budget.py``'s cost of the shrunk model); ``thresholds.py`` the thresholds' divergence check, clamp and
Adam step; ``pruner.py`` the life cycle, with its settings in ``config.py`` and its outcome in ``result.py``.

Layer: above ``core``; may import ``core`` only.
"""
