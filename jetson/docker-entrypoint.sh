#!/usr/bin/env bash
# The container's entrypoint: refuse to start without the HOST's L4T release, then run the robot's loop.
#
#   docker run ... -v /etc/nv_tegra_release:/etc/host/nv_tegra_release:ro mobile-vla-runtime --bundle /bundle ...
#
# Inside the image /etc/nv_tegra_release is the base image's own file, which says what the image was built
# FROM, not what the host runs: the L4T / TensorRT check (python -m runtime.jetpack) must read the host's.
# The image points TEGRA_RELEASE at the mount; without the mount it stops here instead of guessing.
set -euo pipefail
release=${TEGRA_RELEASE:-/etc/host/nv_tegra_release}
if [[ ! -f "$release" ]]; then
  echo "error: $release not found: the host's L4T release is not mounted, and the image's own" \
       "/etc/nv_tegra_release would describe the image, not this Jetson. Add to docker run:" \
       "-v /etc/nv_tegra_release:$release:ro" >&2
  exit 2
fi
export TEGRA_RELEASE=$release
exec "${PYTHON:-python}" -m runtime.drive "$@"
