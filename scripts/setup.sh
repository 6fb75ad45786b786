#!/usr/bin/env bash
# Installs what building and testing hark needs on a Debian/Ubuntu machine, skipping whatever
# is already there: pkg-config and the ALSA headers (cpal), a C compiler, PulseAudio and
# ALSA's pulse plugin (the capture tests), mosquitto and its clients (the MQTT sink tests),
# python3 with numpy (the frontend's reference check) with onnx and onnxruntime (the second
# ONNX client). Rust itself comes from rustup (https://rustup.rs).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install Rust with rustup (https://rustup.rs), then rerun" >&2
    exit 1
fi

need_apt=()
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
pkg-config --exists alsa 2>/dev/null || need_apt+=(libasound2-dev)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
# The capture tests start a real sound server (PulseAudio with a null sink) and play into it.
command -v pulseaudio >/dev/null 2>&1 || need_apt+=(pulseaudio)
command -v paplay >/dev/null 2>&1 || need_apt+=(pulseaudio-utils)
dpkg -s libasound2-plugins >/dev/null 2>&1 || need_apt+=(libasound2-plugins)
# The sink tests start a real MQTT broker and read it back with mosquitto_sub.
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
if [ ${#need_apt[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: please install: ${need_apt[*]} (no apt-get on this machine)" >&2
        exit 1
    fi
    echo "setup: installing ${need_apt[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# numpy: the frontend's reference; onnx and onnxruntime: the second ONNX client.
if ! python3 -c 'import numpy, onnx, onnxruntime' 2>/dev/null; then
    echo "setup: installing numpy, onnx, onnxruntime (pip)" >&2
    python3 -m pip install --quiet numpy onnx onnxruntime 2>/dev/null \
        || python3 -m pip install --quiet --user --break-system-packages numpy onnx onnxruntime
fi
