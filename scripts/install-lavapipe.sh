#!/usr/bin/env bash
# Installs Mesa's lavapipe (a Vulkan device made of CPU) from Debian's backports suite, so that
# LiteRT's GPU accelerator can run a .tflite file on a machine without a GPU.
#
# Why backports: Debian 12's own Mesa 22 lacks a Vulkan feature LiteRT's WebGPU needs
# ("No adapters found"); Mesa 25 works. The backports source is the machine's own Debian
# source with another suite, so no address is written here. Idempotent; needs root.
# Afterwards: VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.json (tflite_export sets it
# for its GPU subprocess when unset).
set -euo pipefail

ICD=/usr/share/vulkan/icd.d/lvp_icd.json
MIN_MAJOR=25

installed_major() {
    dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | sed -E 's/^([0-9]+:)?([0-9]+).*/\2/'
}

major=$(installed_major || true)
if [[ -f $ICD && -n $major && $major -ge $MIN_MAJOR ]]; then
    echo "install-lavapipe: mesa-vulkan-drivers $major.x already installed ($ICD)"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install-lavapipe: needs root to install packages; run: sudo $0" >&2
    exit 1
fi
. /etc/os-release
if [[ ${ID:-} != debian || -z ${VERSION_CODENAME:-} ]]; then
    echo "install-lavapipe: expected Debian (found ID=${ID:-?}); install Mesa >= $MIN_MAJOR's lavapipe with your package manager" >&2
    exit 1
fi
suite="$VERSION_CODENAME-backports"
source_file=/etc/apt/sources.list.d/debian.sources
target=/etc/apt/sources.list.d/kstruct-backports.sources
if ! grep -rqs "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    if [[ ! -f $source_file ]]; then
        echo "install-lavapipe: no $source_file to derive the $suite source from; add $suite to apt's sources" >&2
        exit 1
    fi
    # The first stanza is the main archive; keep its URIs and keyring, swap the suite.
    awk 'BEGIN{RS="";ORS="\n"} NR==1' "$source_file" | sed "s/^Suites:.*/Suites: $suite/" > "$target"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends -t "$suite" mesa-vulkan-drivers libvulkan1 >/dev/null
major=$(installed_major)
if [[ ! -f $ICD || $major -lt $MIN_MAJOR ]]; then
    echo "install-lavapipe: installed mesa-vulkan-drivers $major.x but need >= $MIN_MAJOR with $ICD" >&2
    exit 1
fi
echo "install-lavapipe: mesa-vulkan-drivers $major.x installed ($ICD)"
