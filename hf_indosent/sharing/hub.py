"""Share a trained model on the Hugging Face Hub: ``hf-indosent push`` and ``train --push_to_hub``.

One commit uploads what ``transformers.pipeline`` needs and nothing else: safetensors weights, ``config.json`` (with
id2label/label2id), the tokenizer files and a generated model card (README.md). The model is first loaded as
``predict`` loads it (:func:`~hf_indosent.modeling.loading.load_classifier`): weights that do not match the config (a
missing
head, another model's tensors) are refused before anything leaves the machine. The card is built in memory, so the
local model folder is only read, never written, whatever happens. The token comes from the usual huggingface_hub
sources (argument, ``HF_TOKEN``, cached ``hf auth login``); it is never printed, logged or written to disk, and any
error message is scrubbed of it before it is raised.
"""

from __future__ import annotations

import json
import logging
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HTTPError

from hf_indosent.inference.model_task import model_labels
from hf_indosent.modeling.folders import TOKENIZER_FILES, resolve_model_source
from hf_indosent.modeling.loading import load_classifier
from hf_indosent.sharing.arguments import check_repo_id
from hf_indosent.sharing.model_card import build_model_card

logger = logging.getLogger(__name__)

WEIGHTS_INDEX = "model.safetensors.index.json"
CARD_FILE = "README.md"
COMMIT_MESSAGE = "Upload sentiment model and model card (hf_indosent)"


class HubPushError(RuntimeError):
    """The upload could not be done; the message is one line that says why and what to do."""


def upload_patterns(model_dir: Path) -> list[str]:
    """The model folder's files that go to the Hub, as name patterns: safetensors weights, config, tokenizer.

    Refuses a folder without safetensors weights or tokenizer files; logs what stays behind.
    """
    if not any(model_dir.glob("*.safetensors")):
        raise ValueError(
            f"{model_dir} has no .safetensors weights: re-save the model with model.save_pretrained(folder) "
            "(safetensors is the default); other weight formats are not uploaded"
        )
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"{model_dir} has no tokenizer files: save the tokenizer there with tokenizer.save_pretrained")
    patterns = ["config.json", "*.safetensors", WEIGHTS_INDEX, *TOKENIZER_FILES]  # the card is generated, never local
    skipped = sorted(path.name for path in model_dir.iterdir() if not any(fnmatch(path.name, p) for p in patterns))
    if skipped:
        logger.info("not uploaded from %s: %s", model_dir, ", ".join(skipped))
    return patterns


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        logger.warning("%s not found: the model card will say so", path)
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): fix or remove it before pushing") from None


def _reason(err: Exception) -> str:
    """One line that says what went wrong with the Hub and what to do."""
    text = " ".join(str(err).split())
    if isinstance(err, HfHubHTTPError) and err.response is not None and err.response.status_code in (401, 403):
        return (
            f"the Hub refused the token (HTTP {err.response.status_code}): set HF_TOKEN or run `hf auth login` with a "
            "token that has write access to this namespace"
        )
    if isinstance(err, HfHubHTTPError):
        return f"the Hub answered with an error: {text}"
    return f"cannot reach the Hugging Face Hub ({type(err).__name__}: {text}); check the network or HF_HUB_OFFLINE"


def require_token(token: str | None = None) -> str:
    """The given token, else huggingface_hub's (``HF_TOKEN``, then the cached login); refuse when there is none."""
    token = token or get_token()
    if not token:
        raise HubPushError("no Hugging Face token found: set HF_TOKEN or run `hf auth login` (a write token)")
    return token


def check_hub_access(repo_id: str, token: str | None = None) -> None:
    """Before hours of training: a valid repo id, a token, and a Hub that accepts it (one whoami call)."""
    check_repo_id(repo_id)
    token = require_token(token)
    try:
        HfApi(token=token).whoami()
    except (OSError, HTTPError) as err:
        raise HubPushError(f"cannot push to {repo_id}: {_reason(err)}".replace(token, "<token>")) from None


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    run_dir: str | Path | None = None,
    token: str | None = None,
) -> str:
    """Upload a trained model folder with a generated model card in one commit; returns the repository URL.

    ``model_dir`` is a run's ``best/`` folder or the run folder itself. ``metrics.json`` and ``args.json`` are read
    from ``run_dir`` (default: the model folder's parent). Local problems raise ValueError; Hub problems (offline,
    refused token, server error) raise :class:`HubPushError` with a one-line reason.
    """
    check_repo_id(repo_id)
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ValueError(f"--model {str(model_dir)!r} is not a folder: pass OUTPUT_DIR/best or the run folder")
    folder = Path(resolve_model_source(folder))
    aspects, label_names, task = model_labels(str(folder))  # refuses generic LABEL_0 names before any upload
    patterns = upload_patterns(folder)
    load_classifier(folder)  # weights that do not match config.json are refused here, never served from the Hub
    run = Path(run_dir) if run_dir is not None else folder.parent
    seeds = run.parent / "seeds.json"  # scripts/seeds.py puts each seed's run folder beside it
    card = build_model_card(
        repo_id,
        label_names,
        _read_json(run / "metrics.json"),
        _read_json(run / "args.json"),
        seeds=_read_json(seeds) if seeds.is_file() else None,
        aspects=aspects,
        task=task,
    )
    token = require_token(token)
    files = sorted(path for path in folder.iterdir() if path.is_file() and any(fnmatch(path.name, p) for p in patterns))
    operations = [CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path)) for path in files]
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode("utf-8")))
    # create_commit, not upload_folder: with hf_xet installed, huggingface_hub 2.4's upload_folder may split a folder
    # into several commits, and a half-uploaded model must never be what the Hub serves. The card never touches disk.
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.create_commit(repo_id, operations, commit_message=COMMIT_MESSAGE, repo_type="model")
    except (OSError, HTTPError) as err:  # HfHubHTTPError, OfflineModeIsEnabled and connection errors
        raise HubPushError(f"cannot push to {repo_id}: {_reason(err)}".replace(token, "<token>")) from None
    logger.info("uploaded %s to %s", ", ".join(operation.path_in_repo for operation in operations), url)
    return str(url)
