#!/usr/bin/env bash
# Writes the local secrets deploy/compose.yaml mounts (deploy/secrets/, git-ignored).
# Existing files are kept: replacing the operator token locks out CLIs that hold the old one.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
token="$dir/operator-token"
if [[ ! -s "$token" ]]; then
  umask 077
  printf 'pgo_%s\n' "$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" > "$token"
  # Compose bind-mounts file secrets with the host file's owner and mode, and the guard runs
  # as uid 10001: hand the file to that uid when we may, else make it world-readable (a
  # single-user development machine only) so the container can read it at all.
  if chown 10001:10001 "$token" 2>/dev/null; then
    chmod 0400 "$token"
  else
    chmod 0644 "$token"
    echo "note: $token is world-readable so that uid 10001 in the container can read it" >&2
  fi
  echo "wrote $token"
else
  echo "kept $token"
fi
