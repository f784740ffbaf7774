"""`adasparse train` with the pruning operator replaced by a plain copy of the weight: a lower bound, not a method.

The run keeps everything else of the default method (the thresholds, the Pruner's step, the projection, the
fixed-mask fine-tuning, the checkpoints); only the arithmetic of the operator is gone (the copy has an identity
gradient and none for the threshold). ``end_to_end.py --lower-bound`` times it beside the default and GMP.

    python benchmarks/_copy_operator_train.py train --dataset mnist1d --model cnn1d ...
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import _copy_operator

from adasparse import parametrization
from adasparse.app.cli import main

if __name__ == "__main__":
    parametrization.effective_weight = _copy_operator
    sys.exit(main(sys.argv[1:]))
