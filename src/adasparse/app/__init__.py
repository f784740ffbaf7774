"""The application: training runs and their recipes, the compared methods, benchmarks and plots, distributed
launch, the command line, data sets, model zoo and run directories (:mod:`~adasparse.app.runs`).

Layer: the top one; may import every other subpackage. Nothing below imports it.

``config.py`` holds what determines a run (``TrainConfig``, the recipes), ``checkpoints.py`` a run directory's
saved state (configuration, checkpoint checks and restore, pretrained-start weights), ``train.py`` the training
loop. ``train.py`` (about 570 lines), ``bench.py`` (about 580) and ``cli.py`` (about 460) are still longer than the
~400 lines the project aims at: each is one command's single flow; the suite definitions are still to move out of
``bench.py`` and the ``train`` option table out of ``cli.py``.
"""
