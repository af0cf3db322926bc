#!/bin/sh
# Makes a read-only layer that the Linux guest opens through dm-verity: an
# ext4 image followed, in the same file, by its hash tree (veritysetup's
# format: a verity superblock at the end of the file system, the tree after
# it), so the layer travels as one disk and mounts with
#   mount = { read_only = true, verity = { root_hash = <ROOT_HASH> } }
# (hash_offset 0: the guest finds the tree right after the file system, whose
# size its superblock gives).
#
# Usage: scripts/make-verity-layer.sh <image.ext4>
#        scripts/make-verity-layer.sh <directory> <image> [size-MiB]
#   An ext4 image gets its tree appended in place. A directory becomes
#   <image> first (mkfs.ext4 -d, 4 KiB blocks, size-MiB default 16); the
#   image is never mounted on the host.
# Prints (shell syntax, like guest.env):
#   ROOT_HASH=<64 hex digits>   the sha256 root hash: mount.verity.root_hash
#   HASH_OFFSET=<bytes>         where the tree starts: the file system's size
# Needs veritysetup (Debian's cryptsetup-bin) and e2fsprogs (scripts/deps.txt).
set -eu

die() { echo "make-verity-layer: $*" >&2; exit 1; }
for tool in veritysetup mkfs.ext4 dumpe2fs; do
    PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null \
        || die "needs '$tool' (veritysetup: cryptsetup-bin; mkfs.ext4, dumpe2fs: e2fsprogs)"
done
PATH=$PATH:/usr/sbin:/sbin

[ $# -ge 1 ] || die "usage: $0 <image.ext4> | <directory> <image> [size-MiB]"
if [ -d "$1" ]; then
    [ $# -ge 2 ] || die "a directory needs the image to make: $0 $1 <image> [size-MiB]"
    img=$2
    mkfs.ext4 -q -F -b 4096 -d "$1" "$img" "${3:-16}M" >/dev/null || die "mkfs.ext4 -d $1 $img failed"
else
    img=$1
    [ -f "$img" ] || die "$img is neither an ext4 image nor a directory"
fi

# The file system's size from its superblock: the tree goes right after it,
# where the guest looks with hash_offset 0.
info=$(dumpe2fs -h "$img" 2>/dev/null) || die "$img holds no ext2/3/4 file system"
blocks=$(printf '%s\n' "$info" | sed -n 's/^Block count: *//p')
bsize=$(printf '%s\n' "$info" | sed -n 's/^Block size: *//p')
[ -n "$blocks" ] && [ -n "$bsize" ] || die "cannot read the block count and size of $img"
size=$((blocks * bsize))
# dm-verity hashes data blocks of one size: 4 KiB when the file system is a
# whole number of them, else the file system's own block size.
dbs=4096
[ $((size % 4096)) -eq 0 ] || dbs=$bsize

out=$(veritysetup format "$img" "$img" --hash-offset="$size" --data-block-size="$dbs" \
        --hash-block-size=4096 --data-blocks=$((size / dbs)) --hash=sha256) \
    || die "veritysetup format of $img failed"
root=$(printf '%s\n' "$out" | sed -n 's/^Root hash:[[:space:]]*//p')
[ ${#root} -eq 64 ] || die "veritysetup printed no root hash: $out"
echo "ROOT_HASH=$root"
echo "HASH_OFFSET=$size"
