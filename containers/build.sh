#!/usr/bin/env bash
# Build armor-repro's image with podman from a Debian root filesystem (no registry needed), test it, and write
# containers/armor-<variant>.tar (docker-archive) and containers/armor-<variant>.digest (its image ID).
# Usage: containers/build.sh [cpu|cuda]     (run as root: debootstrap and podman's runc runtime need it)
# A cluster turns the archive into a SIF: apptainer build armor.sif docker-archive:containers/armor-cuda.tar
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-cpu}
case "$variant" in
  cpu) torch_pin="torch==2.13.0+cpu"; torch_index="https://download.pytorch.org/whl/cpu" ;;
  cuda) torch_pin="torch==2.13.0"; torch_index="" ;;  # PyPI's Linux torch is the CUDA build, with its CUDA libraries
  *) echo "containers/build.sh: variant must be cpu or cuda, not '$variant'" >&2; exit 2 ;;
esac
release=bookworm  # Debian 12, as the development machines (Python 3.11)
base=localhost/armor-base:$release
image=localhost/armor:$variant
podman=(podman --runtime runc)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
for tool in podman debootstrap; do
  command -v "$tool" > /dev/null || { echo "containers/build.sh needs $tool (as root: apt-get install podman runc debootstrap)" >&2; exit 2; }
done

if ! "${podman[@]}" image exists "$base"; then
  echo "== base: debootstrap $release (minbase, python3, python3-venv)"
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$release" "$rootfs" http://deb.debian.org/debian > /dev/null
  tar -C "$rootfs" -c . | "${podman[@]}" import --quiet - "$base" > /dev/null
fi

build=(--build-arg "VARIANT=$variant" --build-arg "TORCH_PIN=$torch_pin" --build-arg "TORCH_INDEX=$torch_index"
       --build-arg "SOURCE_COMMIT=$(git rev-parse HEAD 2> /dev/null || echo unknown)")
# this machine's pip settings, when it has them: a folder of local wheels (the CPU torch) and a TLS bundle. The CUDA
# variant leaves the wheels out: its pin torch==2.13.0 would also match a local 2.13.0+cpu wheel there
if [ "$variant" = cpu ] && [ -n "${PIP_FIND_LINKS:-}" ] && [ -d "$PIP_FIND_LINKS" ]; then
  build+=(--volume "$PIP_FIND_LINKS:/run/wheels:ro" --build-arg PIP_FIND_LINKS=/run/wheels)
  if compgen -G "$PIP_FIND_LINKS/torch-2.13.0+cpu-*.whl" > /dev/null; then
    build+=(--build-arg TORCH_INDEX=)
  fi
fi
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  build+=(--volume "$PIP_CERT:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi

echo "== image $image ($torch_pin)"
"${podman[@]}" build --quiet --network host "${limits[@]}" "${build[@]}" -f containers/Containerfile -t "$image" . > /dev/null
echo "== the image's own test"
"${podman[@]}" run --rm --network none "${limits[@]}" "$image"
id=$("${podman[@]}" image inspect --format '{{.Id}}' "$image")
"${podman[@]}" save --quiet --format docker-archive -o "containers/armor-$variant.tar.tmp" "$image"
mv "containers/armor-$variant.tar.tmp" "containers/armor-$variant.tar"
echo "sha256:$id" > "containers/armor-$variant.digest"
echo "== wrote containers/armor-$variant.tar ($(du -h "containers/armor-$variant.tar" | cut -f1)), image ID sha256:$id"
