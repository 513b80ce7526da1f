"""Tool schemas: ``@tool``, a pydantic model per signature, docstring descriptions.

``@tool`` keeps the function as it is (and typed as it is: ``ParamSpec`` overloads)
and attaches a :class:`ToolSpec`. The parameters become a pydantic model
(:class:`ToolArguments`): its JSON schema, made self-contained (``$ref`` inlined,
titles dropped), is what the model is told, with each parameter's description from a
Google, NumPy or reST docstring (``docstring_parser``). The model's arguments are
validated and coerced by that same model, on the runner's thread, before anything is
submitted: a wrong type, a missing argument or an argument the function does not take
becomes an error output naming the field, and the function is not called. Every name
and value quoted back is bounded (``rtclient._bounded``): the model may invent a
megabyte-long argument name, and the error output stays a few hundred bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, overload

import docstring_parser
import pydantic
import pydantic.json_schema

from rtclient._bounded import TEXT, clip, clip_repr

_TOOL_ATTR = "__rtclient_tool__"


_MAX_ERRORS = 8  # validation errors listed in one error output
_MAX_INPUT = 80  # characters of a rejected value quoted back to the model

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    """A registered tool: the callable and what the model is told about it.

    ``arguments`` validates the model's arguments against ``fn``'s signature (built from
    ``fn`` when a spec is made by hand without it).
    """

    fn: Callable[..., Any]
    name: str
    description: str
    parameters: dict[str, Any]
    timeout: float | None = None
    start_response: bool = True
    arguments: ToolArguments | None = dataclasses.field(default=None, repr=False, compare=False)

    def session_tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }

    def validate(self, arguments: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The model's arguments, validated and coerced: ``(args, kwargs)`` for ``fn``.

        Raises ``ValueError`` naming every bad field (see :class:`ToolArguments`).
        """
        checker = self.arguments or ToolArguments(self.fn, tool_name=self.name)
        return checker.validate(arguments)


class _SchemaGenerator(pydantic.json_schema.GenerateJsonSchema):
    # a default that is no JSON value (a sentinel object) is simply not shown
    ignored_warning_kinds: set[pydantic.json_schema.JsonSchemaWarningKind] = {  # noqa: RUF012
        "skipped-choice",
        "non-serializable-default",
    }


class ToolArguments:
    """A tool's parameters as a pydantic model: their JSON schema and their validator.

    One field per parameter (``*args`` is never filled; ``**kwargs`` lets unknown
    arguments through unvalidated, otherwise they are an error). Validation is
    pydantic's lax mode on the decoded JSON: ``"7"`` becomes ``7`` for an ``int``, an
    object becomes the ``BaseModel`` instance, an ISO string a ``datetime``; ``"seven"``
    for an ``int`` is an error. Only the arguments the model gave are passed on, so the
    function's own defaults apply to the others.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        tool_name: str | None = None,
        descriptions: Mapping[str, str] | None = None,
        localns: Mapping[str, Any] | None = None,
    ) -> None:
        self.tool_name = tool_name or _callable_name(fn)
        descriptions = descriptions or {}
        signature = _signature(fn, self.tool_name, localns)
        self._fields: list[tuple[str, inspect.Parameter]] = []  # (field name, parameter)
        self.var_keyword = False
        definitions: dict[str, Any] = {}
        for index, param in enumerate(signature.parameters.values()):
            if param.kind is param.VAR_POSITIONAL:
                continue
            if param.kind is param.VAR_KEYWORD:
                self.var_keyword = True
                continue
            # fields are p0, p1, ... aliased to the parameter's name: any name works
            # (``json``, ``_private``, ``model_config``) without shadowing BaseModel's own
            field = f"p{index}"
            self._fields.append((field, param))
            annotation = Any if param.annotation is param.empty else param.annotation
            default = ... if param.default is param.empty else param.default
            info = pydantic.Field(
                default, alias=param.name, description=descriptions.get(param.name)
            )
            definitions[field] = (annotation, info)
        self.names = [param.name for _, param in self._fields]
        try:
            # extra="ignore" (the default), not "forbid": a model config would also reach
            # the TypedDicts among the parameters; unknown arguments are checked by hand
            self.model: type[pydantic.BaseModel] = pydantic.create_model(
                f"{self.tool_name}_arguments", **definitions
            )
            schema = self.model.model_json_schema(schema_generator=_SchemaGenerator)
        except Exception as exc:
            raise TypeError(_unsupported(self.tool_name, self._fields, exc)) from exc
        self.schema = _parameters(plain_schema(schema), closed=not self.var_keyword)

    def validate(self, arguments: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` for the function, or ``ValueError`` naming each bad field."""
        known = set(self.names)
        extra = {k: v for k, v in arguments.items() if k not in known}
        problems: list[str] = []
        try:
            model = self.model.model_validate({k: v for k, v in arguments.items() if k in known})
        except pydantic.ValidationError as exc:
            problems.extend(_describe(exc))
        if extra and not self.var_keyword:
            takes = ", ".join(self.names) if self.names else "no arguments"
            problems.extend(
                f"{clip(k)}: unexpected argument ({clip(self.tool_name)} takes {clip(takes)})"
                for k in extra
            )
        if problems:
            if len(problems) > _MAX_ERRORS:
                problems[_MAX_ERRORS:] = [f"and {len(problems) - _MAX_ERRORS} more"]
            raise ValueError("; ".join(problems))
        given = model.model_fields_set
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        positional = [(f, p) for f, p in self._fields if p.kind is p.POSITIONAL_ONLY]
        last = max((n for n, (f, _) in enumerate(positional) if f in given), default=-1)
        for field, param in positional[: last + 1]:  # a gap gets the function's default
            args.append(getattr(model, field) if field in given else param.default)
        for field, param in self._fields:
            if param.kind is not param.POSITIONAL_ONLY and field in given:
                kwargs[param.name] = getattr(model, field)
        if self.var_keyword:
            kwargs.update(extra)  # **kwargs takes them as they came
        return tuple(args), kwargs


def _describe(exc: pydantic.ValidationError) -> list[str]:
    """``field: what is wrong (got value)`` for each error pydantic found."""
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        where = clip(_location(loc))
        if error["type"] == "missing":
            problems.append(f"{where}: missing required {'argument' if len(loc) == 1 else 'field'}")
        else:
            problems.append(f"{where}: {clip(error['msg'])} (got {_quote(error.get('input'))})")
    return problems


@overload
def tool(fn: Callable[_P, _R]) -> Callable[_P, _R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    start_response: bool = True,
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]: ...


def tool(
    fn: Callable[_P, _R] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    start_response: bool = True,
) -> Callable[_P, _R] | Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Mark a function as a tool; its JSON schema comes from the signature and docstring.

    The function itself is returned (with the spec attached), so it keeps its type for
    type checkers and stays picklable by reference for a ``ProcessPoolExecutor``.
    ``timeout`` bounds one call (its output becomes an error; the stuck thread is
    reported, not waited on); ``start_response=False`` sends the output without asking
    for a follow-up. Raises ``TypeError`` for a parameter type pydantic cannot validate.
    """
    # the decorating scope: annotations naming its local classes resolve there
    frame = sys._getframe(1)
    localns = dict(frame.f_locals) if frame.f_locals is not frame.f_globals else None
    del frame

    def mark(f: Callable[_P, _R]) -> Callable[_P, _R]:
        spec = _build_spec(f, name=name, description=description, localns=localns)
        setattr(
            f,
            _TOOL_ATTR,
            dataclasses.replace(spec, timeout=timeout, start_response=start_response),
        )
        return f

    return mark(fn) if fn is not None else mark


def build_spec(
    fn: Callable[..., Any], *, name: str | None = None, description: str | None = None
) -> ToolSpec:
    """The spec of ``fn``: the one ``@tool`` attached, or one built now."""
    return _build_spec(fn, name=name, description=description, localns=None)


def _build_spec(
    fn: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    localns: Mapping[str, Any] | None,
) -> ToolSpec:
    existing = getattr(fn, _TOOL_ATTR, None)
    if isinstance(existing, ToolSpec) and name is None and description is None:
        return existing
    summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
    tool_name = name or _callable_name(fn)
    arguments = ToolArguments(fn, tool_name=tool_name, descriptions=arg_docs, localns=localns)
    return ToolSpec(
        fn=fn,
        name=tool_name,
        description=description or summary,
        parameters=arguments.schema,
        arguments=arguments,
    )


def _callable_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", type(fn).__name__))


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description, and the text of each parameter, of a Google, NumPy or reST docstring.

    The style is detected by ``docstring_parser``; the description is the prose before
    the sections, its paragraphs kept, each one's lines joined.
    """
    try:
        parsed = docstring_parser.parse(doc)
    except Exception:  # not one of the styles: all of it is the description
        return _prose(doc), {}
    params = {
        p.arg_name.lstrip("*"): _prose(p.description)
        for p in parsed.params
        if p.description and p.arg_name
    }
    return _prose(parsed.description or ""), params


def _prose(text: str) -> str:
    paragraphs = (" ".join(p.split()) for p in text.strip().split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p)


def _signature(
    fn: Callable[..., Any], tool_name: str, localns: Mapping[str, Any] | None
) -> inspect.Signature:
    """``fn``'s parameters, string annotations (``from __future__ import annotations``)
    evaluated in its module, then in the decorating scope. The return annotation is
    dropped unread: it may name a type only a type checker imports."""
    signature = inspect.signature(fn)
    namespace = _globals_of(fn)
    params = []
    for param in signature.parameters.values():
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace, dict(localns or {}))
            except Exception as exc:
                raise TypeError(
                    f"tool {clip_repr(tool_name)}: the annotation {clip_repr(param.annotation)} "
                    f"of parameter {clip_repr(param.name)} cannot be resolved "
                    f"({clip(str(exc), TEXT)}); the types it names must "
                    "be importable from the function's module or defined where @tool is "
                    "applied"
                ) from exc
        params.append(param.replace(annotation=annotation))
    return signature.replace(parameters=params, return_annotation=inspect.Signature.empty)


def _globals_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """The module namespace ``fn``'s annotations were written in (as ``inspect`` finds it)."""
    target: Any = inspect.unwrap(fn)
    while isinstance(target, functools.partial):
        target = inspect.unwrap(target.func)
    if not hasattr(target, "__globals__") and not inspect.ismethod(target):
        target = type(target).__call__  # a callable object
    target = getattr(target, "__func__", target)  # a (bound) method
    namespace = getattr(target, "__globals__", None)
    return namespace if isinstance(namespace, dict) else {}


def _unsupported(
    tool_name: str, fields: list[tuple[str, inspect.Parameter]], exc: Exception
) -> str:
    """Which parameter pydantic could not take, when one of them alone fails."""
    for _, param in fields:
        annotation = Any if param.annotation is param.empty else param.annotation
        try:
            pydantic.TypeAdapter(annotation).json_schema()
        except Exception as one:
            return (
                f"tool {clip_repr(tool_name)}: parameter {clip_repr(param.name)} "
                f"({clip_repr(annotation)}) cannot be validated from JSON: {clip(str(one), TEXT)}"
            )
    return f"tool {clip_repr(tool_name)}: no JSON schema for its parameters: {clip(str(exc), TEXT)}"


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "arguments"


def _quote(value: Any) -> str:
    return clip(json.dumps(value, ensure_ascii=False, default=repr), _MAX_INPUT)


_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_ONE = frozenset(
    {
        "items",
        "additionalProperties",
        "not",
        "contains",
        "propertyNames",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
_DEFS = "#/$defs/"


def plain_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema made self-contained and plain, for the model to read.

    Every ``$ref`` is inlined (with its siblings, such as a parameter's description,
    taking priority); only a recursive type keeps a ``$defs`` entry, at the root, for
    the reference to itself. Titles are dropped, a one-element ``allOf`` is merged, and
    an optional property whose default is ``None`` is described by its type alone
    (omitting it means ``None``; an explicit ``null`` is still accepted).
    """
    defs: Mapping[str, Any] = schema.get("$defs") or {}
    kept: dict[str, Any] = {}
    pending: list[str] = []

    def walk(node: Any, stack: tuple[str, ...]) -> Any:
        if not isinstance(node, Mapping):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS) and ref[len(_DEFS) :] in defs:
            target = ref[len(_DEFS) :]
            siblings = walk({k: v for k, v in node.items() if k != "$ref"}, stack)
            if target in stack:  # recursive: the one reference that stays
                if target not in kept:
                    kept[target] = None
                    pending.append(target)
                return {"$ref": ref, **siblings}
            return {**walk(defs[target], (*stack, target)), **siblings}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("title", "$defs"):
                continue
            if key in _SCHEMA_MAPS and isinstance(value, Mapping):
                out[key] = {k: walk(v, stack) for k, v in value.items()}
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [walk(v, stack) for v in value]
            elif key in _SCHEMA_ONE:
                out[key] = walk(value, stack)
            else:
                out[key] = value
        all_of = out.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
            out = {**all_of[0], **{k: v for k, v in out.items() if k != "allOf"}}
        properties = out.get("properties")
        if isinstance(properties, dict):
            required = set(out.get("required") or ())
            for key, prop in properties.items():
                if key not in required:
                    properties[key] = _none_by_omission(prop)
        return out

    result: dict[str, Any] = walk(schema, ())
    root_defs: dict[str, Any] = {}
    while pending:
        target = pending.pop()
        root_defs[target] = walk(defs[target], (target,))
    if root_defs:
        result["$defs"] = root_defs
    return result


def _none_by_omission(prop: Any) -> Any:
    """``X | None = None`` -> the schema of ``X``: leaving the property out means None."""
    if not isinstance(prop, dict) or "default" not in prop or prop["default"] is not None:
        return prop
    rest = {k: v for k, v in prop.items() if k != "default"}
    variants = rest.get("anyOf")
    if isinstance(variants, list):
        others = [v for v in variants if v != {"type": "null"}]
        if len(others) == 1 and isinstance(others[0], dict):
            del rest["anyOf"]
            return {**others[0], **rest}
        if others:
            rest["anyOf"] = others
    return rest


def _parameters(schema: Mapping[str, Any], *, closed: bool) -> dict[str, Any]:
    """The function's ``parameters``: an object schema, ``required`` always listed."""
    result: dict[str, Any] = {
        "type": "object",
        "properties": dict(schema.get("properties") or {}),
        "required": list(schema.get("required") or []),
    }
    if closed:
        result["additionalProperties"] = False
    if "$defs" in schema:
        result["$defs"] = schema["$defs"]
    return result


def error_output(message: str) -> str:
    """The output the model sees when a tool could not run: it can say so, not crash.
    Bounded, whatever the message quotes (a tool's exception text, an invented name)."""
    return json.dumps({"error": clip(message, TEXT)})
