#!/usr/bin/env bash
# Debian packages the stack needs at run time; installs only what is missing (idempotent).
#   libusb-1.0-0           pyrealsense2 fails to import without it
#   libegl1 libgl1 libegl-mesa0 libgles2   offscreen MuJoCo rendering (MUJOCO_GL=egl, Mesa llvmpipe)
set -euo pipefail
need=()
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
have_lib libusb-1.0.so.0 || need+=(libusb-1.0-0)
have_lib libEGL.so.1 || need+=(libegl1)
have_lib libGL.so.1 || need+=(libgl1)
have_lib libEGL_mesa.so.0 || need+=(libegl-mesa0)
have_lib libGLESv2.so.2 || need+=(libgles2)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "system-deps: installing ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "system-deps: need root (or sudo) to install ${need[*]}"; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
