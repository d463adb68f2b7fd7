#!/usr/bin/env bash
# Set up everything the recipe needs on a fresh machine, idempotently:
#   1. Debian packages: the offline TTS engines and sox used by the embedded corpus;
#   2. a virtual environment in .venv with the pinned Python packages;
#   3. this project itself, installed editable (pyproject.toml), so that every script imports
#      zipformer, zipformer_adapter, zipformer_lora and local from the checkout without path hacks.
# Re-running it is cheap: each step is skipped when already done.
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv_dir="${VENV_DIR:-$repo_dir/.venv}"

apt_packages=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox fortunes fortunes-min fortunes-de)

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [setup] $*"; }

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$venv_dir/.requirements.sha256"
want=$(sha256sum "$repo_dir/requirements.txt" | cut -d' ' -f1)
if [[ ! -x "$venv_dir/bin/python" ]]; then
  log "creating virtual environment $venv_dir"
  python3 -m venv "$venv_dir"
fi
if [[ ! -f "$stamp" || $(cat "$stamp") != "$want" ]]; then
  log "installing Python packages from requirements.txt (about a minute)"
  "$venv_dir/bin/pip" install -q --disable-pip-version-check -r "$repo_dir/requirements.txt" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$want" > "$stamp"
fi
# The project, editable: installed again when pyproject.toml changed, or when the environment
# imports `zipformer` from elsewhere (a moved checkout; a copy that sets PYTHONPATH is left alone).
project_stamp="$venv_dir/.project.sha256"
project_want=$(sha256sum "$repo_dir/pyproject.toml" | cut -d' ' -f1)
imported_from=$(cd / && "$venv_dir/bin/python" -c 'import zipformer; print(zipformer.__path__[0])' 2>/dev/null || true)
if [[ ! -f "$project_stamp" || $(cat "$project_stamp") != "$project_want" || $imported_from != "$repo_dir/zipformer" ]]; then
  log "installing this project (editable) into $venv_dir"
  # No build isolation: setuptools is already in the environment (tensorboard needs it), so this works offline.
  "$venv_dir/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$repo_dir"
  echo "$project_want" > "$project_stamp"
fi
log "environment ready: $venv_dir"
