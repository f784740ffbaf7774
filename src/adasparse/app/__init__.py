"""The application: training runs and their recipes, the compared methods, benchmarks and plots, distributed
launch, the command line, data sets, model zoo and run directories (:mod:`~adasparse.app.runs`).

Layer: the top one; may import every other subpackage. Nothing below imports it.

A run: ``config.py`` holds what determines it (``TrainConfig``, the recipes), ``checkpoints.py`` its saved state
(configuration, checkpoint checks and restore, pretrained-start weights), ``train.py`` the loop over the epochs,
``epoch.py`` one epoch's training and evaluation, ``finish.py`` the end of the run (calibration, report,
``RunResult``), ``batchnorm.py`` the finished model's BatchNorm statistics checked and recomputed. ``bench.py`` runs the
suites defined in ``bench_suites.py``, ``bench_results.py`` writes their results page. ``cli.py`` builds the parser
and dispatches the commands, ``cli_train.py`` is ``adasparse train``.
Every module is under the ~400 lines the project aims at; names that moved stay importable from the module that
defined them before (``train``, ``bench``).
"""
