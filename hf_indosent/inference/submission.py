"""``hf-indosent predict --submission``: the IndoNLU CodaLab file of any task of the family, and the zip to upload.

The format is IndoNLU's own (IndoNLP/indonlu ``submission_examples/``, which its README's "Submission Format" points
to): a header, then one comma-separated row per example of the masked test file, in its order, starting with its
``index`` (from 0):

* single-label tasks (SmSA ``doc-sentiment_test.csv``, EmoT ``emotion-twitter_test.csv``): ``index,label``, then
  rows such as ``0,positive``;
* aspect tasks (CASA ``absa-prosa_test.csv``, HoASA ``absa-airy_test.csv``): ``index`` and every aspect in IndoNLU's
  order (``index,fuel,machine,others,part,price,service``), then each example's label of every aspect
  (``0,neutral,positive,neutral,neutral,neutral,neutral``). IndoNLU's CASA notebook writes a list per row under one
  ``label`` column instead; the examples are what the README documents, so they are followed.

The portal takes the file as ``pred.txt`` inside a zip.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

from hf_indosent.core.files import atomic_path
from hf_indosent.data.tasks import Task
from hf_indosent.inference.base import ChunkedPredictor
from hf_indosent.inference.model_task import answers, check_task

SUBMISSION_MEMBER = "pred.txt"
"""File name the IndoNLU CodaLab portal expects inside the submission zip."""


def write_submission(
    predictor: ChunkedPredictor, task: Task, texts: Iterable[str], path: str | Path
) -> tuple[Path, Path]:
    """``task``'s submission file for the masked test ``texts`` (in file order) at ``path``, and its zip beside it.

    Written atomically: a model of another task, or a test text it cannot classify (the portal needs every row), is
    refused and leaves no file."""
    check_task(predictor, task)
    path = Path(path)
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(["index", *task.label_columns]) + "\n")
        for index, result in enumerate(predictor.stream(texts)):
            if result["error"] is not None:
                raise ValueError(
                    f"test example {index} cannot be classified ({result['error']}), and the portal needs a label for "
                    f"every row: check the {task.title} test file"
                )
            labels = [answer["label"] for answer in answers(result, task.aspects)]
            handle.write(",".join([str(index), *labels]) + "\n")
    archive = path.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.write(path, arcname=SUBMISSION_MEMBER)
    return path, archive
