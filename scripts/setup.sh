#!/usr/bin/env bash
# Set up everything the project needs on a fresh Debian 12, idempotently:
# Debian's QGIS 3.22 + GDAL stack, then .venv/ from /usr/bin/python3 with the system
# site-packages (so PyQGIS, GDAL and rasterio share one GDAL) and pinned pip packages.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qgis python3-qgis qgis-providers python3-rasterio python3-venv
              xvfb xauth imagemagick x11-apps pyqt5-dev-tools zip)
STAMP=.venv/.setup-stamp

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi

# Re-install only when the pins or the package metadata changed.
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    echo "setup: installing pinned Python packages into .venv"
    .venv/bin/pip install -q --no-cache-dir -r requirements.txt
    .venv/bin/pip install -q --no-cache-dir --no-deps --no-build-isolation -e .
    echo "$want" > "$STAMP"
fi
