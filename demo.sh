#!/usr/bin/env bash
# Install imgtool and show its main job, offline: a local registry (Debian's docker-registry)
# seeded with images made from Debian's busybox-static, set up as the mirror of docker.io; then
# pull, list, inspect, tag, push, remove and gc. Everything it makes lives in a temporary
# directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")"
. ./.ci/lib.sh

install_debian docker-registry skopeo busybox-static ca-certificates curl nftables iproute2
install_imgtool

work=$(mktemp -d /tmp/imgtool-demo.XXXXXX)
registry_pid=""
cleanup() {
  [ -z "$registry_pid" ] || kill "$registry_pid" 2>/dev/null || true
  [ -z "$registry_pid" ] || wait "$registry_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export IMGTOOL_ROOT="$work/store"
export PATH="$PWD/.venv/bin:$PATH"
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host="127.0.0.1:$port"

echo "== a local registry on $host"
mkdir -p "$work/registry"
cat > "$work/registry/config.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry/data}, delete: {enabled: true}}
http: {addr: "$host", secret: demo}
YAML
docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://$host/v2/" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== test images made from Debian's busybox-static, pushed with skopeo"
.venv/bin/python fixtures/make_images.py busybox "$work/busybox" >/dev/null
.venv/bin/python fixtures/make_images.py multiarch "$work/multiarch" >/dev/null
skopeo copy --quiet "oci:$work/busybox:latest" "docker://$host/library/busybox:latest" --dest-tls-verify=false
skopeo copy --quiet --all "oci:$work/multiarch:latest" "docker://$host/library/multi:latest" --dest-tls-verify=false

echo "== docker.io is mirrored by the local registry (containers-registries.conf)"
export CONTAINERS_REGISTRIES_CONF="$work/registries.conf"
cat > "$CONTAINERS_REGISTRIES_CONF" <<TOML
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "$host"
TOML

run() { echo; printf '$'; printf ' %q' "$@"; echo; "$@"; }
run imgtool pull busybox
run imgtool pull --platform linux/arm64 multi
run imgtool images
run imgtool inspect busybox --config
run imgtool tag busybox "$host/demo/busybox:1.0"
run imgtool push "$host/demo/busybox:1.0"
if [ "$(id -u)" -eq 0 ]; then
  run imgtool run --rm busybox sh -c 'echo "hello from $(hostname), PID $$"; id; ls /'
  run imgtool run --rm -m 64m --pids-limit 50 -e GREETING=hi -w /srv -u app busybox \
    sh -c 'echo "$GREETING from $(pwd) as $(id -un)"'
  web_port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  run imgtool run -d --name demo-web -p "127.0.0.1:$web_port:80" busybox \
    sh -c 'mkdir -p /www && echo "hello from a container" > /www/index.html && exec httpd -f -p 80 -h /www'
  sleep 0.5
  run curl -s "http://127.0.0.1:$web_port/"
  run imgtool run --rm busybox wget -qO- http://demo-web/
  run imgtool network ls
  run imgtool rm -f demo-web
  run imgtool run -d --name demo-sleeper busybox sleep 30
  run imgtool ps
  run imgtool stop -t 1 demo-sleeper
  run imgtool rm demo-sleeper
  run imgtool network rm
fi
if [ "$(id -u)" -eq 0 ]; then
  echo
  echo "== build: a multi-stage example, its test stage, and a fully cached rebuild"
  run imgtool build -t demo-app:2.5 --build-arg VERSION=2.5 Containerfile.examples/multistage
  run imgtool run --rm demo-app:2.5
  run imgtool build --target test -t demo-app:test Containerfile.examples/multistage
  run imgtool run --rm demo-app:test cat /test-report
  run imgtool build -t demo-app:2.5 --build-arg VERSION=2.5 Containerfile.examples/multistage
fi
echo
echo "== layer sizes in CI: an image that grew and left waste behind"
.venv/bin/python fixtures/make_images.py busybox "$work/busybox" >/dev/null
.venv/bin/python - "$work" <<'PY'
import sys
from pathlib import Path
from fixtures import make_images
work = Path(sys.argv[1])
make_images.make_sized(work / "app-1.0")
make_images.make_sized(work / "app-1.1", grown=True)
PY
run imgtool layers busybox
run imgtool layers --remote "$host/library/busybox"
run imgtool layers "oci:$work/app-1.1" --top 3
run imgtool diff "oci:$work/app-1.0" "oci:$work/app-1.1"
run imgtool check "oci:$work/app-1.1" --max-size 100kB --max-growth 50% --baseline "oci:$work/app-1.0"
set +e
run imgtool check "oci:$work/app-1.1" --max-wasted 5kB --forbid '**/.git' --markdown -
echo "(exit status $?: a rule failed)"
set -e
run imgtool rmi "$host/demo/busybox:1.0" multi
run imgtool gc
run imgtool images
echo
echo "demo done: the store was $IMGTOOL_ROOT (now removed)"
