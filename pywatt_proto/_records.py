"""``@record``: frozen (or, by choice, mutable) slotted, keyword-only classes that cost
little to define: a drop-in for ``@dataclass(frozen=True, slots=True, kw_only=True)`` on the
start-up path (messages, connection events, router values).

Why: ``dataclasses`` compiles every method of every class when the class is defined and
imports ``inspect`` (docs/performance.md); a module defines ~50 such classes before its first
answer. A record gets *shared* generic methods (``__eq__``, ``__hash__``, ``__repr__``,
frozen ``__setattr__``/``__delattr__``, pickling); only ``__init__`` is generated, per class,
on the first instance.

Behaviour, as with the dataclass options above: keyword-only construction with defaults,
``field(default_factory=...)`` and ``__post_init__``; assignment and deletion raise
:class:`FrozenRecordError` (an ``AttributeError``; ``__post_init__`` may normalise with
``object.__setattr__``); ``==``/``hash``/``repr`` over the fields, unless the class body
defines its own; copy/pickle work; ``dataclasses.fields``/``replace``/``asdict``/
``is_dataclass`` work (``__dataclass_fields__`` is built on first access; inside the package
prefer :func:`replace`). mypy sees ``record`` through ``typing.dataclass_transform``.
"""

from __future__ import annotations

from operator import attrgetter

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up cost)
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform, overload

    _T = TypeVar("_T")
else:

    def dataclass_transform(**_options):  # what mypy reads; nothing to do at run time
        return lambda decorator: decorator


class FrozenRecordError(AttributeError):
    """Raised on assignment to (or deletion of) a field of a record."""


class _Sentinel:
    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def __repr__(self) -> str:
        return self._text


_MISSING: Any = _Sentinel("<missing>")
_FACTORY = _Sentinel("<factory>")  # what a signature shows for a default_factory field


class _Field:
    """What :func:`field` puts in a class body; consumed by :func:`record`."""

    __slots__ = ("compare", "default", "default_factory", "init", "repr")

    def __init__(
        self, default: object, default_factory: object, init: bool, repr: bool, compare: bool
    ) -> None:
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare


if TYPE_CHECKING:

    @overload
    def field(*, default: _T, init: bool = True, repr: bool = True, compare: bool = True) -> _T: ...
    @overload
    def field(
        *,
        default_factory: Callable[[], _T],
        init: bool = True,
        repr: bool = True,
        compare: bool = True,
    ) -> _T: ...


def field(
    *,
    default: object = _MISSING,
    default_factory: object = _MISSING,
    init: bool = True,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    """Describe a field as ``dataclasses.field`` does (the options records support).

    ``default`` or ``default_factory`` (called per instance); ``init=False`` leaves the
    field out of ``__init__`` (it starts at its default); ``repr=False`` /
    ``compare=False`` leave it out of ``repr`` / ``==`` and ``hash``.
    """
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return _Field(default, default_factory, init, repr, compare)


# --------------------------------------------------------------------------- shared methods


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        key = self.__class__.__record_key__
        return key(self) == key(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(self.__class__.__record_key__(self))


def _repr(self: Any) -> str:
    parts = [f"{name}={getattr(self, name)!r}" for name in self.__record_repr__]
    return f"{self.__class__.__qualname__}({', '.join(parts)})"


def _setattr(self: Any, name: str, value: object) -> None:
    cls = self.__class__
    if name in cls.__record_fields__ or "__record_fields__" in cls.__dict__:
        raise FrozenRecordError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)  # a plain subclass's own attribute


def _delattr(self: Any, name: str) -> None:
    cls = self.__class__
    if name in cls.__record_fields__ or "__record_fields__" in cls.__dict__:
        raise FrozenRecordError(f"cannot delete field {name!r}")
    object.__delattr__(self, name)


def _getstate(self: Any) -> list[object]:
    return [getattr(self, name) for name in self.__record_fields__]


def _setstate(self: Any, state: list[object]) -> None:
    for name, value in zip(self.__record_fields__, state, strict=True):
        object.__setattr__(self, name, value)


def _no_fields(_obj: object) -> tuple[()]:
    return ()


def _init_source(cls: type) -> tuple[str, dict[str, object]]:
    """Return the source of ``cls.__init__`` and the globals it runs with."""
    names: tuple[str, ...] = cls.__record_fields__  # type: ignore[attr-defined]
    defaults: dict[str, object] = cls.__record_defaults__  # type: ignore[attr-defined]
    factories: dict[str, Callable[[], object]] = cls.__record_factories__  # type: ignore[attr-defined]
    no_init: frozenset[str] = cls.__record_no_init__  # type: ignore[attr-defined]
    frozen: bool = cls.__record_frozen__  # type: ignore[attr-defined]
    env: dict[str, object] = {"__rec_FACTORY": _FACTORY}
    params, body = [], []
    for name in names:
        setter = f"__rec_set_{name}"
        if frozen:
            env[setter] = getattr(cls, name).__set__  # the slot's own setter: skips __setattr__
            store = f"    {setter}(self, {{}})"
        else:
            store = f"    self.{name} = {{}}"  # an ordinary attribute store
        if name in factories:
            factory = f"__rec_factory_{name}"
            env[factory] = factories[name]
            if name in no_init:
                body.append(store.format(f"{factory}()"))
            else:
                params.append(f"{name}=__rec_FACTORY")
                body.append(store.format(f"{factory}() if {name} is __rec_FACTORY else {name}"))
        elif name in defaults:
            default = f"__rec_default_{name}"
            env[default] = defaults[name]
            if name not in no_init:
                params.append(f"{name}={default}")
            body.append(store.format(default if name in no_init else name))
        elif name not in no_init:
            params.append(name)
            body.append(store.format(name))
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    star = "*, " if params else ""
    source = f"def __init__(self, {star}{', '.join(params)}) -> None:\n"
    return source + ("\n".join(body) if body else "    pass") + "\n", env


def _compile_init(cls: type) -> Any:
    """Compile ``cls.__init__`` from its fields, install it on ``cls`` and return it."""
    source, env = _init_source(cls)
    exec(source, env)  # the source is built from the class's field names
    init: Any = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    annotations = _annotations(cls)
    init.__annotations__ = {
        name: annotations.get(name, "object")
        for name in init.__code__.co_varnames[1 : 1 + init.__code__.co_kwonlyargcount]
    }
    init.__annotations__["return"] = "None"
    type.__setattr__(cls, "__init__", init)
    return init


def _lazy_init(self: Any, *args: Any, **kwargs: Any) -> None:
    """Every record's first ``__init__``: compile the class's own, install it, run it."""
    for cls in type(self).__mro__:
        if cls.__dict__.get("__init__") is _lazy_init:
            break
    _compile_init(cls)(self, *args, **kwargs)


def _annotations(cls: type) -> dict[str, object]:
    annotations: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        annotations.update(klass.__dict__.get("__annotations__", {}))  # noqa: RUF063
    return annotations


class _Signature:
    """``inspect.signature(cls)`` (``help()``, IDEs): the real keyword-only parameters,
    compiling ``__init__`` ahead of the first instance if needed."""

    def __get__(self, obj: object, owner: type) -> object:
        if obj is not None:
            raise AttributeError("__signature__")  # instances are not callable
        init = owner.__dict__.get("__init__")
        if init is _lazy_init:
            init = _compile_init(owner)
        elif init is None:  # a plain subclass: the record class's signature
            for klass in owner.__mro__[1:]:
                if isinstance(klass.__dict__.get("__signature__"), _Signature):
                    return klass.__signature__  # type: ignore[attr-defined]
            raise AttributeError("__signature__")
        import inspect

        sig = inspect.signature(init)
        return sig.replace(parameters=list(sig.parameters.values())[1:])


class _DataclassFields:
    """``__dataclass_fields__`` built on first access, for the ``dataclasses`` helpers."""

    def __get__(self, obj: object, owner: type) -> dict[str, object]:
        import dataclasses

        annotations = _annotations(owner)
        defaults: dict[str, object] = owner.__record_defaults__  # type: ignore[attr-defined]
        factories: dict[str, Any] = owner.__record_factories__  # type: ignore[attr-defined]
        fields: dict[str, object] = {}
        shown: tuple[str, ...] = owner.__record_repr__  # type: ignore[attr-defined]
        compared: tuple[str, ...] = owner.__record_compare__  # type: ignore[attr-defined]
        for name in owner.__record_fields__:  # type: ignore[attr-defined]
            f: Any = dataclasses.field(
                default=defaults.get(name, dataclasses.MISSING),
                default_factory=factories.get(name, dataclasses.MISSING),
                init=name not in owner.__record_no_init__,  # type: ignore[attr-defined]
                repr=name in shown,
                compare=name in compared,
                kw_only=True,
            )
            f.name = name
            f.type = annotations.get(name, "object")
            f._field_type = dataclasses._FIELD  # type: ignore[attr-defined]  # what fields() lists
            fields[name] = f
        type.__setattr__(owner, "__dataclass_fields__", fields)
        return fields


def _is_class_var(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar", "Final", "typing.Final"))


# --------------------------------------------------------------------------- the decorator


if TYPE_CHECKING:

    @overload
    def record(cls: type[_T], /) -> type[_T]: ...
    @overload
    def record(*, frozen: bool = True) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
def record(cls: Any = None, /, *, frozen: bool = True) -> Any:
    """Make ``cls`` a slotted, keyword-only record of its annotated fields.

    ``@record`` is frozen (assignment raises :class:`FrozenRecordError`; hashable when its
    fields are). ``@record(frozen=False)`` is an ordinary mutable slotted class with the
    same generated methods, except ``__hash__`` (None, as for a mutable dataclass) and the
    frozen ``__setattr__``/``__delattr__``; its ``__init__`` stores fields directly. Returns
    the new class (or, called with options only, the decorator).
    """
    if cls is None:
        return lambda klass: _make_record(klass, frozen)
    return _make_record(cls, frozen)


def _make_record(cls: type[_T], frozen: bool) -> type[_T]:
    ns = dict(cls.__dict__)
    own: list[str] = []
    defaults: dict[str, object] = {}
    factories: dict[str, Callable[[], object]] = {}
    no_init: set[str] = set()
    hidden: set[str] = set()  # repr=False
    uncompared: set[str] = set()  # compare=False
    if hasattr(cls, "__record_fields__"):  # nothing needs it: not implemented
        raise TypeError(f"record {cls.__qualname__} must not inherit from a record")
    for name, annotation in ns.get("__annotations__", {}).items():
        if _is_class_var(annotation):
            continue
        own.append(name)
        if name not in ns:
            continue
        value = ns.pop(name)  # a class attribute would shadow the slot
        if isinstance(value, _Field):
            if value.default_factory is not _MISSING:
                factories[name] = value.default_factory  # type: ignore[assignment]
            elif value.default is not _MISSING:
                defaults[name] = value.default
            if not value.init:
                no_init.add(name)
            if not value.repr:
                hidden.add(name)
            if not value.compare:
                uncompared.add(name)
        else:
            defaults[name] = value
    names = tuple(own)
    compared = tuple(n for n in names if n not in uncompared)
    ns.pop("__dict__", None)
    ns.pop("__weakref__", None)
    ns["__slots__"] = tuple(own)
    ns["__record_fields__"] = names
    ns["__record_defaults__"] = defaults
    ns["__record_factories__"] = factories
    ns["__record_no_init__"] = frozenset(no_init)
    ns["__record_repr__"] = tuple(n for n in names if n not in hidden)
    ns["__record_compare__"] = compared
    ns["__record_frozen__"] = frozen
    if len(compared) > 1:
        ns["__record_key__"] = attrgetter(*compared)
    elif compared:
        getter = attrgetter(compared[0])
        ns["__record_key__"] = lambda obj: (getter(obj),)
    else:
        ns["__record_key__"] = _no_fields
    ns["__match_args__"] = ()  # keyword-only fields are not positional patterns
    ns["__dataclass_fields__"] = _DataclassFields()
    ns["__init__"] = _lazy_init
    ns["__signature__"] = _Signature()
    ns.setdefault("__repr__", _repr)
    if "__eq__" not in ns:
        ns["__eq__"] = _eq
    if not frozen:
        ns["__hash__"] = None  # mutable: unhashable, as a dataclass with eq and no frozen
    elif ns.get("__hash__", _MISSING) in (_MISSING, None):
        ns["__hash__"] = _hash
    if frozen:
        for name, method in (("__setattr__", _setattr), ("__delattr__", _delattr)):
            if name in ns:
                raise TypeError(f"record {cls.__qualname__} must not define {name}")
            ns[name] = method
    ns.setdefault("__getstate__", _getstate)
    ns.setdefault("__setstate__", _setstate)
    meta: Any = type(cls)
    new: type[_T] = meta(cls.__name__, cls.__bases__, ns)
    new.__qualname__ = cls.__qualname__
    return new


def replace(obj: _T, /, **changes: object) -> _T:
    """Return a copy of the record ``obj`` with ``changes`` applied (``__post_init__`` runs)."""
    cls: Any = type(obj)
    for name in cls.__record_fields__:
        if name in cls.__record_no_init__:
            if name in changes:
                raise ValueError(f"field {name} is init=False and cannot be replaced")
        elif name not in changes:
            changes[name] = getattr(obj, name)
    new: _T = cls(**changes)
    return new


# --------------------------------------------------------------------------- NamedTuple


class _NamedTupleMeta(type):
    """Builds ``class X(NamedTuple): ...`` as ``collections.namedtuple``, like typing does."""

    def __new__(mcls, typename: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
        import collections

        make: Any = collections.namedtuple  # called with a computed name (mypy checks literals)
        annotations: dict[str, object] = ns.get("__annotations__", {})
        names = list(annotations)
        defaults = [ns[n] for n in names if n in ns]
        cls: Any = make(typename, names, defaults=defaults, module=ns["__module__"])
        cls.__annotations__ = dict(annotations)
        cls.__doc__ = ns.get("__doc__", cls.__doc__)
        cls.__qualname__ = ns.get("__qualname__", typename)
        for key, value in ns.items():
            if key in names or key in ("__module__", "__qualname__", "__annotations__"):
                continue
            if key in ("__new__", "__init__", "__slots__", "__getnewargs__", "_fields"):
                raise AttributeError(f"cannot overwrite NamedTuple attribute {key}")
            setattr(cls, key, value)
        return cls


#: ``typing.NamedTuple``'s class syntax without importing typing (start-up time). Modules
#: import ``typing.NamedTuple`` under TYPE_CHECKING (what mypy reads) and this one otherwise.
NamedTuple: Any = type.__new__(_NamedTupleMeta, "NamedTuple", (), {})
