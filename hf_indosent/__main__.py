"""``python -m hf_indosent <command>``: the same CLI, e.g. under ``accelerate launch -m hf_indosent predict ...``."""

import sys

from hf_indosent.cli import main

sys.exit(main())
