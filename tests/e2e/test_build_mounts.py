"""RUN --mount kinds in a real build: tmpfs, ssh; and what mount points leave in a layer."""

from __future__ import annotations

import gzip
import io
import os
import socket
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from imgtool.store import Store
from tests.conftest import imgtool
from tests.support.registry import Registry
from tests.support.tools import require_tool

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (namespaces, mounts)"),
]


def _layer_names(store: Store, tag: str) -> list[list[str]]:
    """Each layer's member names, lowest first."""
    out = []
    for d in store.image(tag).manifest.layers:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(store.read_blob(d.digest)))) as t:
            out.append(t.getnames())
    return out


def _context(tmp_path: Path, containerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(containerfile)
    return ctx


def test_tmpfs_mount_is_a_tmpfs_and_leaves_nothing(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    ctx = _context(
        tmp_path,
        "FROM busybox\n"
        "RUN --mount=type=tmpfs,target=/scratch/t,size=1m"
        " echo hi > /scratch/t/f && grep ' /scratch/t ' /proc/mounts > /out.txt"
        " && cat /scratch/t/f >> /out.txt\n"
        "RUN --mount=type=tmpfs,target=/tmp echo kept > /tmp/gone && echo done > /done.txt\n",
    )
    r = imgtool("build", "-t", "tmpfs:1", str(ctx))
    assert r.code == 0, r.err
    layers = _layer_names(store, "tmpfs:1")
    assert layers[-2:] == [["out.txt"], ["done.txt"]]  # no /scratch, /tmp or /etc entries
    out = imgtool("run", "--rm", "tmpfs:1", "cat", "/out.txt").out.splitlines()
    fields = out[0].split()
    assert fields[1:3] == ["/scratch/t", "tmpfs"], out
    assert "size=1024k" in fields[3] and "nosuid" in fields[3] and "nodev" in fields[3], out
    assert out[1] == "hi"
    assert imgtool("run", "--rm", "tmpfs:1", "ls", "/scratch").code != 0


def test_tmpfs_mount_needs_a_target_and_a_size_that_is_one(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    ctx = _context(tmp_path, "FROM busybox\nRUN --mount=type=tmpfs,size=lots true\n")
    r = imgtool("build", str(ctx))
    assert r.code != 0 and "needs a target" in r.err, r.err
    (ctx / "Containerfile").write_text(
        "FROM busybox\nRUN --mount=type=tmpfs,target=/t,size=lots true\n"
    )
    r = imgtool("build", str(ctx))
    assert r.code != 0 and "'lots' is not a size" in r.err, r.err


def test_mount_points_leave_no_entries_in_the_layer(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    ctx = _context(
        tmp_path,
        "FROM busybox\n"
        "RUN mkdir -p /var/lib && echo a > /var/lib/a\n"
        "RUN --mount=type=cache,target=/var/cache/app/deep"
        " --mount=type=bind,target=/ctx/in/here echo b > /b.txt\n"
        "RUN --mount=type=cache,target=/var/lib/c echo c > /var/lib/c.txt\n"
        "RUN chmod 700 /etc\n",
    )
    r = imgtool("build", "-t", "points:1", str(ctx))
    assert r.code == 0, r.err
    layers = _layer_names(store, "points:1")
    assert layers[-4] == ["var", "var/lib", "var/lib/a"]
    assert layers[-3] == ["b.txt"]  # no var/cache/app/deep, ctx/in/here, etc
    assert layers[-2] == ["var", "var/lib", "var/lib/c.txt"]  # the step's change stays
    assert layers[-1] == ["etc"]  # a real change to /etc is kept, without the mount stubs


AGENT_CLIENT = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
/* connect to $SSH_AUTH_SOCK, send argv[1], print what comes back */
int main(int argc, char **argv) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    const char *path = getenv("SSH_AUTH_SOCK");
    char buf[256];
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (!path || argc < 2) return 2;
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
    write(fd, argv[1], strlen(argv[1]));
    shutdown(fd, SHUT_WR);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) return 1;
    buf[n] = 0;
    printf("%s=%s\n", path, buf);
    return 0;
}
"""


def _echo_agent(path: Path) -> socket.socket:
    """A unix socket server standing in for an ssh agent: answers each connection with what
    it was sent, upper-cased."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed by the test
            with conn:
                conn.sendall(conn.recv(256).upper())

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_ssh_mount_forwards_the_agent_socket(hub: Registry, store: Store, tmp_path: Path) -> None:
    gcc = require_tool("gcc", "gcc")
    ctx = _context(
        tmp_path,
        "FROM busybox\n"
        "COPY client /client\n"
        "RUN --mount=type=ssh /client hello > /default.txt\n"
        "RUN --mount=type=ssh,id=work,target=/agent.sock,required=true /client there > /w.txt\n"
        "RUN --mount=type=ssh,id=absent echo ${SSH_AUTH_SOCK:-unset} > /absent.txt\n",
    )
    (tmp_path / "client.c").write_text(AGENT_CLIENT)
    subprocess.run(
        [gcc, "-static", "-O2", "-o", str(ctx / "client"), str(tmp_path / "client.c")], check=True
    )
    agent = _echo_agent(tmp_path / "agent.sock")
    try:
        r = imgtool(
            "build",
            "-t",
            "ssh:1",
            "--ssh",
            f"default={tmp_path / 'agent.sock'}",
            "--ssh",
            f"work={tmp_path / 'agent.sock'}",
            str(ctx),
        )
        assert r.code == 0, r.err
        out = imgtool("run", "--rm", "ssh:1", "cat", "/default.txt", "/w.txt", "/absent.txt")
        assert out.out.splitlines() == [
            "/run/buildkit/ssh_agent.0=HELLO",
            "/agent.sock=THERE",
            "unset",
        ]
        layers = _layer_names(store, "ssh:1")
        assert layers[-3:] == [["default.txt"], ["w.txt"], ["absent.txt"]]  # no socket stubs
        (ctx / "Containerfile").write_text(
            "FROM busybox\nRUN --mount=type=ssh,required=true true\n"
        )
        r = imgtool("build", str(ctx))
        assert r.code != 0 and "ssh 'default' is required: give --ssh default=" in r.err, r.err
    finally:
        agent.close()


def test_a_mount_from_a_stage_is_keyed_by_the_stage_and_made_only_when_the_step_runs(
    hub: Registry, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fully cached rebuild flattens no stage for RUN --mount=from=…; a change in what the
    stage holds runs the step again."""
    from imgtool.builder import BuildOptions, build
    from imgtool.builder.session import BuildSession

    ctx = _context(
        tmp_path,
        "FROM busybox AS tools\nCOPY v.txt /tool.txt\n"
        "FROM busybox\n"
        "RUN --mount=type=bind,from=tools,source=/tool.txt,target=/t.txt cat /t.txt > /b.txt\n",
    )
    (ctx / "v.txt").write_text("one\n")
    flattened: list[str] = []
    made = BuildSession.source_root

    def counting(self: BuildSession, ctx_: object, frm: str) -> object:
        flattened.append(frm)
        return made(self, ctx_, frm)  # type: ignore[arg-type]

    monkeypatch.setattr(BuildSession, "source_root", counting)

    def built() -> str:
        build(store, BuildOptions(context=ctx, tags=["frommount:1"], output=lambda _: None))
        return imgtool("run", "--rm", "frommount:1", "cat", "/b.txt").out

    assert built() == "one\n" and flattened == ["tools"]
    assert built() == "one\n" and flattened == ["tools"]  # all cached: nothing flattened
    (ctx / "v.txt").write_text("two\n")
    assert built() == "two\n" and flattened == ["tools", "tools"]
