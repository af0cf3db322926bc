#!/bin/sh
# `make dist`: the release files of the version in core/include/scsictl.h
# (scripts/version.sh), into OUTDIR:
#   scsictl-<v>.tar.gz         `git archive` of a commit (HEAD by default),
#                              everything under scsictl-<v>/
#   scsictl-<v>-1.rockspec     rockspec/scsictl-dev-1.rockspec with its version
#                              and source replaced (the dev rockspec is the
#                              template: the two cannot drift apart)
#   scsictl-<v>-1.src.rock     `luarocks pack` of that rockspec (the tarball
#                              inside), when the source is a local file
#
# Usage: scripts/dist.sh OUTDIR [URL]
#   URL   where the tarball will be downloaded from: source.url of the
#         rockspec. Default file://OUTDIR/scsictl-<v>.tar.gz (an offline
#         install from this machine). A real release passes the address it
#         uploads the tarball to (docs/release.md).
# Environment: SCSICTL_DIST_REF  the commit to archive (default HEAD).
# Only committed work is in the tarball.
set -eu
unset LD_PRELOAD
out=${1:?usage: dist.sh OUTDIR [URL]}
src=$(cd "$(dirname "$0")/.." && pwd)
ref=${SCSICTL_DIST_REF:-HEAD}
die() { echo "dist: $*" >&2; exit 1; }

command -v git >/dev/null || die "needs git (Debian package git)"
command -v lua5.4 >/dev/null || die "needs lua5.4 (Debian package lua5.4)"
git -C "$src" rev-parse --verify -q "$ref^{commit}" >/dev/null \
    || die "$src is not a git checkout with a commit $ref (the tarball is a git archive)"

v=$(sh "$src/scripts/version.sh" "$src")
# The version of the commit archived, which may differ from the work tree's.
vref=$(git -C "$src" show "$ref:core/include/scsictl.h" \
       | sed -n 's/^#define SCSICTL_VERSION "\([0-9.]*\)"$/\1/p')
[ "$v" = "$vref" ] || die "$ref has version '$vref', the work tree $v: commit the version first"

mkdir -p "$out"
out=$(cd "$out" && pwd)
name=scsictl-$v
tarball=$out/$name.tar.gz
rockspec=$out/$name-1.rockspec
url=${2:-file://$tarball}

git -C "$src" archive --format=tar.gz --prefix="$name/" -o "$tarball" "$ref"
md5=$(md5sum "$tarball" | cut -d ' ' -f 1)

# The dev rockspec with `version` and the `source = { ... }` block replaced.
git -C "$src" show "$ref:rockspec/scsictl-dev-1.rockspec" | awk -v v="$v-1" -v url="$url" \
    -v dir="$name" -v md5="$md5" -v ref="$(git -C "$src" rev-parse --short "$ref")" '
    NR == 1 { print "-- Made by `make dist` (scripts/dist.sh) from rockspec/scsictl-dev-1.rockspec at " ref "." }
    /^version = "dev-1"$/ { print "version = \"" v "\""; nv++; next }
    /^source = \{$/ { insrc = 1; print; print "   url = \"" url "\","; print "   dir = \"" dir "\",";
                      print "   md5 = \"" md5 "\","; ns++; next }
    insrc && /^\}$/ { insrc = 0; print; next }
    insrc { next }
    { print }
    END { if (nv != 1 || ns != 1) { print "dist: the dev rockspec has no `version = \"dev-1\"` or `source = {` line" > "/dev/stderr"; exit 1 } }
' > "$rockspec.tmp"
# It loads as Lua and says what it should.
lua5.4 - "$rockspec.tmp" "$v-1" "$url" <<'EOF' || die "the generated rockspec is wrong"
local file, version, url = ...
local t = {}
assert(loadfile(file, "t", t))()
assert(t.package == "scsictl", "package")
assert(t.version == version, "version " .. tostring(t.version))
assert(t.source.url == url, "source.url " .. tostring(t.source.url))
assert(t.build and t.build.type == "cmake", "build")
EOF
mv "$rockspec.tmp" "$rockspec"

echo "dist: $tarball ($(git -C "$src" rev-parse --short "$ref"), md5 $md5)"
echo "dist: $rockspec (source.url $url)"
case $url in
file://*)
    if command -v luarocks >/dev/null; then
        (cd "$out" && luarocks --lua-version 5.4 pack "$rockspec" >"$out/pack.log" 2>&1) \
            || { cat "$out/pack.log" >&2; die "luarocks pack failed"; }
        echo "dist: $out/$name-1.src.rock"
    fi ;;
esac
