"""Config and data files (YAML, CSV) checked against pydantic models, with one error type.

Every file the bus reads as data (the config, the topic catalog, the routing table, the code
maps, policies) has a model with ``extra="forbid"`` and a description per field. A file that does
not fit raises :class:`DataFileError`, whose message names the file, the key path and the
problem; for an unknown key it lists the keys allowed there.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from importlib.abc import Traversable
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

#: Text added after a value problem, given its key path (the config names the env variable).
Hint = Callable[[list[str]], str]
#: What to show of a refused value, given its dotted key (the config masks secrets).
Redact = Callable[[str, Any], Any]


class DataFileError(ValueError):
    """A config or data file that cannot be used; the message names the file, the key and why."""

    @classmethod
    def listing(cls, source: str, problems: Sequence[str]) -> DataFileError:
        """One error for several problems, one indented line each."""
        lines = [f"{source}: {len(problems)} problem(s)", *(f"  {p}" for p in problems)]
        return cls("\n".join(lines))


def read_yaml(
    model: type[BaseModel], file: Path | Traversable, source: str, *, keys: str = "keys"
) -> dict[str, Any]:
    """The top-level mapping of a YAML file ({} when empty); ``source`` names it in errors,
    ``keys`` names what the model's fields are (e.g. "sections")."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(f"{source}: cannot read it ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise DataFileError(f"{source}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataFileError(
            f"{source}: the top level must be a mapping of {keys} "
            f"({', '.join(model.model_fields)}), not a {type(data).__name__}"
        )
    return data


def validate(model: type[M], data: Any, source: str) -> M:
    """``data`` as a ``model``; a :class:`DataFileError` naming ``source`` when it does not fit."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DataFileError(explain(exc, model, source)) from None


def load_yaml(model: type[M], file: Path | Traversable, source: str) -> M:
    """A YAML file as a ``model`` (read_yaml, then validate)."""
    return validate(model, read_yaml(model, file, source), source)


def csv_rows(model: type[M], file: Path | Traversable, source: str) -> Iterator[M]:
    """The rows of a CSV file with a header line, each as a ``model``. Lines starting with '#'
    and blank lines are left out; cells are stripped. Errors name ``source:N``, N counting the
    rows left (the header is 1); the first bad row stops the file."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(f"{source}: cannot read it ({exc.strerror})") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    for number, row in enumerate(csv.DictReader(lines), 2):
        where = f"{source}:{number}"
        if None in row or any(v is None for v in row.values()):
            raise DataFileError.listing(where, ["wrong number of columns"])
        yield validate(model, {k: v.strip() for k, v in row.items()}, where)


def explain(
    exc: ValidationError,
    model: type[BaseModel],
    source: str,
    *,
    hint: Hint | None = None,
    redact: Redact | None = None,
) -> str:
    """A pydantic ValidationError as one line per problem under a line naming ``source``."""
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc)
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(allowed_keys(model, loc[:-1]))
            problems.append(f"{key}: unknown key; allowed here: {allowed}")
            continue
        value = error.get("input")
        if error["type"] == "missing":
            shown = "(missing)"
        else:
            shown = repr(redact(key, value) if redact else value)
        problems.append(f"{key} = {shown}: {error['msg']}{hint(loc) if hint else ''}")
    return str(DataFileError.listing(source, problems))


def allowed_keys(model: type[BaseModel], loc: Sequence[str]) -> list[str]:
    """The keys of the model found at key path ``loc`` (through lists, dicts, optionals)."""
    annotation: Any = model
    for part in loc:
        annotation = _inside(annotation, part)
        if annotation is None:
            return []
    found = _model_of(annotation)
    return list(found.model_fields) if found else []


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation: M, M | None, list[M], dict[str, M]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = nested_model(arg)
        if found is not None:
            return found
    return None


def _inside(annotation: Any, part: str) -> Any:
    """The annotation of key ``part`` of a value of ``annotation``; None when it has none."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _inside(get_args(annotation)[0], part)
    if origin in (Union, UnionType):
        for arg in get_args(annotation):
            found = None if arg is NoneType else _inside(arg, part)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part)
        return field.annotation if field else None
    args = get_args(annotation)
    if origin in (list, tuple, set, frozenset) and args:  # part is an item's index
        return args[0]
    if origin is dict and len(args) == 2:  # part is a key of the mapping
        return args[1]
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation is (M, M | None), not one it contains."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType, Annotated):
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None
