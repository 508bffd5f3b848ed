#!/usr/bin/env bash
# A device call carries the tracked files too, and with them (the shipped adapter and the candidates, about 59 MB)
# a half of the base model (47 MB) is over the 64 MiB a call may carry. Before the calls:
#   bash training/gpu/slim.sh out    # moves every tracked file over 1 MB to .device/hold/ (ignored, not carried)
# and after them, always:
#   bash training/gpu/slim.sh back   # puts them back; git status must then be clean of deletions
set -euo pipefail
hold=.device/hold
case "${1:-}" in
  out)
    [ -e "$hold" ] && { echo "$hold exists: run '$0 back' first" >&2; exit 1; }
    git ls-files -z | while IFS= read -r -d '' f; do
      if [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt 1000000 ]; then
        mkdir -p "$hold/$(dirname "$f")" && mv "$f" "$hold/$f" && echo "held $f"
      fi
    done ;;
  back)
    [ -d "$hold" ] || { echo "nothing held" >&2; exit 1; }
    (cd "$hold" && find . -type f -print0) | while IFS= read -r -d '' f; do
      mkdir -p "$(dirname "$f")" && mv "$hold/$f" "$f" && echo "back ${f#./}"
    done
    rm -rf "$hold"
    git diff --quiet --diff-filter=D || { echo "tracked files are still missing:" >&2; git diff --name-only --diff-filter=D >&2; exit 1; } ;;
  *) echo "usage: $0 out|back" >&2; exit 2 ;;
esac
