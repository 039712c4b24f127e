"""imgtool/values.py: the value classes that stand in for dataclasses on the hot paths keep a
dataclass's equality, hashing, immutability, repr, pickling and replace."""

from __future__ import annotations

import copy
import pickle

import pytest

from imgtool.oci import Descriptor, Platform
from imgtool.reference import Reference, parse
from imgtool.sandbox.cgroups import Limits
from imgtool.sandbox.spec import BindMount, SandboxSpec


def test_frozen_values_compare_hash_and_refuse_changes() -> None:
    a, b = Platform("linux", "arm64"), Platform("linux", "arm64", "", "")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Platform("linux", "amd64")
    assert a != ("linux", "arm64", "", "")  # another class: never equal
    with pytest.raises(AttributeError, match="cannot assign to field 'os'"):
        a.os = "windows"
    with pytest.raises(AttributeError):
        del a.variant
    with pytest.raises(AttributeError):
        a.extra = 1  # __slots__: no other attribute
    assert repr(a) == "Platform(os='linux', architecture='arm64', variant='', os_version='')"


def test_a_field_that_cannot_be_hashed_makes_hashing_fail_as_a_dataclass_would() -> None:
    d = Descriptor("application/x", "sha256:" + "a" * 64, 1, {"k": "v"})
    with pytest.raises(TypeError):
        hash(d)
    assert d == Descriptor("application/x", "sha256:" + "a" * 64, 1, {"k": "v"})


def test_mutable_values_compare_but_do_not_hash() -> None:
    spec = SandboxSpec(["true"], [], "/l", "/u", "/w", "/r")
    assert spec == SandboxSpec(["true"], [], "/l", "/u", "/w", "/r")
    spec.netns = "imgtool-x"
    assert spec != SandboxSpec(["true"], [], "/l", "/u", "/w", "/r")
    with pytest.raises(TypeError):
        hash(spec)
    assert (
        SandboxSpec(["a"], [], "", "", "", "").env is not SandboxSpec(["a"], [], "", "", "", "").env
    )


def test_pickle_copy_and_replace_go_through_init() -> None:
    spec = SandboxSpec(
        ["true"],
        ["l/a"],
        "/l",
        "/u",
        "/w",
        "/r",
        mounts=[BindMount("/h", "/c", True)],
        limits=Limits(memory=64 << 20),
    )
    assert pickle.loads(pickle.dumps(spec)) == spec  # the builder's fork server sends it so
    ref = parse("busybox")
    assert pickle.loads(pickle.dumps(ref)) == ref and copy.copy(ref) == ref
    assert ref.replace(tag="1.36") == Reference("docker.io", "library/busybox", "1.36")
    with pytest.raises(TypeError, match="no field 'nope'"):
        ref.replace(nope=1)
    assert Limits(1, 2.0, 3).as_dict() == {"memory": 1, "cpus": 2.0, "pids": 3}


def _all_value_classes() -> list[type]:
    import importlib
    import pkgutil

    import imgtool
    from imgtool.values import Frozen, Value

    for m in pkgutil.walk_packages(imgtool.__path__, "imgtool."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    found: list[type] = []
    todo = list(Value.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls is not Frozen:
            found.append(cls)
    return found


def test_every_value_class_takes_its_fields_in_slot_order() -> None:
    """Equality, hashing, pickling and replace() read the fields in __slots__ order and give
    them back to __init__ in that order: a class whose __init__ differs would mix its fields."""
    import inspect

    classes = _all_value_classes()
    assert len(classes) > 20  # the walk found the package's values
    for cls in classes:
        assert "__slots__" in cls.__dict__, f"{cls.__qualname__}: no __slots__ of its own"
        assert "__init__" in cls.__dict__, f"{cls.__qualname__}: no __init__ of its own"
        params = list(inspect.signature(cls.__init__).parameters)[1:]
        assert tuple(params) == tuple(cls.__slots__), cls.__qualname__
        parents = [k for k in cls.__mro__[1:] if k.__dict__.get("__slots__")]
        assert not parents, f"{cls.__qualname__} adds fields to {parents[0].__qualname__}'s"
