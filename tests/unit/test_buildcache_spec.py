"""`--cache-to`/`--cache-from` values: what parses, and every bad key or value refused with
one line that names it (never accepted and ignored)."""

from __future__ import annotations

import pytest

from imgtool.buildcache import CacheSpec, parse_spec
from imgtool.errors import BuildError


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "type=registry,ref=localhost:5000/app/cache",
            CacheSpec("registry", "localhost:5000/app/cache"),
        ),
        (
            "type=registry,ref=localhost:5000/app/cache:v1,mode=max,mounts=true",
            CacheSpec("registry", "localhost:5000/app/cache:v1", "max", True),
        ),
        ("type=local,dest=./cache", CacheSpec("local", "./cache")),
        ("type=local,src=/c,mode=min,mounts=false", CacheSpec("local", "/c", "min", False)),
        (" type = local , dest = d ", CacheSpec("local", "d")),
    ],
)
def test_parses(text: str, want: CacheSpec) -> None:
    assert parse_spec(text) == want


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
        ("type=registry,ref=r,compression=zstd", "unknown key 'compression'"),
        ("type=local,dest=d,ref=r", "unknown key 'ref'"),
        ("type=local", "needs dest= or src="),
        ("type=local,dest=a,src=b", "not both"),
        ("type=local,dest=d,mode=mid", "mode='mid'"),
        ("type=local,dest=d,mode=", "mode=''"),
        ("type=local,dest=d,mounts=yes", "mounts='yes'"),
        ("type=local,dest=d,mounts=1", "mounts='1'"),
        ("type=local,dest=d,dest=e", "dest is given twice"),
    ],
)
def test_refuses(text: str, culprit: str) -> None:
    with pytest.raises(BuildError) as e:
        parse_spec(text)
    message = str(e.value)
    assert culprit in message
    assert "\n" not in message
    assert repr(text) in message  # the value as given, so a user finds which flag it was
