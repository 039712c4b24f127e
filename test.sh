#!/usr/bin/env bash
# Run imgtool's whole test suite on a Debian machine, installing what it needs first:
# Debian's docker-registry, skopeo, oci-image-tool, umoci, busybox-static, debootstrap, runc, buildah,
# nftables, iproute2, qemu-system-x86 (a guest with a pure cgroup v2 kernel runs the runtime tests again),
# podman (the confinement tests' oracle for what Docker's defaults allow),
# and imgtool itself with its test extra in ./.venv. Arguments go to pytest. Run it as root:
# the runtime tests need namespaces, mounts and cgroups (they skip, saying so, otherwise).
set -euo pipefail
cd "$(dirname "$0")"
. ./.ci/lib.sh

install_debian docker-registry skopeo oci-image-tool umoci busybox-static ca-certificates \
  debootstrap runc buildah nftables iproute2 qemu-system-x86 podman gcc libc6-dev
install_imgtool test

echo "== ruff"
.venv/bin/ruff check imgtool tests fixtures benchmarks
.venv/bin/ruff format --check --quiet imgtool tests fixtures benchmarks
echo "== mypy"
.venv/bin/mypy  # pyproject.toml's [tool.mypy]: the whole package, clean
echo "== pytest"
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
