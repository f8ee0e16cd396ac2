"""The arguments of push and demo."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from hf_indosent.inference.arguments import DEFAULT_HOST
from hf_indosent.modeling.folders import backend_files, resolve_model_source


def check_repo_id(repo_id: str) -> None:
    """Refuse anything but ``owner/name`` before any network call."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        repo_id_ok = False
    else:
        repo_id_ok = repo_id.count("/") == 1
    if not repo_id_ok:
        raise ValueError(
            f"repo id {repo_id!r} is not a Hub model id: use OWNER/NAME (your user or organisation name, a slash, "
            "then letters, digits, '-', '_' or '.'), e.g. your-user/indobert-smsa"
        )


@dataclass
class PushArguments:
    model: str = field(metadata={"help": "Model folder saved by training (OUTPUT_DIR/best) or the run folder."})
    repo_id: str = field(metadata={"help": "Hub repository OWNER/NAME; created if missing."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    run_dir: str | None = field(
        default=None, metadata={"help": "Folder with metrics.json and args.json (default: the model folder's parent)."}
    )

    space: str | None = field(
        default=None,
        metadata={
            "help": "Also create or update a Gradio demo Space OWNER/NAME that loads this model by its repo id "
            '(needs the demo extra: pip install -e ".[demo]").'
        },
    )

    def __post_init__(self) -> None:
        if not Path(self.model).is_dir():
            raise ValueError(f"--model {self.model!r} is not a folder: pass OUTPUT_DIR/best or the run folder")
        if self.run_dir is not None and not Path(self.run_dir).is_dir():
            raise ValueError(f"--run_dir {self.run_dir!r} is not a folder: pass the training OUTPUT_DIR")
        check_repo_id(self.repo_id)
        if self.space is not None:
            check_repo_id(self.space)
        resolve_model_source(self.model)


@dataclass
class DemoArguments:
    """``hf-indosent demo`` options; light (stdlib only) so it can live with the other commands' arguments."""

    model: str = field(
        metadata={"help": "Fine-tuned model: a run folder (its best/ is used), a model folder, or a Hub id."}
    )
    host: str = field(
        default=DEFAULT_HOST, metadata={"help": "Address to listen on; 0.0.0.0 opens the demo to your network."}
    )
    port: int | None = field(default=None, metadata={"help": "Port (default: 7860, or the next free one)."})
    share: bool = field(default=False, metadata={"help": "Also open a public *.gradio.live link (needs internet)."})
    device: str | None = field(default=None, metadata={"help": "'cpu', 'cuda' or 'cuda:N' (default: GPU if any)."})

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError("--model is empty: pass a training run folder (OUTPUT_DIR), its best/ or a Hub id")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"--port {self.port} is not a TCP port: use 1..65535, or leave it unset for 7860")
        if not self.host.strip():
            raise ValueError("--host is empty: use 127.0.0.1 (this machine only) or 0.0.0.0 (your network)")
        resolve_model_source(self.model, weight_files=backend_files("auto"))  # the demo's predictor picks by files
