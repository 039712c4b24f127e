# Shared by test.sh and demo.sh: install Debian packages that are missing, and imgtool in .venv.

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

install_debian() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if ! "${PYTHON:-python3}" -c "import venv, ensurepip" 2>/dev/null; then
    missing+=(python3-venv)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

install_imgtool() {
  local extra="${1:-}"
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
  echo "== installing imgtool into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra:+[$extra]}"
  # byte-compile now: an editable install does not, and with PYTHONDONTWRITEBYTECODE set
  # every start would compile imgtool again (it costs `imgtool run` a third of its time)
  .venv/bin/python -m compileall -q imgtool
}
