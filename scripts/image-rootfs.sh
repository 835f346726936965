#!/usr/bin/env bash
# The root filesystem of Aerugo's image, from scratch: the given binaries under /usr/local/bin,
# exactly the shared libraries they load (as ldd resolves them, at the same paths, the dynamic
# loader included), Debian's CA bundle, a passwd/group entry for uid 65532 and a /tmp.
# Used by the Dockerfile's build stage and by `./scripts/dev.sh image`, so both images hold
# the same files.
#
#   scripts/image-rootfs.sh OUT BINARY...
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 OUT BINARY..." >&2; exit 2; }
out=$1
shift
[ ! -e "$out" ] || { echo "$out exists: give a new directory" >&2; exit 2; }
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp"
chmod 1777 "$out/tmp"

for bin in "$@"; do
  install -m 0755 "$bin" "$out/usr/local/bin/"
  # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)";
  # a library ldd cannot find ("=> not found") fails the build instead of the container.
  if ldd "$bin" | grep -q 'not found'; then
    echo "$bin: a shared library is missing:" >&2
    ldd "$bin" >&2
    exit 1
  fi
  ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
    while read -r lib; do
      mkdir -p "$out$(dirname "$lib")"
      cp -L "$lib" "$out$lib"
    done
done

ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "$ca is missing (Debian's ca-certificates package)" >&2; exit 1; }
cp -L "$ca" "$out$ca"

cat >"$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$out/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
# glibc resolves names with its built-in files and dns modules; /etc/hosts first.
echo 'hosts: files dns' >"$out/etc/nsswitch.conf"
