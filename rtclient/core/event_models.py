"""An API's server events as ``openai`` models: loaded on first use, parsed cheaply.

``import openai`` costs ~1.5 s, so nothing here runs at ``import rtclient``: an
:class:`EventModels` loads its table (event type -> model class) when first asked, on
the caller's thread - the first typed subscription's, never the loop thread's. Each
prepared type then gets, once, its model's validator, a compiled pre-check
(:mod:`rtclient.core.event_check`: may this dict skip pydantic for now?) and a lazy
model class (:mod:`rtclient.core.lazy_model`: the model, built on first read).

- :attr:`EventModels.checks` is the cheap half, per prepared type: the lazy model of
  an event the pre-check passes (0.3-2.5 us where pydantic's validation takes 1-20
  us), or None. It never imports and never validates, so the loop thread runs it as it
  hands an event over.
- :meth:`EventModels.to_model` is the whole parse: that lazy model, or the validator's
  answer for any other event - so a malformed event fails exactly as pydantic says,
  before anyone sees it.

One table per API (``openai.types.realtime``, ``openai.types.live``), shared by every
client of the process.
"""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

Parse = Callable[[Mapping[str, Any]], Any]


class EventModels:
    """``load()`` -> {event type: model class}, called once; ``package`` names it in
    errors."""

    def __init__(self, load: Callable[[], dict[str, type[Any]]], package: str) -> None:
        self._load = load
        self._package = package
        self._models: dict[str, type[Any]] | None = None
        self._parsers: dict[Any, Parse] = {}  # event type -> dict to model
        # event type -> the lazy model if the pre-check passes the event, else None
        self.checks: dict[str, Parse] = {}
        self._lock = threading.Lock()

    def models(self) -> dict[str, type[Any]]:
        """Each event type with a model -> its class (loads the table on the first call)."""
        models = self._models
        if models is None:
            with self._lock:
                if self._models is None:
                    self._models = self._load()
                models = self._models
        return models

    def prepare(self, event_types: Iterable[str]) -> None:
        """Load the models and prepare ``event_types`` (``"*"``: all) now, on this
        thread: build their validators (the ``openai`` models defer that to first use)
        and compile their pre-checks, so that the first parse costs microseconds."""
        from rtclient.core.event_check import compile_parser
        from rtclient.core.lazy_model import lazy_class, plain_fields

        models = self.models()
        wanted = set(event_types)
        kinds = list(models) if "*" in wanted else [k for k in wanted if k in models]
        with self._lock:
            for kind in kinds:
                if kind in self._parsers:
                    continue
                model = models[kind]
                if not model.__pydantic_complete__:
                    model.model_rebuild()
                schema = model.__pydantic_core_schema__
                validate = model.__pydantic_validator__.validate_python
                lazy = lazy_class(model, validate, plain_fields(schema))
                check = compile_parser(schema, lazy, _none)
                if check is None:
                    self._parsers[kind] = validate
                    continue
                self.checks[kind] = check
                self._parsers[kind] = partial(_checked_or_validated, check, validate)

    def to_model(self, event: Mapping[str, Any]) -> Any:
        """``event`` as its model (built on first read when the pre-check passes it).

        Raises ``LookupError`` if its type has no model, ``pydantic.ValidationError`` if
        it does not validate.
        """
        kind = event.get("type")
        try:
            parse = self._parsers[kind]
        except (KeyError, TypeError):  # not prepared yet, no such model, or not a string
            if not isinstance(kind, str) or kind not in self.models():
                raise LookupError(f"no {self._package} model for {kind!r}") from None
            self.prepare([kind])
            parse = self._parsers[kind]
        return parse(event)


def _none(event: Mapping[str, Any]) -> None:
    return None


def _checked_or_validated(check: Parse, validate: Parse, event: Mapping[str, Any]) -> Any:
    model = check(event)
    return validate(event) if model is None else model


def union_members(union: Any) -> list[Any]:
    """The classes of a (possibly annotated, possibly nested) ``typing.Union``."""
    args = typing.get_args(union)
    if args and typing.get_origin(union) is typing.Annotated:
        return union_members(args[0])
    return [m for a in args for m in (union_members(a) if typing.get_args(a) else [a])]


def by_type(members: Iterable[Any]) -> dict[str, type[Any]]:
    """event type -> model, from each model's ``type: Literal[...]`` field (a later
    member wins a type two declare)."""
    return {
        kind: member
        for member in members
        for kind in typing.get_args(member.model_fields["type"].annotation)
        if isinstance(kind, str)
    }
