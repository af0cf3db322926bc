#!/bin/sh
# Prints scsictl's version: the SCSICTL_VERSION line of core/include/scsictl.h,
# the one place it is written (CMakeLists.txt reads the same line).
# Usage: scripts/version.sh [SOURCE-DIR]
set -eu
src=${1:-$(dirname "$0")/..}
v=$(sed -n 's/^#define SCSICTL_VERSION "\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\)"$/\1/p' "$src/core/include/scsictl.h")
[ -n "$v" ] || { echo "version.sh: no '#define SCSICTL_VERSION \"X.Y.Z\"' in $src/core/include/scsictl.h" >&2; exit 1; }
echo "$v"
