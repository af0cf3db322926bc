#!/bin/sh
# Installs the Debian packages scsictl needs, when they are missing, then
# checks that every tool they provide is really there. The packages and what
# each provides are listed once, in scripts/deps.txt.
#
# Usage: scripts/deps.sh [GROUP...]      default: base build test
#   GROUP  base, build, test, fuzz or ci (see scripts/deps.txt)
# As root it runs apt-get itself; otherwise it prints the apt-get line to run.
# Exits non-zero, naming the tool and its package, if anything is missing
# afterwards: a missing tool stops `make` here, not deep inside a spec.
set -eu
set -f                                # no globbing of the table's words
unset LD_PRELOAD                      # a sanitizer runtime must not reach apt or lua

table=$(dirname "$0")/deps.txt
groups=${*:-base build test}
PATH=$PATH:/usr/sbin:/sbin

for g in $groups; do
    grep -q "^$g " "$table" || { echo "deps.sh: unknown group '$g' (see $table)" >&2; exit 2; }
done

# The rows of the groups asked for: "package provides".
rows() {
    for g in $groups; do
        awk -v g="$g" '$1 == g { print $2, $3 }' "$table"
    done
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Is one `provides` entry there? (command, lua:module, pc:name, file:glob)
present() {
    case $1 in
    lua:*) command -v lua5.4 >/dev/null && lua5.4 -e "require('${1#lua:}')" 2>/dev/null ;;
    pc:*) command -v pkg-config >/dev/null && pkg-config --exists "${1#pc:}" ;;
    file:*) (set +f; for f in ${1#file:}; do [ -e "$f" ] && exit 0; done; exit 1) ;;
    *) command -v "$1" >/dev/null ;;
    esac
}

missing=""
for p in $(rows | awk '{ print $1 }'); do
    installed "$p" || case " $missing " in *" $p "*) ;; *) missing="$missing $p" ;; esac
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "scsictl needs these Debian packages:$missing" >&2
        echo "install them with: sudo apt-get install -y --no-install-recommends$missing" >&2
        exit 1
    fi
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Installed is not enough (a package can be half-configured, a tool diverted).
absent=$(rows | while read -r p what; do
    for w in $(echo "$what" | tr , ' '); do
        present "$w" || echo "deps.sh: '${w#*:}' is missing: install the Debian package $p"
    done
done)
[ -z "$absent" ] || { echo "$absent" >&2; exit 1; }
