#!/usr/bin/env bash
# Build the gate image for tests, without a registry (docs/design.md section 6).
#
# 1. A stand-in for the vLLM base image: a minimal Debian with python3, pip and
#    the gate's pure-Python dependencies, made by debootstrap and imported with
#    `podman import`. The tarball is cached under .cache/ so reruns are fast.
# 2. `podman build --isolation=chroot` of the real Dockerfile with
#    BASE_IMAGE pointing at the stand-in.
#
# The test image carries no vLLM: the container test runs `parity-gate action`
# on a precomputed result (INPUT_RESULT_DIR).
#
# Usage: scripts/build-test-image.sh [TAG]   (default localhost/parity-gate:test)
# Env:   PARITY_GATE_CACHE (default .cache/container), DEBIAN_MIRROR, DEBIAN_SUITE,
#        PARITY_GATE_IIDFILE (a file to write the built image's ID to: the ID this
#        build made, not whatever the tag names by the time a test reads it)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${1:-localhost/parity-gate:test}"
cache="${PARITY_GATE_CACHE:-$root/.cache/container}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Bump standin_version when what the stand-in carries changes: the cached tarball
# and the imported base image are both named by it, so neither is reused stale.
standin_version=3
base_tag="localhost/parity-gate-standin:$suite-v$standin_version"
tarball="$cache/standin-$suite-v$standin_version.tar"
# What the stand-in carries: what the vLLM image carries that the gate needs.
packages="python3,python3-pip,python3-venv,python3-setuptools,python3-wheel,python3-yaml,python3-jinja2,python3-requests,python3-numpy,python3-packaging,ca-certificates"

for tool in podman buildah debootstrap; do
  command -v "$tool" >/dev/null || { echo "build-test-image: $tool not found (apt-get install -y podman buildah debootstrap)" >&2; exit 3; }
done
mkdir -p "$cache"
t0=$SECONDS

if [[ ! -s "$tarball" ]]; then
  rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  echo "build-test-image: debootstrap $suite (minbase + python3) into $rootfs" >&2
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 3; }
  # Like the vLLM image, let pip install into the system Python (PEP 668 marker off).
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  # pydantic 2 (the vLLM image carries it; Debian's python3-pydantic is 1.x): wheels
  # for the stand-in's own Python, fetched by the host's pip, so the chroot needs no network.
  pyver="$(ls -d "$rootfs"/usr/lib/python3.* | head -1 | sed 's/.*python//')"
  python3 -m pip install --quiet --no-cache-dir --target "$rootfs/usr/local/lib/python$pyver/dist-packages" \
    --python-version "$pyver" --platform manylinux2014_x86_64 --only-binary=:all: --implementation cp \
    "pydantic>=2,<3" >"$cache/pip-standin.log" 2>&1 \
    || { tail -20 "$cache/pip-standin.log" >&2; exit 3; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"; trap - EXIT
  echo "build-test-image: stand-in tarball ready after $((SECONDS - t0)) s" >&2
fi

if ! podman image exists "$base_tag"; then
  podman import --quiet "$tarball" "$base_tag" >/dev/null
  echo "build-test-image: imported $base_tag after $((SECONDS - t0)) s" >&2
fi

t1=$SECONDS
iid=()
[[ -z "${PARITY_GATE_IIDFILE:-}" ]] || iid=(--iidfile "$PARITY_GATE_IIDFILE")
podman build --isolation=chroot --quiet "${iid[@]}" \
  --build-arg BASE_IMAGE="$base_tag" --build-arg VLLM_VERSION=standin \
  -t "$tag" -f "$root/Dockerfile" "$root" >/dev/null
echo "build-test-image: built $tag in $((SECONDS - t1)) s (total $((SECONDS - t0)) s)" >&2
echo "$tag"
