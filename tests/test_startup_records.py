"""``pywatt_proto._records.record``: the cheap stand-in for frozen/slotted/kw_only dataclasses.

The message classes are built with it; these tests pin the dataclass behaviour they keep
(keyword-only construction, defaults and factories, ``__post_init__``, frozen fields,
slots, equality/hash/repr, copy/pickle, the ``dataclasses`` helpers) on small records
defined here and on real messages.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import uuid
from typing import ClassVar

import pytest

from pywatt_proto import LocalProtocolError
from pywatt_proto._messages import (
    Endpoint,
    Heartbeat,
    HttpRequest,
    Init,
    Message,
    ServiceType,
    TcpListen,
)
from pywatt_proto._records import FrozenRecordError, field, record, replace


@record
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)
    ORIGIN_NAME: ClassVar[str] = "origin"

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x")
        object.__setattr__(self, "y", abs(self.y))


@record
class Empty:
    pass


@record
class Custom:
    a: int

    def __repr__(self) -> str:
        return "custom!"


def test_construction_is_keyword_only_with_defaults_factories_and_post_init() -> None:
    p = Point(x=1, y=-2)
    assert (p.x, p.y, p.tags) == (1, 2, [])
    assert Point(x=1).tags is not Point(x=1).tags  # one factory call per instance
    assert Point.ORIGIN_NAME == "origin"  # a ClassVar is not a field
    with pytest.raises(TypeError):
        Point(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(x=1, z=2)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="x"):
        Point(x=-1)
    assert Point.__init__.__qualname__ == "Point.__init__"


def test_fields_are_frozen_and_slotted() -> None:
    p = Point(x=1)
    with pytest.raises(FrozenRecordError, match="'x'"):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.y
    with pytest.raises(AttributeError):
        p.other = 1  # type: ignore[attr-defined]
    assert not hasattr(p, "__dict__")
    assert vars(Point)["__slots__"] == ("x", "y", "tags")
    assert issubclass(FrozenRecordError, AttributeError)


def test_equality_hash_repr() -> None:
    assert Point(x=1, y=2) == Point(x=1, y=2)
    assert Point(x=1, y=2) != Point(x=1, y=3)
    assert Point(x=1) != Custom(a=1)  # type: ignore[comparison-overlap]
    assert Point(x=1).__eq__(Custom(a=1)) is NotImplemented
    assert Empty() == Empty() and hash(Empty()) == hash(Empty())
    assert hash(ServiceType.custom("a")) == hash(ServiceType.custom("a"))
    assert hash(ServiceType.custom("a")) != hash(ServiceType.custom("b"))
    with pytest.raises(TypeError):
        hash(Point(x=1))  # holds a list, so unhashable, as a dataclass would be
    assert repr(Point(x=1, y=2)) == "Point(x=1, y=2, tags=[])"
    assert repr(Empty()) == "Empty()"
    assert repr(Custom(a=1)) == "custom!"  # the class's own method is kept
    assert repr(Endpoint(path="/", methods=("GET",))) == (
        "Endpoint(path='/', methods=('GET',), auth=None)"
    )


def test_copy_pickle_and_replace() -> None:
    req = HttpRequest(request_id="r", method="GET", uri="/", headers={"h": "v"}, body=b"x")
    assert copy.copy(req) == req and copy.deepcopy(req) == req
    assert pickle.loads(pickle.dumps(req)) == req
    assert pickle.loads(pickle.dumps(Point(x=1, y=2))) == Point(x=1, y=2)
    assert replace(req, method="POST").method == "POST"
    assert replace(req, method="POST").uri == "/"
    with pytest.raises(LocalProtocolError):
        replace(req, method=3)  # validation runs again


def test_dataclasses_helpers_still_work() -> None:
    listen = TcpListen(host="127.0.0.1", port=1)
    init = Init(orchestrator_api="http://x", module_id="m", env={}, listen=listen)
    assert dataclasses.is_dataclass(init) and dataclasses.is_dataclass(Init)
    names = [f.name for f in dataclasses.fields(Init)]
    assert names[:4] == ["orchestrator_api", "module_id", "env", "listen"]
    assert dataclasses.replace(init, extensions=("identify",)).extensions == ("identify",)
    assert dataclasses.asdict(Endpoint(path="/", methods=("GET",))) == {
        "path": "/",
        "methods": ("GET",),
        "auth": None,
    }
    msg = Message(id=uuid.UUID(int=1), content=None)
    assert dataclasses.replace(msg, content=1).metadata == msg.metadata
    assert Heartbeat() == Heartbeat()


def test_a_record_may_not_inherit_from_a_record() -> None:
    with pytest.raises(TypeError, match="must not inherit from a record"):

        @record
        class Point3(Point):
            z: int = 0


def test_a_record_may_not_define_setattr() -> None:
    with pytest.raises(TypeError, match="__setattr__"):

        @record
        class Bad:
            a: int

            def __setattr__(self, name: str, value: object) -> None:
                pass


@record
class Cached:
    key: str
    hint: int = field(default=0, compare=False, repr=False)
    _memo: dict[str, int] | None = field(default=None, init=False, compare=False, repr=False)


def test_field_options_init_repr_compare() -> None:
    c = Cached(key="k", hint=3)
    assert c._memo is None  # init=False: starts at its default, not a parameter
    with pytest.raises(TypeError):
        Cached(key="k", _memo={})  # type: ignore[call-arg]
    object.__setattr__(c, "_memo", {"a": 1})
    assert c == Cached(key="k") and hash(c) == hash(Cached(key="k"))  # compare=False fields
    assert repr(c) == "Cached(key='k')"
    assert replace(c, key="j") == Cached(key="j") and replace(c, key="j")._memo is None
    with pytest.raises(ValueError, match="_memo"):
        replace(c, _memo={})
    assert [f.name for f in dataclasses.fields(Cached) if f.compare] == ["key"]
    with pytest.raises(ValueError, match="both"):
        field(default=1, default_factory=int)  # type: ignore[call-overload]


def test_named_tuple_class_syntax_matches_typing() -> None:
    import typing

    from pywatt_proto._records import NamedTuple as CheapNamedTuple

    class Cheap(CheapNamedTuple):  # type: ignore[misc]
        """Doc."""

        a: int
        b: str = "x"

        @property
        def twice(self) -> int:
            return int(self.a) * 2

    class Typed(typing.NamedTuple):
        """Doc."""

        a: int
        b: str = "x"

    cheap, typed = Cheap(1), Typed(1)
    assert tuple(cheap) == tuple(typed) == (1, "x")
    assert repr(cheap) == "Cheap(a=1, b='x')" and repr(typed) == "Typed(a=1, b='x')"
    assert Cheap._fields == Typed._fields and Cheap._field_defaults == Typed._field_defaults
    assert Cheap.__doc__ == "Doc." and Cheap.__mro__[1:] == Typed.__mro__[1:] == (tuple, object)
    assert Cheap.__module__ == Typed.__module__ == __name__
    assert cheap.twice == 2 and cheap._replace(b="y") == (1, "y")
    with pytest.raises(AttributeError):

        class Bad(CheapNamedTuple):  # type: ignore[misc]
            a: int

            def _fields(self) -> None:
                pass


def test_signature_shows_the_keyword_only_fields_before_any_instance() -> None:
    import inspect

    @record
    class Fresh:
        name: str
        size: int = 3
        tags: list[str] = field(default_factory=list)
        _cache: int = field(default=0, init=False)

    assert str(inspect.signature(Fresh)) == (
        "(*, name: 'str', size: 'int' = 3, tags: 'list[str]' = <factory>) -> 'None'"
    )
    assert Fresh(name="a").size == 3  # the __init__ compiled for the signature is the one used
    assert str(inspect.signature(HttpRequest)).startswith("(*, request_id: 'str', method:")
