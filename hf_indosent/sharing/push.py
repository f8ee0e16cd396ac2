"""The push command: upload a model with its card, and its demo Space when asked."""

from __future__ import annotations

from hf_indosent.inference.model_task import model_labels
from hf_indosent.modeling.folders import resolve_model_source
from hf_indosent.sharing.arguments import PushArguments
from hf_indosent.sharing.hub import push_to_hub


def cli_run(args: PushArguments) -> int:
    """``hf-indosent push`` after argument parsing (errors are turned into one line by :mod:`hf_indosent.cli`)."""
    print(push_to_hub(args.model, args.repo_id, private=args.private, run_dir=args.run_dir))
    if args.space is not None:
        from hf_indosent.sharing.space import push_space  # the demo extra, only when asked

        task = model_labels(resolve_model_source(args.model))[2]  # the Space's README names the model's task
        print(push_space(args.space, args.repo_id, private=args.private, task=task))
    return 0
