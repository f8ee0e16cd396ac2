"""Fine-tune a sentiment classifier on SmSA (or your own data) with the tutorial's recipe.

    accelerate launch --config_file accelerate_config.yaml scripts/train.py --config configs/smsa-indobert-base-p1.yaml

Any recipe value can be overridden on the command line (e.g. --data_dir ../shared/smsa --num_train_epochs 1);
`python scripts/train.py --help` lists them all. Same as `hf-indosent train ...`.
"""

import sys

from hf_indosent.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
