"""Every problem of a config file in one run: the base of the schema's models (:class:`CheckedModel`) and the checks
between a model's keys.

pydantic runs a model's ``after`` validators only once every field validated, so a file with a wrong value and a
conflict between two other keys needed two runs to show both. Each model's checks between keys are therefore its
``_cross_key_problems(values)``, which :class:`CheckedModel`'s wrap validator runs on the fields that validated
(each validated alone, as the model validates it), beside the field errors, in one ValidationError; a check that
needs a field that failed is skipped (:class:`Validated` raises :class:`Unknown`), never judged on a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

Problems = list[tuple[tuple[str | int, ...], str]]
"""Problems at keys relative to the model checked: ``[((key, ...), message)]``."""


def raise_all(title: str, problems: Problems) -> None:
    """Report several cross-field problems at once, each at its own key (relative to the model checked).

    pydantic-core merges a ValidationError raised in a validator into the outer one, prefixing the locations.
    """
    if problems:
        details = [
            InitErrorDetails(type=PydanticCustomError("config", "{message}", {"message": text}), loc=loc, input=None)
            for loc, text in problems
        ]
        raise ValidationError.from_exception_data(title, details)


class Unknown(Exception):
    """A cross-key check needed a field that did not validate: the check is skipped."""


class Validated:
    """A model's validated field values by attribute (``values.batch_mode``); a field that failed validation raises
    Unknown, so that a check that needs it is skipped rather than judged on a guess."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise Unknown(name) from None


def checks(*rules: tuple[str, Callable[[], object], str]) -> Problems:
    """The problems of ``rules``, each ``(key, condition, message)``: a problem at ``key`` when ``condition()`` is
    true; a condition that needs a field that failed (Unknown) is skipped."""
    problems: Problems = []
    for key, condition, message in rules:
        try:
            if condition():
                problems.append(((key,), message))
        except Unknown:
            continue
    return problems


@cache
def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """A validator of one field of ``model`` alone: its type with its constraints and validators."""
    field = model.model_fields[name]
    # A type built at run time from the model's own field (its constraints and validators, not its alias, which
    # only a model field may carry): mypy cannot see it as a type form.
    if not field.metadata:
        return TypeAdapter(field.annotation if field.annotation is not None else Any)
    return TypeAdapter(Annotated[field.annotation, *field.metadata])  # type: ignore[arg-type]


def _fields_that_validated(
    model: type[BaseModel], data: Mapping[str, Any], error: ValidationError, context: Any
) -> dict[str, Any]:
    """``data``'s fields that have no error in ``error``, each validated alone (as the model validated it), and the
    defaults of the fields not given: field name -> value."""
    failed = {detail["loc"][0] for detail in error.errors() if detail["loc"]}
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in failed:
            continue
        if key not in data:
            if not field.is_required():
                values[name] = field.get_default(call_default_factory=True)
            continue
        try:
            values[name] = _field_adapter(model, name).validate_python(data[key], strict=True, context=context)
        except ValidationError:
            continue  # not expected: it validated within the model
    return values


def _with_problems(title: str, error: ValidationError, problems: Problems) -> ValidationError:
    """``error``'s problems (their type, message, context and input kept, for the loader's wording) and
    ``problems``, in one ValidationError."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError(detail["type"], "{message}", {**detail.get("ctx", {}), "message": detail["msg"]}),
            loc=detail["loc"],
            input=detail["input"],
        )
        for detail in error.errors(include_url=False)
    ]
    details += [
        InitErrorDetails(type=PydanticCustomError("config", "{message}", {"message": text}), loc=loc, input=None)
        for loc, text in problems
    ]
    return ValidationError.from_exception_data(title, details)


class CheckedModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @classmethod
    def _cross_key_problems(cls, values: Validated) -> Problems:
        """The problems between this model's keys, each at its key (relative to the model); ``values`` raises
        Unknown for a field that did not validate (see :func:`checks`). None by default."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo) -> Self:
        """Run the cross-key checks whether or not every field validated, so that one run reports the field errors
        and the cross-key problems of the fields that did validate."""
        try:
            model = handler(data)
        except ValidationError as error:
            if not isinstance(data, Mapping):
                raise
            values = Validated(_fields_that_validated(cls, data, error, info.context))
            problems = cls._cross_key_problems(values)
            if not problems:
                raise
            raise _with_problems(cls.__name__, error, problems) from None
        raise_all(cls.__name__, cls._cross_key_problems(Validated({name: value for name, value in model})))
        return model
