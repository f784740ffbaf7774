"""The application: training runs and their recipes, the compared methods, benchmarks and plots, distributed
launch, the command line, data sets, model zoo and run directories (:mod:`~adasparse.app.runs`).

Layer: the top one; may import every other subpackage. Nothing below imports it.

``train.py`` (about 800 lines), ``bench.py`` (about 580) and ``cli.py`` (about 460) are longer than the ~400 lines the
project aims at: each is one command's single flow (a training run, a benchmark suite, the argument parser and its
sub-commands). They are still to be split (the configuration and the checkpoint checks out of ``train.py``, the
suite definitions out of ``bench.py``, the ``train`` option table out of ``cli.py``).
"""
