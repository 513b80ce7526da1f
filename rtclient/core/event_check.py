"""A fast, sound pre-check for typed events: may this dict skip pydantic for now?

Validating a server event into its ``openai.types.realtime`` model costs 1-20 us (a
``response.done`` ~18 us: pydantic builds a dozen nested models and tries each member
of the ``openai`` item union in turn). Deciding only *whether* the dict would validate
is much cheaper when the question is put as plain Python: for ``response.done`` ~3 us.
:func:`compile_check` turns a model's pydantic core schema into one straight-line
Python function - ``type(x) is str``, ``x in {...}``, a dict ``get`` per field, an
``if`` chain on the ``type`` tag for unions - so that the dispatcher can hand out a
model that validates on first read (``rtclient.core.lazy_model``) while still telling
a malformed event from a good one before anyone sees it.

The check is *sound, not complete*: ``True`` promises the model's validator accepts
the value; ``False`` only means "ask pydantic" (the caller then validates eagerly, so
what a malformed event becomes never depends on this module). To keep the promise it
accepts only exact JSON types that pydantic's lax mode accepts unchanged (an ``int``
for an ``int``, never a ``"3"``), ignores extra keys only where the model allows them,
and refuses to compile (returns ``None``) any schema node or option it does not know
- a length limit, a pattern, a validator function, an alias - so a new ``openai``
release can make a type slower, never wrong. ``tests/test_typed_equivalence.py``
checks the promise on every event type the emulator sends and on mutations of them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

# Keys any node may carry that do not change what it accepts.
_NEUTRAL = frozenset(("type", "ref", "metadata", "serialization"))
# JSON numbers pydantic turns into a float without loss (larger ints: ask pydantic).
_FLOAT_INT_LIMIT = 2**53
# Exact-type tests for leaf schemas: what JSON decoding yields and lax mode keeps.
_LEAF_TYPES = {"str": "str", "int": "int", "bool": "bool"}


class _Unsupported(Exception):
    """A schema feature the compiler does not model: no check for this type."""


def compile_check(schema: Mapping[str, Any]) -> Check | None:
    """A predicate that is True only for values ``schema``'s validator accepts, or
    None if the schema uses something this module does not model."""
    try:
        check: Check = _Compiler(schema).build()
    except (_Unsupported, RecursionError, SyntaxError):
        return None
    return check


def compile_parser(
    schema: Mapping[str, Any], valid: Callable[[Any], Any], other: Callable[[Any], Any]
) -> Callable[[Any], Any] | None:
    """``f(value)``: ``valid(value)`` when the check passes it, else ``other(value)`` -
    :func:`compile_check` with the two calls in the same function, one call less per
    event on the dispatcher's path. None where there is no check."""
    try:
        parse: Callable[[Any], Any] = _Compiler(schema).build(valid, other)
    except (_Unsupported, RecursionError, SyntaxError):
        return None
    return parse


def _allow(node: Mapping[str, Any], *keys: str) -> None:
    unknown = set(node) - _NEUTRAL - set(keys)
    if unknown:
        raise _Unsupported(f"{node.get('type')} with {sorted(unknown)}")


class _Compiler:
    """Emits Python source: each ``_emit`` appends statements that ``return False``
    unless the value named ``var`` is valid, inlining nested models and tagged unions
    (a call costs as much as checking a few fields); untagged unions and recursive
    definitions become functions of their own."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.definitions: dict[str, Mapping[str, Any]] = {}
        if schema.get("type") == "definitions":
            _allow(schema, "schema", "definitions")
            self.definitions = {d["ref"]: d for d in schema["definitions"]}
            schema = schema["schema"]
        self.root = schema
        self.functions: list[list[str]] = []
        self.function_of: dict[int, str] = {}  # id(schema) -> its function's name
        self.names = itertools.count()
        self.constants: dict[str, Any] = {"_MISSING": _MISSING}

    def build(
        self, valid: Callable[[Any], Any] | None = None, other: Callable[[Any], Any] | None = None
    ) -> Any:
        entry = self._function(self.root)
        if valid is not None:  # the entry's answers become the calls (see compile_parser)
            lines = self.functions[0]
            self.functions[0] = [
                line.replace("return False", "return _other(v)").replace(
                    "return True", "return _valid(v)"
                )
                for line in lines
            ]
        source = "\n".join(line for function in self.functions for line in function)
        namespace = {**self.constants, "_valid": valid, "_other": other}
        exec(compile(source, "<rtclient event check>", "exec"), namespace)
        return namespace[entry]

    def _name(self, prefix: str) -> str:
        return f"{prefix}{next(self.names)}"

    def _constant(self, value: Any) -> str:
        name = self._name("_k")
        self.constants[name] = value
        return name

    def _function(self, schema: Mapping[str, Any]) -> str:
        """The name of a function ``f(v) -> bool`` checking ``schema`` (made once)."""
        key = id(schema)
        if key not in self.function_of:
            name = self._name("_f")
            self.function_of[key] = name
            # Required fields are read as v[name]: a missing one is the KeyError.
            lines = [f"def {name}(v):", "    try:"]
            self.functions.append(lines)  # placed before filling: recursion finds it
            self._emit(schema, "v", lines, 2)
            lines.extend(("    except KeyError: return False", "    return True"))
        return self.function_of[key]

    # -- one value -------------------------------------------------------------------

    def _emit(
        self,
        schema: Mapping[str, Any],
        var: str,
        out: list[str],
        depth: int,
        known: frozenset[str] | None = None,
    ) -> None:
        """``known``: ``var`` is a dict already, and these of its fields are checked
        (a tagged union's tags); None: nothing is known."""
        pad = "    " * depth
        schema, nullable, _ = _unwrap(schema)
        if nullable:
            inner: list[str] = []
            self._emit(schema, var, inner, depth + 1)
            if inner:
                out.append(f"{pad}if {var} is not None:")
                out.extend(inner)
            return
        kind = schema["type"]
        leaf = self._leaf(schema, var)
        if leaf is not None:
            if leaf != "True":
                out.append(f"{pad}if not ({leaf}): return False")
        elif kind == "model":
            self._emit_model(schema, var, out, depth, known)
        elif kind == "list":
            _allow(schema, "items_schema", "strict")
            out.append(f"{pad}if type({var}) is not list: return False")
            item = self._name("i")
            body: list[str] = []
            self._emit(schema.get("items_schema", {"type": "any"}), item, body, depth + 1)
            if body:
                out.append(f"{pad}for {item} in {var}:")
                out.extend(body)
        elif kind == "dict":
            _allow(schema, "keys_schema", "values_schema", "strict")
            out.append(f"{pad}if type({var}) is not dict: return False")
            key, value = self._name("k"), self._name("w")
            body = []
            self._emit(schema.get("keys_schema", {"type": "any"}), key, body, depth + 1)
            self._emit(schema.get("values_schema", {"type": "any"}), value, body, depth + 1)
            if body:
                out.append(f"{pad}for {key}, {value} in {var}.items():")
                out.extend(body)
        elif kind == "union":
            self._emit_union(schema, var, out, depth)
        elif kind == "definition-ref":
            _allow(schema, "schema_ref")
            target = self.definitions.get(schema["schema_ref"])
            if target is None:
                raise _Unsupported(f"unknown ref {schema['schema_ref']}")
            out.append(f"{pad}if not {self._function(target)}({var}): return False")
        else:
            raise _Unsupported(kind)

    def _leaf(self, schema: Mapping[str, Any], var: str) -> str | None:
        """A boolean expression for a leaf schema (None: not a leaf)."""
        kind = schema["type"]
        if kind in _LEAF_TYPES:
            _allow(schema, "strict")
            return f"type({var}) is {_LEAF_TYPES[kind]}"
        if kind == "float":
            _allow(schema, "strict")
            limit = _FLOAT_INT_LIMIT
            return f"type({var}) is float or (type({var}) is int and -{limit} <= {var} <= {limit})"
        if kind == "any":
            _allow(schema)
            return "True"
        if kind == "literal":
            _allow(schema, "expected")
            expected = list(schema["expected"])
            kinds = {type(value) for value in expected}
            if kinds not in ({str}, {int}):  # bool is not int here: True == 1
                raise _Unsupported(f"literal {expected!r}")
            type_name = "str" if kinds == {str} else "int"
            if len(expected) == 1:
                return f"type({var}) is {type_name} and {var} == {expected[0]!r}"
            return f"type({var}) is {type_name} and {var} in {self._constant(frozenset(expected))}"
        if kind == "union":
            choices = [_choice(c) for c in schema["choices"]]
            parts = [self._leaf(_unwrap_nullable(c), var) for c in choices]
            if all(p is not None for p in parts):
                _allow(schema, "choices", "mode")
                nullable = any(_unwrap(c)[1] for c in choices)
                if "True" in parts:
                    return "True"
                text = " or ".join(f"({p})" for p in parts)
                return f"{var} is None or {text}" if nullable else text
        return None

    # -- models and unions -----------------------------------------------------------

    def _emit_model(
        self,
        schema: Mapping[str, Any],
        var: str,
        out: list[str],
        depth: int,
        known: frozenset[str] | None = None,
    ) -> None:
        _allow(schema, "cls", "schema", "config", "custom_init", "root_model")
        if schema.get("custom_init") or schema.get("root_model"):
            raise _Unsupported("custom __init__ or root model")
        config = schema.get("config") or {}
        if set(config) - {"title", "extra_fields_behavior"}:
            raise _Unsupported(f"model config {sorted(config)}")
        fields_schema = schema["schema"]
        if fields_schema.get("type") != "model-fields":
            raise _Unsupported(f"model of {fields_schema.get('type')}")
        _allow(fields_schema, "fields", "model_name", "computed_fields")
        pad = "    " * depth
        if known is None:
            out.append(f"{pad}if type({var}) is not dict: return False")
            known = frozenset()
        fields = fields_schema["fields"]
        for name, field in fields.items():
            _allow(field, "schema", "serialization_exclude", "frozen")
            inner, nullable, has_default = _unwrap(field["schema"])
            if name in known:
                continue
            value = self._name("x")
            body: list[str] = []
            self._emit(inner, value, body, depth + 1)
            # {var}.get(...) each time: CPython 3.11 calls it faster than a bound .get
            if has_default and nullable:  # absent or None: the default or None
                out.append(f"{pad}{value} = {var}.get({name!r})")
                if body:
                    out.append(f"{pad}if {value} is not None:")
                    out.extend(body)
                continue
            if has_default:  # absent: the default; present: must be valid, None too
                out.append(f"{pad}{value} = {var}.get({name!r}, _MISSING)")
                if body:
                    out.append(f"{pad}if {value} is not _MISSING:")
                    out.extend(body)
                continue
            out.append(f"{pad}{value} = {var}[{name!r}]")  # required: KeyError if absent
            if nullable:
                if body:
                    out.append(f"{pad}if {value} is not None:")
                    out.extend(body)
            else:
                out.extend(line[4:] for line in body)  # same level as the lookup
        if config.get("extra_fields_behavior") == "forbid":
            names = self._constant(frozenset(fields))
            out.append(f"{pad}if not {var}.keys() <= {names}: return False")

    def _emit_union(self, schema: Mapping[str, Any], var: str, out: list[str], depth: int) -> None:
        _allow(schema, "choices", "mode")
        choices = [_choice(c) for c in schema["choices"]]
        by_tag = self._tags(choices, "type")
        pad = "    " * depth
        if by_tag is None:  # each member in turn, as pydantic would
            tests = " or ".join(f"{self._function(c)}({var})" for c in choices)
            out.append(f"{pad}if not ({tests}): return False")
            return
        # Every member declares ``type`` as a string literal, so a present string tag
        # leaves only the members naming it; anything else: each member in turn.
        out.append(f"{pad}if type({var}) is not dict: return False")
        tag = self._name("t")
        out.append(f"{pad}{tag} = {var}.get('type')")
        out.append(f"{pad}if type({tag}) is not str: {tag} = None")
        keyword = "if"
        for value, members in by_tag.items():
            out.append(f"{pad}{keyword} {tag} == {value!r}:")
            branch = len(out)
            self._emit_members(members, var, out, depth + 1, value)
            if len(out) == branch:  # nothing left to check for this tag
                out.append(f"{pad}    pass")
            keyword = "elif"
        tests = " or ".join(f"{self._function(c)}({var})" for c in choices)
        out.append(f"{pad}else:")
        out.append(f"{pad}    if not ({tests}): return False")

    def _emit_members(
        self, members: list[Mapping[str, Any]], var: str, out: list[str], depth: int, tag: str
    ) -> None:
        """Check ``var``, a dict whose ``type`` is ``tag``, against the members naming it."""
        known = frozenset(("type",)) if _single_literal(members, "type", tag) else frozenset()
        if len(members) == 1:
            self._emit(members[0], var, out, depth, known)
            return
        pad = "    " * depth
        by_role = self._tags(members, "role")
        if by_role is not None and all(len(m) == 1 for m in by_role.values()):
            role = self._name("r")
            out.append(f"{pad}{role} = {var}.get('role')")
            out.append(f"{pad}if type({role}) is not str: {role} = None")
            keyword = "if"
            for value, (member,) in by_role.items():
                out.append(f"{pad}{keyword} {role} == {value!r}:")
                role_known = {"role"} if _single_literal([member], "role", value) else set()
                branch = len(out)
                self._emit(member, var, out, depth + 1, known | role_known)
                if len(out) == branch:
                    out.append(f"{pad}    pass")
                keyword = "elif"
            out.append(f"{pad}else: return False")  # "don't know": pydantic decides
            return
        tests = " or ".join(f"{self._function(m)}({var})" for m in members)
        out.append(f"{pad}if not ({tests}): return False")

    def _tags(
        self, choices: list[Mapping[str, Any]], field: str
    ) -> dict[str, list[Mapping[str, Any]]] | None:
        """tag -> the members whose ``field`` is a string literal naming it, when every
        member is a model declaring ``field`` so (optional or not); else None."""
        by_tag: dict[str, list[Mapping[str, Any]]] = {}
        for choice in choices:
            model = choice
            if model.get("type") == "definition-ref":
                model = self.definitions.get(model["schema_ref"], {})
            fields = model.get("schema", {}).get("fields") if model.get("type") == "model" else None
            declared = (fields or {}).get(field)
            if declared is None:
                return None
            literal = _unwrap(declared["schema"])[0]
            if literal.get("type") != "literal":
                return None
            for value in literal["expected"]:
                if type(value) is not str:
                    return None
                by_tag.setdefault(value, []).append(choice)
        return by_tag


_MISSING = object()


def _single_literal(members: list[Mapping[str, Any]], field: str, value: str) -> bool:
    """Whether each member's ``field`` is a literal of exactly ``value``, required or not
    (so a dict dispatched on its present ``value`` has nothing left to check there)."""
    for member in members:
        declared = member.get("schema", {}).get("fields", {}).get(field)
        if declared is None:
            return False
        literal = _unwrap(declared["schema"])[0]
        if literal.get("type") != "literal" or list(literal.get("expected", ())) != [value]:
            return False
    return True


def _unwrap(schema: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool, bool]:
    """``(inner, nullable, has_default)`` through ``default`` and ``nullable`` wrappers."""
    nullable = has_default = False
    while True:
        kind = schema.get("type")
        if kind == "default":
            _allow(schema, "schema", "default")  # no default_factory, no validate_default
            has_default = True
        elif kind == "nullable":
            _allow(schema, "schema", "strict")
            nullable = True
        else:
            return schema, nullable, has_default
        schema = schema["schema"]


def _unwrap_nullable(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    return _unwrap(schema)[0]


def _choice(choice: Any) -> Mapping[str, Any]:
    """A union choice is a schema or a ``(schema, label)`` pair."""
    return choice[0] if isinstance(choice, tuple) else choice  # type: ignore[no-any-return]
