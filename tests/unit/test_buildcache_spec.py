"""`--cache-to`/`--cache-from` values: what parses, and every bad key or value refused with
one line that names it (never accepted and ignored)."""

from __future__ import annotations

import pytest

from imgtool.buildcache import CacheSpec, parse_spec
from imgtool.buildcache.spec import Direction
from imgtool.errors import BuildError


@pytest.mark.parametrize(
    ("direction", "text", "want"),
    [
        (
            "from",
            "type=registry,ref=localhost:5000/app/cache",
            CacheSpec("registry", "localhost:5000/app/cache"),
        ),
        (
            "to",
            "type=registry,ref=localhost:5000/app/cache:v1,mode=max,mounts=true",
            CacheSpec("registry", "localhost:5000/app/cache:v1", "max", True),
        ),
        ("from", "type=registry,ref=r,mounts=true", CacheSpec("registry", "r", "min", True)),
        ("to", "type=local,dest=./cache", CacheSpec("local", "./cache")),
        ("to", "type=local,dest=/c,mode=min,mounts=false", CacheSpec("local", "/c")),
        ("from", "type=local,src=/c,mounts=true", CacheSpec("local", "/c", "min", True)),
        ("to", " type = local , dest = d ", CacheSpec("local", "d")),
    ],
)
def test_parses(direction: Direction, text: str, want: CacheSpec) -> None:
    assert parse_spec(text, direction) == want


@pytest.mark.parametrize("direction", ["from", "to"])
@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("", "is not key=value"),
        ("type=registry,ref=r,", "is not key=value"),
        ("registry", "is not key=value"),
        ("=x,type=local,dest=d", "is not key=value"),
        ("mode=max", "type=''"),
        ("type=s3,ref=r", "type='s3'"),
        ("type=inline", "type='inline'"),
        ("type=registry", "needs ref="),
        ("type=registry,ref=", "needs ref="),
        ("type=registry,ref=Bad Ref", "invalid reference"),
        ("type=registry,ref=r,dest=d", "unknown key 'dest'"),
        ("type=registry,ref=r,src=d", "unknown key 'src'"),
        ("type=registry,ref=r,compression=zstd", "unknown key 'compression'"),
        ("type=local,dest=d,ref=r", "unknown key 'ref'"),
        ("type=registry,ref=r,mounts=yes", "mounts='yes'"),
        ("type=registry,ref=r,mounts=1", "mounts='1'"),
        ("type=local,dest=d,dest=e", "dest is given twice"),
    ],
)
def test_refuses(direction: Direction, text: str, culprit: str) -> None:
    assert_refused(direction, text, culprit)


@pytest.mark.parametrize(
    ("direction", "text", "culprit"),
    [
        # what an export keeps is --cache-to's choice: on --cache-from it would do nothing
        ("from", "type=registry,ref=r,mode=max", "mode= chooses what --cache-to exports"),
        ("from", "type=local,src=s,mode=min", "mode= chooses what --cache-to exports"),
        ("from", "type=local,dest=d", "dest= is where --cache-to writes"),
        ("from", "type=local,src=s,dest=d", "dest= is where --cache-to writes"),
        ("to", "type=local,src=s", "src= is what --cache-from reads"),
        ("to", "type=local,dest=d,src=s", "src= is what --cache-from reads"),
        ("from", "type=local", "type=local needs src="),
        ("from", "type=local,src=", "type=local needs src="),
        ("to", "type=local", "type=local needs dest="),
        ("to", "type=local,dest=d,mode=mid", "mode='mid'"),
        ("to", "type=local,dest=d,mode=", "mode=''"),
    ],
)
def test_a_key_of_the_other_flag_is_refused(direction: Direction, text: str, culprit: str) -> None:
    assert_refused(direction, text, culprit)


def assert_refused(direction: Direction, text: str, culprit: str) -> None:
    with pytest.raises(BuildError) as e:
        parse_spec(text, direction)
    message = str(e.value)
    assert culprit in message
    assert "\n" not in message
    # the flag and the value as given, so a user finds which one it was
    assert message.startswith(f"--cache-{direction} {text!r}: ")
