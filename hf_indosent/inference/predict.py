"""The predict command: label texts from arguments, stdin or a file, or write the IndoNLU submission."""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from hf_indosent.core.files import atomic_path, check_output_file, check_output_spares_inputs
from hf_indosent.data.indonlu import load_task
from hf_indosent.inference.arguments import InferenceArguments, PredictArguments
from hf_indosent.inference.inputs import open_input, read_lines
from hf_indosent.inference.model_task import predictor_task
from hf_indosent.inference.outputs import ResultWriter, reader_gone
from hf_indosent.inference.predictor import load_predictor
from hf_indosent.inference.submission import write_submission

logger = logging.getLogger(__name__)


def input_rows(args: PredictArguments) -> Iterator[Any]:
    """The rows of ``--texts``, ``--file``, ``--dataset`` or stdin; a file or dataset is opened (and refused, if it
    cannot be read at all) now, before the model is loaded."""
    if args.texts is not None:
        return iter(args.texts)
    if args.file is None and args.dataset is None:
        return read_lines(sys.stdin.buffer)
    return open_input(args.file, args.text_column, dataset=args.dataset, split=args.split).rows()


def stop_when_reader_gone(handle: IO[str]) -> Callable[[], None]:
    """A :meth:`ChunkedPredictor.before_batch` for output to ``handle``: flush the rows written so far (they reach
    the reader now, and a closed pipe shows as EPIPE), then stop with BrokenPipeError if ``handle`` is a pipe whose
    reader has gone, so ``predict | head`` stops within a batch, not a chunk or the whole input, with nothing half
    written. The CLI runner exits quietly on it (and points stdout at /dev/null for Python's final flush)."""

    def check() -> None:
        handle.flush()
        if reader_gone(handle):
            raise BrokenPipeError(errno.EPIPE, "the reader of the output has gone")

    return check


def run_predict(inference: InferenceArguments, args: PredictArguments) -> dict[str, int]:
    """Run ``hf-indosent predict`` in one process, in one go; returns counts of rows written and rows with an error.

    ``--output`` is written to a temporary file beside it and renamed when complete, so an interrupted run (an error,
    Ctrl-C, SIGTERM) leaves the previous file as it was.
    """
    inputs = (args.submission, args.texts, args.file, args.dataset)
    if all(source is None for source in inputs) and sys.stdin.isatty():
        raise ValueError("no input: pass texts (--texts ...), --file, --dataset, --submission, or pipe text on stdin")
    if args.include_text is not None or args.include_scores is not None:
        raise ValueError(
            "--include_text and --include_scores shape the piece-wise output, but this run writes in one go (always "
            "with the text and every score): add --resumable, or drop them"
        )
    rows = input_rows(args) if args.submission is None else None  # an unreadable file: refused before the model loads
    predictor = load_predictor(inference)
    if rows is None:
        task = predictor_task(args.task, predictor)  # a model of another task is refused before the data loads
        test = load_task(task, args.data_dir, cache_dir=args.dataset_cache_dir)["test"]
        path, archive = write_submission(predictor, task, test["text"], args.submission)
        logger.info(
            "wrote %s (%d rows) and %s for the IndoNLU CodaLab portal (%s)", path, test.num_rows, archive, task.title
        )
        return {"rows": test.num_rows, "errors": 0}

    counts = {"rows": 0, "errors": 0}
    with contextlib.ExitStack() as stack:
        handle: IO[str] = sys.stdout
        if args.output is not None:
            temp = stack.enter_context(atomic_path(args.output))
            handle = stack.enter_context(open(temp, "w", encoding="utf-8", newline=""))
        else:
            predictor.before_batch = stop_when_reader_gone(handle)
        writer = ResultWriter(handle, args.output_format, predictor.label_names, predictor.aspects)
        rows_a, rows_b = itertools.tee(rows)
        for index, (row, result) in enumerate(zip(rows_a, predictor.stream(rows_b), strict=True)):
            writer.write(index, row, result)
            counts["rows"] += 1
            counts["errors"] += result["error"] is not None
    return counts


def check_outputs(inference: InferenceArguments, args: PredictArguments) -> None:
    """Every file predict writes is a file it may write: not a folder, and none of the files it reads."""
    inputs = {"--file": args.file, "--dataset": args.dataset, "--model": inference.model, "--data_dir": args.data_dir}
    outputs = {"--output": args.output}
    if args.submission is not None:
        outputs = {"--submission": args.submission, "--submission's zip": Path(args.submission).with_suffix(".zip")}
    for option, path in outputs.items():
        if path is not None:
            check_output_file(path, option)
            check_output_spares_inputs(path, option, inputs)


def cli_run(inference: InferenceArguments, args: PredictArguments) -> int:
    """``hf-indosent predict`` after argument parsing (errors are turned into one line by :mod:`hf_indosent.cli`)."""
    from hf_indosent.inference import at_scale as predict_at_scale  # imports this module, so not at the top

    check_outputs(inference, args)
    if predict_at_scale.is_piecewise(inference, args):
        predict_at_scale.run_piecewise(inference, args)  # reports on stderr itself
        return 0
    counts = run_predict(inference, args)
    if counts["errors"]:
        print(
            f"hf-indosent predict: {counts['errors']} of {counts['rows']} rows could not be classified (empty or "
            "unreadable text): their label is blank and the error column says why",
            file=sys.stderr,
        )
    return 0
