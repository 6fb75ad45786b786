#!/usr/bin/env bash
# Rebuilds hark's training data set from the Debian packages it came from.
#
#   scripts/fetch-data.sh [OUT_DIR] [SOURCES_TSV]
#
# OUT_DIR defaults to data/real, SOURCES_TSV to data/sources.tsv (columns: file, class,
# package, version, license, source_path, seconds, realism). For every package it runs
# `apt-get download PACKAGE=VERSION` (falling back, with a warning, to the version the
# archive has), unpacks it with `dpkg -x`, and converts each listed file to 16 kHz mono
# 16-bit FLAC at OUT_DIR/FILE with sox. Files already present are kept. Needs apt-get, dpkg
# and sox with its format plugins (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-data/real}
tsv=${2:-data/sources.tsv}
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v sox >/dev/null || ! sox -h 2>/dev/null | grep -q vorbis; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq sox libsox-fmt-all >/dev/null
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$tsv" "$out/sources.tsv"
missing=0
# One package at a time: download, unpack, convert its files, clean up.
for pv in $(awk -F'\t' 'NR > 1 { print $3 "=" $4 }' "$tsv" | sort -u); do
    pkg=${pv%%=*}; ver=${pv#*=}
    todo=$(awk -F'\t' -v p="$pkg" -v o="$out" 'NR > 1 && $3 == p { f = o "/" $1; if ((getline line < f) < 0) print $1 }' "$tsv" | wc -l)
    if [ "$todo" -eq 0 ]; then echo "fetch-data: $pkg: all files present"; continue; fi
    echo "fetch-data: $pkg $ver ($todo files)"
    rm -rf "$work/pkg" "$work"/*.deb; mkdir -p "$work/pkg"
    if ! (cd "$work" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1); then
        echo "fetch-data: warning: $pkg version $ver is not in the archive; taking the available one" >&2
        if ! (cd "$work" && apt-get download -q "$pkg" >/dev/null 2>&1); then
            echo "fetch-data: error: cannot download $pkg (apt-get update first?)" >&2
            missing=$((missing + todo)); continue
        fi
    fi
    dpkg -x "$work"/*.deb "$work/pkg"
    while IFS=$'\t' read -r file class package version license src seconds realism; do
        [ "$package" = "$pkg" ] || continue
        dest="$out/$file"
        [ -f "$dest" ] && continue
        mkdir -p "$(dirname "$dest")"
        if [ ! -f "$work/pkg/$src" ]; then
            echo "fetch-data: warning: $pkg has no $src" >&2; missing=$((missing + 1)); continue
        fi
        sox -q "$work/pkg/$src" -r 16000 -c 1 -b 16 "$dest" || { echo "fetch-data: warning: cannot convert $src" >&2; missing=$((missing + 1)); }
    done < <(tail -n +2 "$tsv")
done
echo "fetch-data: done into $out ($missing files missing)"
