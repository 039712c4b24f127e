"""Building the Containerfile.examples/ for real (RUN in the sandbox, layers from overlay upper
dirs) and running what was built; cache, determinism and errors."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from fixtures import make_images
from imgtool.errors import ImageNotFound
from imgtool.store import Store
from tests.conftest import REPO, imgtool, seed
from tests.support.registry import Registry
from tests.support.tools import require_tool
from tests.support.unreachable import unreachable_reason

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (namespaces, mounts)"),
]
EXAMPLES = REPO / "Containerfile.examples"
NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "expect.json").exists())


def _context(name: str, tmp_path: Path) -> Path:
    ctx = tmp_path / name
    shutil.copytree(EXAMPLES / name, ctx)
    if name == "dockerignore":
        (ctx / ".git").mkdir()
        (ctx / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return ctx


def _build(ctx: Path, tag: str, expect: dict, tmp_path: Path, *extra: str):
    args = ["build", "-t", tag]
    for k, v in expect.get("build_args", {}).items():
        args += ["--build-arg", f"{k}={v}"]
    for k, v in expect.get("secrets", {}).items():
        f = tmp_path / f"secret-{k}"
        f.write_text(v)
        args += ["--secret", f"id={k},src={f}"]
    return imgtool(*args, *extra, str(ctx), timeout=900)


def _check_run(tag: str, want: dict) -> None:
    r = imgtool("run", "--rm", tag, *want.get("run", []))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    for line in want.get("stdout", []):
        assert line in lines, (line, r.out)
    for rx in want.get("stdout_regex", []):
        assert any(re.fullmatch(rx, x) for x in lines), (rx, r.out)


def _layer_members(store: Store, tag: str) -> list[tuple[str, bytes]]:
    import gzip

    img = store.image(tag)
    out = []
    for d in img.manifest.layers:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(store.read_blob(d.digest)))) as t:
            for m in t:
                data = t.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
                out.append((m.name, data))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_example(name: str, hub: Registry, store: Store, tmp_path: Path) -> None:
    expect = json.loads((EXAMPLES / name / "expect.json").read_text())
    if expect.get("needs") == "debian":
        require_tool("debootstrap", "debootstrap")
        seed(hub, make_images.make_debian(tmp_path / "debian"), "library/debian:bookworm")
    ctx = _context(name, tmp_path)
    if "base" in expect:
        base = expect["base"]
        r = imgtool("build", "-t", base["tag"], str(ctx / base["context"]))
        assert r.code == 0, r.err
        ctx = ctx / expect["context"]
    tag = f"example-{name}"
    r = _build(ctx, tag, expect, tmp_path)
    if r.code != 0 and expect.get("network") and (reason := unreachable_reason(r.err)):
        pytest.skip(f"no package mirror reachable: {reason}")
    assert r.code == 0, r.err
    _check_run(tag, expect)
    members = _layer_members(store, tag)
    for path in expect.get("absent", []):
        assert all(n.rstrip("/") != path for n, _ in members), path
    if "not_in_layers" in expect:
        needle = expect["not_in_layers"].encode()
        assert not [n for n, data in members if needle in data]
        cfg = store.image(tag).config.raw
        assert needle not in cfg
    for target, want in expect.get("targets", {}).items():
        r = _build(ctx, f"{tag}-{target}", expect, tmp_path, "--target", target)
        assert r.code == 0, r.err
        _check_run(f"{tag}-{target}", want)


def test_rebuild_is_cached_and_files_invalidate(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    ctx = _context("multistage", tmp_path)
    assert imgtool("build", "-t", "m:1", str(ctx)).code == 0
    first = store.find("m:1")[1].digest
    t0 = time.monotonic()
    r = imgtool("build", "-t", "m:1", str(ctx))
    assert r.code == 0 and "0 cached" not in r.out
    assert "CACHED" in r.err and time.monotonic() - t0 < 5
    assert store.find("m:1")[1].digest == first  # unchanged input, same image
    (ctx / "app.sh").write_text('#!/bin/sh\necho "app version @VERSION@ changed"\n')
    r = imgtool("build", "-t", "m:1", "--explain-cache", str(ctx))
    assert r.code == 0
    assert "files changed: app.sh" in r.err
    assert store.find("m:1")[1].digest != first
    r = imgtool("build", "-t", "m:1", "--build-arg", "VERSION=9", "--explain-cache", str(ctx))
    assert "build arg VERSION changed" in r.err


def test_source_date_epoch_gives_the_same_digest(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    ctx = _context("heredocs", tmp_path)
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    r1 = imgtool("build", "-q", "--no-cache", "-t", "h:1", str(ctx), env=env)
    r2 = imgtool("build", "-q", "--no-cache", "-t", "h:2", str(ctx), env=env)
    assert r1.code == 0 and r2.code == 0, r1.err + r2.err
    assert r1.out == r2.out
    assert store.find("h:1")[1].digest == store.find("h:2")[1].digest
    cfg = store.image("h:1").config
    assert cfg.created == "2023-11-14T22:13:20Z"
    assert [h.get("empty_layer", False) for h in cfg.history][-1] is True  # CMD


def test_failing_run_and_bad_files_stop_with_clear_errors(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM busybox\nRUN echo about to fail; exit 7\n")
    r = imgtool("build", "-t", "bad:1", str(ctx))
    assert r.code == 7 and "exit status 7" in r.err and "about to fail" in r.err
    assert "imgtool: Containerfile:2: 'RUN echo about to fail; exit 7' failed" in r.err
    with pytest.raises(ImageNotFound):
        store.find("bad:1")
    for text, needle in [
        ("FROM busybox\nCOPY ../secret /x\n", "outside the build context"),
        ("FROM busybox\nFROBNICATE\n", "Containerfile:2: unknown instruction"),
        ("FROM busybox\nCOPY --from=nowhere /a /b\n", "nowhere"),
        ("FROM busybox\nRUN --bogus=1 true\n", "unknown flag --bogus"),
        ("FROM busybox\nCOPY missing.txt /x\n", "'missing.txt' not found"),
        ("FROM busybox\nEXPOSE abc\n", "Containerfile:2: EXPOSE: invalid port 'abc'"),
        ("FROM busybox\nEXPOSE 90-80\n", "invalid port '90-80'"),
        ("FROM busybox\nSTOPSIGNAL SIGFOO\n", "Containerfile:2: STOPSIGNAL: invalid signal"),
        (
            "FROM busybox\nHEALTHCHECK --interval=abc CMD true\n",
            "Containerfile:2: HEALTHCHECK: --interval=abc is not a duration",
        ),
        ("FROM busybox\nHEALTHCHECK --retries=x CMD true\n", "--retries=x is not a whole"),
        # (HEALTHCHECK CMD ["true" was refused here; BuildKit takes it as the shell form, as
        # for CMD: see test_instructions' test_invalid_json_is_the_shell_form)
        (
            "FROM busybox\nUSER nobody-here\nRUN true\n",
            "Containerfile:3: RUN true: resolve user",
        ),
    ]:
        (ctx / "Containerfile").write_text(text)
        r = imgtool("build", str(ctx))
        assert r.code != 0 and needle in r.err, (text, r.err)
        errors = [line for line in r.err.splitlines() if line.startswith("imgtool: ")]
        assert len(errors) == 1 and needle in errors[0], (text, r.err)
    # invalid JSON is the shell form (as BuildKit); JSON that is not strings is an error
    (ctx / "Containerfile").write_text('FROM busybox\nCMD ["sh"\n')
    assert imgtool("build", "--check", str(ctx)).code == 0
    (ctx / "Containerfile").write_text('FROM busybox\nCMD ["sh", ["-c"]]\n')
    r = imgtool("build", "--check", str(ctx))
    assert r.code == 1 and "Containerfile:2: CMD: the JSON form must be an array" in r.err


def test_build_files_that_are_not_utf8_give_one_line_naming_them(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    cf = ctx / "Containerfile"
    cf.write_bytes(b"FROM scratch\nLABEL x=\xff\xfe\n")
    for args in (["build"], ["build", "--check"], ["build", "-f", str(cf)]):
        r = imgtool(*args, str(ctx))
        assert r.code == 1 and "Traceback" not in r.err, r.err
        assert r.err.strip().count("\n") == 0 and "Containerfile: not valid UTF-8" in r.err
    cf.write_bytes(b"\xef\xbb\xbfFROM scratch\n")  # a byte-order mark is not an error
    assert imgtool("build", "--check", str(ctx)).code == 0
    (ctx / ".dockerignore").write_bytes(b"\xc3(\n")
    r = imgtool("build", str(ctx))
    assert r.code == 1 and r.err.strip().endswith(
        ".dockerignore: not valid UTF-8 (byte 0xc3 at offset 0)"
    )


def test_zstd_iidfile_labels(hub: Registry, store: Store, tmp_path: Path) -> None:
    ctx = _context("hello", tmp_path)
    iid = tmp_path / "iid"
    r = imgtool(
        "build",
        "-t",
        "z:1",
        "--compression",
        "zstd",
        "--iidfile",
        str(iid),
        "--label",
        "team=core",
        str(ctx),
    )
    assert r.code == 0, r.err
    img = store.image("z:1")
    assert iid.read_text() == img.config.digest
    assert img.manifest.layers[-1].media_type.endswith("+zstd")
    assert img.config.config["Labels"]["team"] == "core"
    assert "hello from imgtool" in imgtool("run", "--rm", "z:1").out


def test_gc_trims_the_build_cache(hub: Registry, store: Store, tmp_path: Path) -> None:
    ctx = _context("hello", tmp_path)
    assert imgtool("build", "-t", "g:1", str(ctx)).code == 0
    assert list((store.root / "buildcache").glob("*.json"))
    assert imgtool("rmi", "g:1").code == 0
    r = imgtool("gc")
    assert r.code == 0 and "1 build-cache entries" in r.out
    r = imgtool("build", "-t", "g:1", str(ctx))
    assert r.code == 0 and "CACHED" not in r.err  # built again: its layer was collected
    r = imgtool("gc", "--build-cache")
    assert r.code == 0 and not list((store.root / "buildcache").glob("*.json"))


def test_add_archives_and_urls(hub: Registry, store: Store, tmp_path: Path) -> None:
    import hashlib
    import http.server
    import threading

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    payload = ctx / "payload"
    payload.mkdir()
    (payload / "inside.txt").write_text("from the archive\n")
    with tarfile.open(ctx / "bundle.tar.gz", "w:gz") as t:
        t.add(payload / "inside.txt", arcname="pkg/inside.txt")
    served = tmp_path / "www"
    served.mkdir()
    (served / "remote.txt").write_text("downloaded\n")
    digest = hashlib.sha256(b"downloaded\n").hexdigest()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/remote.txt"
    try:
        (ctx / "Containerfile").write_text(
            "FROM busybox\nADD bundle.tar.gz /opt/\n"
            f"ADD --checksum=sha256:{digest} {url} /srv/remote.txt\n"
            'CMD ["sh", "-c", "cat /opt/pkg/inside.txt /srv/remote.txt"]\n'
        )
        r = imgtool("build", "-t", "add:1", str(ctx))
        assert r.code == 0, r.err
        assert imgtool("run", "--rm", "add:1").out == "from the archive\ndownloaded\n"
        (ctx / "Containerfile").write_text(
            f"FROM busybox\nADD --checksum=sha256:{'0' * 64} {url} /srv/remote.txt\n"
        )
        r = imgtool("build", "-t", "add:2", str(ctx))
        assert r.code == 1 and "checksum mismatch" in r.err
    finally:
        httpd.shutdown()


def test_metadata_instructions_make_the_config(hub: Registry, store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        "FROM busybox\n"
        'SHELL ["/bin/sh", "-ec"]\n'
        "EXPOSE 8080 53/udp\n"
        "VOLUME /data\n"
        "STOPSIGNAL SIGINT\n"
        "HEALTHCHECK --interval=5s --timeout=1m30s --retries=2 CMD wget -qO- http://localhost/ || exit 1\n"
        "ENTRYPOINT exec /bin/app\n"
        "ONBUILD RUN echo child\n"
        "USER 1000:1000\n"
        "WORKDIR /srv\n"
        "WORKDIR sub\n"
    )
    r = imgtool("build", "-t", "meta:1", str(ctx))
    assert r.code == 0, r.err
    c = store.image("meta:1").config
    cfg = c.config
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "53/udp"}
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["StopSignal"] == "SIGINT"
    assert cfg["Healthcheck"]["Test"] == ["CMD-SHELL", "wget -qO- http://localhost/ || exit 1"]
    assert cfg["Healthcheck"]["Interval"] == 5_000_000_000 and cfg["Healthcheck"]["Retries"] == 2
    assert cfg["Healthcheck"]["Timeout"] == 90_000_000_000
    assert cfg["Entrypoint"] == ["/bin/sh", "-ec", "exec /bin/app"]
    assert "Cmd" not in cfg  # a new ENTRYPOINT drops the base image's CMD
    assert cfg["OnBuild"] == ["RUN echo child"]
    assert cfg["User"] == "1000:1000" and cfg["WorkingDir"] == "/srv/sub"
    # only the WORKDIRs that made a directory (owned by the USER, as BuildKit) have a layer
    made = [h["created_by"] for h in c.history[1:] if not h.get("empty_layer")]
    assert made == ["WORKDIR /srv", "WORKDIR /srv/sub"]
    r = imgtool("run", "--rm", "--entrypoint", "", "meta:1", "stat", "-c", "%u:%g %n", ".", "..")
    assert r.out.splitlines() == ["1000:1000 .", "1000:1000 .."], r.err


def test_unnamed_build_is_listed_and_removable(hub: Registry, store: Store, tmp_path: Path) -> None:
    ctx = _context("hello", tmp_path)
    r = imgtool("build", "-q", str(ctx))
    assert r.code == 0, r.err
    image_id = r.out.strip()
    assert "<none>" in imgtool("images").out
    assert "hello from imgtool" in imgtool("run", "--rm", image_id[7:19]).out
    assert imgtool("rmi", image_id[7:19]).code == 0
    assert "<none>" not in imgtool("images").out


def test_run_mounts_and_network_flags(hub: Registry, store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "input.txt").write_text("from the context\n")
    (ctx / "Containerfile").write_text(
        "FROM busybox AS tools\nRUN echo 'from a stage' > /tool.txt\n"
        "FROM busybox\n"
        "RUN --mount=type=bind,target=/ctx cat /ctx/input.txt > /a.txt\n"
        "RUN --mount=type=bind,from=tools,source=/tool.txt,target=/t.txt cat /t.txt > /b.txt\n"
        "RUN --network=none ls /sys/class/net > /c.txt\n"
        "RUN --network=host ls /sys/class/net | wc -l > /d.txt\n"
        'CMD ["sh", "-c", "cat /a.txt /b.txt /c.txt /d.txt; ls /ctx /t.txt 2>&1 | head -2"]\n'
    )
    r = imgtool("build", "-t", "mounts:1", str(ctx))
    assert r.code == 0, r.err
    lines = imgtool("run", "--rm", "mounts:1").out.splitlines()
    assert lines[:3] == ["from the context", "from a stage", "lo"]
    assert int(lines[3]) >= 2  # the host's interfaces
    assert all("No such file" in x for x in lines[4:6])  # mount targets are not in the image


def test_args_and_workdir_as_run_steps_see_them(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        "FROM busybox\n"
        "ARG NAME\nARG TARGETARCH\n"
        'RUN test "${NAME+set}" != set && echo "$TARGETARCH" > /arch\n'
        'RUN echo "worker:x:1234:1234::/home/worker:/bin/sh" >> /etc/passwd\n'
        "USER worker\nWORKDIR /home/worker/app/\n"
        "RUN touch made && stat -c '%U %n' /home/worker /home/worker/app made > /home/worker/app/who\n"
        'CMD ["sh", "-c", "cat /arch who; pwd"]\n'
    )
    r = imgtool("build", "-t", "args:1", str(ctx))
    assert r.code == 0, r.err
    assert store.image("args:1").config.config["WorkingDir"] == "/home/worker/app/"
    from imgtool import oci

    out = imgtool("run", "--rm", "args:1").out.splitlines()
    assert out == [
        oci.Platform.host().architecture,
        "worker /home/worker",
        "worker /home/worker/app",
        "worker made",
        "/home/worker/app",
    ]


def test_gc_removes_the_work_directory_of_a_killed_build(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM busybox\nRUN sleep 60\n")
    build = subprocess.Popen(
        [sys.executable, "-m", "imgtool", "build", str(ctx)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    work = store.root / "build"
    deadline = time.monotonic() + 60
    while not list(work.glob("build.*/run.*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(work.glob("build.*")), "the build never started its RUN step"
    # (a gc waits for a running build's store lock; test_build_semantics shows that it leaves
    # a running build's work directory alone)
    build.send_signal(signal.SIGKILL)  # no clean-up of its own
    build.wait(timeout=60)
    assert len(list(work.glob("build.*"))) == 1
    assert imgtool("gc").code == 0
    assert list(work.glob("build.*")) == []


def test_check_refuses_what_would_fail_mid_build(tmp_path: Path) -> None:
    """`build --check` runs parse, typing and the stage plan: a bad flag, a bad value or a
    cycle is refused there, before anything runs (it used to pass these)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for text, needle in [
        ("FROM busybox\nRUN --bogus=1 true\n", "Containerfile:2: unknown flag --bogus for RUN"),
        ("FROM busybox\nEXPOSE abc\n", "Containerfile:2: EXPOSE: invalid port 'abc'"),
        ("FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\n", "circular dependency"),
        ("FROM busybox\nRUN --mount=type=cache true\n", "needs a target"),
    ]:
        (ctx / "Containerfile").write_text(text)
        r = imgtool("build", "--check", str(ctx))
        assert r.code == 1 and needle in r.err and r.err.count("\n") == 1, (text, r.err)
    (ctx / "Containerfile").write_text("FROM busybox AS a\nFROM scratch\nCOPY --from=a /x /x\n")
    r = imgtool("build", "--check", str(ctx))
    assert r.code == 0 and "3 instructions in 2 stages, no errors" in r.out, r.err
