"""Train one recipe over several seeds and report mean ± std of the validation metrics.

    python scripts/seeds.py --seeds 42,1,2 --output_dir outputs/seeds --config configs/smsa-minilm-offline.yaml

Every other argument goes to scripts/train.py; each seed trains into OUTPUT_DIR/seed-N in its own process, and
OUTPUT_DIR/seeds.json gathers the results (see hf_indosent/training/seeds.py).
"""

import sys
from pathlib import Path

from hf_indosent.training.seeds import main

if __name__ == "__main__":
    sys.exit(main(train_script=Path(__file__).with_name("train.py")))
