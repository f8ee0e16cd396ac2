"""The search space file of ``hf-indosent sweep``: recipe keys mapped to what to try, checked whole before any trial.

::

    learning_rate: {low: 5.0e-5, high: 3.0e-4, log: true}   # a float range, sampled on a log scale
    num_train_epochs: {low: 3, high: 6}                      # an integer range (the key is an integer)
    focal_gamma: {low: 0.0, high: 2.0, step: 0.5}            # a range on a grid
    per_device_train_batch_size: {choices: [16, 32]}         # a list of values
    weight_decay: 0.01                                       # a fixed value (a recipe override)

Any key of the recipe (train's options) can be searched except those that say where and how a run is written or
reported (:data:`NOT_SEARCHED`). A bad file, an unknown key (with the nearest one), a value of the wrong type, an empty
range and a combination the recipe's own checks refuse are each one line (:class:`RecipeError`) before any trial
starts: the corners of every range and every choice are combined and checked as training would check them.
Standard library and YAML only.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from hf_indosent.core.arguments import ArgumentError, RecipeError
from hf_indosent.core.suggest import did_you_mean

NOT_SEARCHED = {
    "output_dir": "each trial writes its own run folder inside the sweep folder",
    "overwrite_output_dir": "the sweep manages its trial folders",
    "resume_from_checkpoint": "the sweep resumes trials itself: run the same command again",
    "push_to_hub": "push the best model after the sweep: hf-indosent push --model SWEEP_DIR/best",
    "hub_model_id": "push the best model after the sweep",
    "hub_private": "push the best model after the sweep",
    "report_to": "set it in the recipe or on the command line: every trial reports to the same trackers",
    "tracker_project": "set it in the recipe or on the command line",
    "run_name": "each trial is named after its folder",
    "dataset_cache_dir": "where the data is cached does not change a trial",
    "dataloader_num_workers": "loader processes do not change a trial",
    "adapt_config": "an adaptation recipe is fixed for the sweep (search adaptation with its own recipe)",
}
"""Recipe keys a space may not search, with the reason its refusal gives."""
RANGE_FIELDS = ("low", "high", "log", "step")
MAX_COMBINATIONS = 4096
"""Corner combinations checked before the first trial (beyond that, each key's values are checked alone)."""


@dataclass(frozen=True)
class Param:
    """One key of the space: ``kind`` is 'float', 'int', 'choices' or 'fixed'."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None

    def corners(self) -> list[Any]:
        """The values whose combinations are checked before any trial."""
        if self.kind in ("float", "int"):
            return [self.low, self.high]
        return list(self.choices) if self.kind == "choices" else [self.value]

    def suggest(self, trial: Any) -> Any:
        """This key's value for an Optuna trial (a fixed value is not asked)."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        if self.kind == "choices":
            return trial.suggest_categorical(self.name, list(self.choices))
        return self.value


def recipe_fields(groups: Sequence[Any]) -> dict[str, tuple[int, Any]]:
    """Recipe key -> (index of the dataclass it belongs to, its type)."""
    found = {}
    for index, group in enumerate(groups):
        hints = typing.get_type_hints(type(group))
        for item in dataclasses.fields(group):
            found[item.name] = (index, hints[item.name])
    return found


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        options = [option for option in typing.get_args(annotation) if option is not type(None)]
        return options[0], True
    return annotation, False


def _typed(where: str, value: Any, annotation: Any) -> Any:
    """``value`` as the recipe key's type, or a RecipeError naming where it is and what was expected."""
    kind, optional = _base_type(annotation)
    if value is None:
        if optional:
            return None
        raise RecipeError(f"{where}: null is not allowed for this key")
    if typing.get_origin(kind) is list:
        if isinstance(value, list) and all(isinstance(item, (str, int, float)) for item in value):
            return [str(item) for item in value]
        raise RecipeError(f"{where}: {value!r} is not a list of values")
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and not isinstance(value, bool):
        try:
            number = float(value)  # YAML reads 3e-4 (no dot) as a string
        except (TypeError, ValueError):
            number = math.nan
        if math.isfinite(number):
            return number
    if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    name = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(kind, str(kind))
    raise RecipeError(f"{where}: {value!r} is not {name}")


def _param(path: str, name: str, spec: Any, annotation: Any) -> Param:
    where = f"space file {path!r}: {name}"
    kind, _ = _base_type(annotation)
    if not isinstance(spec, Mapping):
        return Param(name, "fixed", value=_typed(where, spec, annotation))
    fields = set(spec)
    if "choices" in fields:
        extra = sorted(fields - {"choices"})
        if extra:
            raise RecipeError(f"{where}: {{choices: [...]}} takes nothing else, but has {extra}")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise RecipeError(f"{where}: choices must be a non-empty list, e.g. {{choices: [16, 32]}}")
        typed = [_typed(f"{where}: choice {choice!r}", choice, annotation) for choice in choices]
        if any(isinstance(choice, list) for choice in typed):
            raise RecipeError(f"{where}: choices of lists cannot be searched: fix the value instead")
        if len(set(typed)) < len(typed):
            raise RecipeError(f"{where}: choices {choices} repeat a value")
        return Param(name, "choices", choices=tuple(typed))
    unknown = sorted(fields - set(RANGE_FIELDS))
    if unknown:
        raise RecipeError(
            f"{where}: unknown field {unknown[0]!r}{did_you_mean(unknown[0], (*RANGE_FIELDS, 'choices'), quote=True)}"
            "; a range is {low: ..., high: ...} with optional log: true or step: ..., a list is {choices: [...]}"
        )
    if not {"low", "high"} <= fields:
        raise RecipeError(f"{where}: a range needs both low and high, e.g. {{low: 1.0e-5, high: 1.0e-4}}")
    if kind not in (int, float):
        raise RecipeError(f"{where}: a {getattr(kind, '__name__', kind)} key has no range: use {{choices: [...]}}")
    low = _typed(f"{where}: low", spec["low"], kind)
    high = _typed(f"{where}: high", spec["high"], kind)
    log = spec.get("log", False)
    step = None if spec.get("step") is None else _typed(f"{where}: step", spec["step"], kind)
    if not isinstance(log, bool):
        raise RecipeError(f"{where}: log must be true or false")
    if low is None or high is None or low >= high:
        extra = " (one value: write it as a fixed value)" if low == high else ""
        raise RecipeError(f"{where}: the range from {low} to {high} is empty: low must be below high{extra}")
    if log and low <= 0:
        raise RecipeError(f"{where}: a log range needs low > 0, not {low}")
    if step is not None and (step <= 0 or log):
        raise RecipeError(f"{where}: step must be > 0 and cannot be combined with log: true")
    return Param(name, "int" if kind is int else "float", low=low, high=high, log=log, step=step)


def load_space(path: str, groups: Sequence[Any]) -> list[Param]:
    """The space file at ``path`` over the recipe ``groups`` (model, data and training arguments), checked whole:
    syntax, keys, types, ranges, then every combination of corners as training would check it."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except OSError as err:
        raise RecipeError(f"space file {path!r} cannot be read ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise RecipeError(f"space file {path!r} is not valid YAML{at}: fix the syntax") from None
    except UnicodeDecodeError:
        raise RecipeError(f"space file {path!r} is not UTF-8 text: save it as UTF-8") from None
    if not isinstance(content, dict) or not content:
        raise RecipeError(
            f"space file {path!r} must map recipe keys to ranges, e.g. learning_rate: {{low: ..., high: ...}}"
        )
    fields = recipe_fields(groups)
    unknown = sorted(str(key) for key in content if key not in fields)
    if unknown:
        near = did_you_mean(unknown, fields, quote=True)
        raise RecipeError(f"space file {path!r} has unknown recipe keys {unknown}{near}; see train --help")
    for key in content:
        if key in NOT_SEARCHED:
            raise RecipeError(f"space file {path!r}: {key} cannot be searched ({NOT_SEARCHED[key]})")
    params = [_param(path, key, spec, fields[key][1]) for key, spec in content.items()]
    if all(param.kind == "fixed" for param in params):
        raise RecipeError(f"space file {path!r} searches nothing: give at least one key a range or choices")
    check_combinations(path, params, groups)
    return params


def apply(groups: Sequence[Any], values: Mapping[str, Any]) -> list[Any]:
    """The recipe ``groups`` with ``values`` set (each dataclass checked again, as training checks it)."""
    fields = recipe_fields(groups)
    changes: list[dict[str, Any]] = [{} for _ in groups]
    for key, value in values.items():
        changes[fields[key][0]][key] = value
    return [
        dataclasses.replace(group, **change) if change else group for group, change in zip(groups, changes, strict=True)
    ]


def check_combinations(path: str, params: Sequence[Param], groups: Sequence[Any]) -> None:
    """Every combination of the params' corners must pass the recipe's checks (or, beyond
    :data:`MAX_COMBINATIONS`, each param's values with the others at their first)."""
    corners = [param.corners() for param in params]
    total = math.prod(len(values) for values in corners)
    if total <= MAX_COMBINATIONS:
        combinations = itertools.product(*corners)
    else:
        first = [values[0] for values in corners]
        combinations = (
            tuple(value if i == index else first[i] for i in range(len(params)))
            for index, values in enumerate(corners)
            for value in values
        )
    for combination in combinations:
        values = {param.name: value for param, value in zip(params, combination, strict=True)}
        try:
            apply(groups, values)
        except ArgumentError as err:
            shown = ", ".join(f"{p.name}={values[p.name]!r}" for p in params if p.kind != "fixed")
            raise RecipeError(f"space file {path!r}: the trial {shown} cannot run: {err}") from None


def describe(params: Sequence[Param]) -> dict[str, Any]:
    """The space as plain data (sweep.json: a resumed sweep must search the same space)."""
    return {
        param.name: {k: v for k, v in dataclasses.asdict(param).items() if v not in (None, (), False)}
        for param in params
    }


def recipe_values(params: Sequence[Param], groups: Sequence[Any]) -> dict[str, Any]:
    """The recipe's own values of the searched keys that the space contains (a baseline trial)."""
    current = {key: value for group in groups for key, value in dataclasses.asdict(group).items()}
    values = {}
    for param in params:
        value = current[param.name]
        inside = (param.kind in ("float", "int") and value is not None and param.low <= value <= param.high) or (
            param.kind == "choices" and value in param.choices
        )
        if inside:
            values[param.name] = value
    return values
