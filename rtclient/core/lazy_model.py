"""Typed events that are their ``openai`` model, built on first read.

A typed subscriber is handed the event's model, but most callbacks read little of it
(a ``"*"`` subscriber switching on ``event.type``, a delta callback reading
``event.delta``) and pydantic's validation of a ``response.done`` costs ~18 us. So
:func:`lazy_class` makes, per model class ``M``, a private subclass whose instances
hold a copy of the event dict and become a plain ``M`` on the first read that needs
the model: ``M``'s own validator fills them in place (as ``M.__init__`` has it do) and
their ``__class__`` switches to ``M``. From then on nothing distinguishes them from a
model ``M.model_validate`` returned: ``type(e) is M``, equality, ``model_dump``,
pickling and attribute speed are ``M``'s own.

Only a dict :mod:`rtclient.core.event_check` has found valid is made lazy, so the build
cannot fail on what the server sent: a malformed event never becomes one (the caller
validates it eagerly and gets the error, as before). Before the first read:
``isinstance(e, M)`` holds and ``e.__class__`` is ``M``; ``type(e)`` is the private
subclass (same name). The top-level string, integer and boolean fields of the event
(``type``, ``event_id``, ``delta``, ``item_id``...) are read from the copy without
building anything - they are what the model would hold. Until the build the
instance's ``__dict__`` is a shallow copy of the event dict; a raw subscriber that
changes the *nested* contents of the shared event dict before a typed reader's first
read makes that read raise :class:`EventValidationError` (or see the change).

The build is done once, under one module lock: a model shared by the dispatcher's
callbacks and an ``events()`` iterator on another thread is built by whichever reads
first, and the other waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pydantic

_lock = threading.Lock()
_new = object.__new__
_get = object.__getattribute__
_set = object.__setattr__
_set_dict = pydantic.BaseModel.__dict__["__dict__"].__set__  # object.__setattr__, minus a lookup


def lazy_class(
    model: type[Any], validate: Callable[..., Any], plain_fields: Iterable[str] = ()
) -> Callable[[Mapping[str, Any]], Any]:
    """A factory ``make(event)`` of lazy ``model`` instances for valid event dicts.

    ``validate`` is ``model``'s ``__pydantic_validator__.validate_python`` (it fills
    the instance in place, ``self_instance=``);
    ``plain_fields`` are top-level fields whose value in a valid dict is the model's
    (exact ``str``/``int``/``bool``, required or defaulting to None), read without a
    build.
    """
    plain = frozenset(plain_fields)

    def build(self: Any) -> None:
        with _lock:
            if type(self) is not lazy:
                return  # another thread built it meanwhile
            event = _get(self, "__dict__")  # until the build: the event's copy
            try:  # pydantic sets the state on self, as a model's __init__ has it do
                validate(event, self_instance=self)
            except ValueError as exc:  # pydantic's ValidationError: the dict was changed
                from rtclient.errors import EventValidationError

                raise EventValidationError(
                    f"{event.get('type')} no longer validates: its dict was changed after "
                    "it was received (raw subscribers share it; do not modify it)",
                    event=dict(event),
                ) from exc
            _set(self, "__class__", model)

    def getattribute(self: Any, name: str) -> Any:
        if name in plain:  # the copy's value is the model's (after a build: the model's)
            return _get(self, "__dict__").get(name)
        if name == "__class__":
            return model
        build(self)
        return getattr(self, name)  # now a plain model: its own lookup, __getattr__ too

    def copy(self: Any) -> Any:
        build(self)
        return self.__copy__()

    def deepcopy(self: Any, memo: dict[int, Any] | None = None) -> Any:
        build(self)
        return self.__deepcopy__(memo)

    def setattr_(self: Any, name: str, value: Any) -> None:
        build(self)
        setattr(self, name, value)

    def delattr_(self: Any, name: str) -> None:
        build(self)
        delattr(self, name)

    namespace = {
        "__slots__": (),  # the same layout as the model's, so __class__ can switch
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
        "__doc__": model.__doc__,
        "__getattribute__": getattribute,
        "__copy__": copy,
        "__deepcopy__": deepcopy,
        "__setattr__": setattr_,
        "__delattr__": delattr_,
    }
    # type.__new__ rather than the metaclass itself: pydantic's ModelMetaclass would
    # collect fields and build schemas for a class that never validates anything.
    lazy: type[Any] = type.__new__(type(model), model.__name__, (model,), namespace)

    def make(event: Mapping[str, Any]) -> Any:
        instance = _new(lazy)
        _set_dict(instance, dict(event))
        return instance

    return make


def plain_fields(core_schema: Mapping[str, Any]) -> list[str]:
    """The top-level fields of a model's core schema that :func:`lazy_class` may read
    from a valid dict: a ``str``, ``int``, ``bool`` or string literal, required or
    optional with default None - what pydantic keeps unchanged."""
    schema = core_schema
    if schema.get("type") == "definitions":
        schema = schema["schema"]
    if schema.get("type") != "model" or schema["schema"].get("type") != "model-fields":
        return []
    names = []
    for name, field in schema["schema"]["fields"].items():
        inner = field["schema"]
        optional = inner.get("type") == "default"
        if optional:
            if inner.get("default", ...) is not None:
                continue
            inner = inner["schema"]
            if inner.get("type") == "nullable":
                inner = inner["schema"]
        if _plain(inner):
            names.append(name)
    return names


def _plain(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "literal":
        return all(type(value) is str for value in schema.get("expected", ()))
    return kind in ("str", "int", "bool") and set(schema) <= {"type", "metadata"}
