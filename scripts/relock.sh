#!/usr/bin/env bash
# Re-lock the generated project: bake the defaults, run `uv lock` there (pass --upgrade to move
# every pin within pyproject.toml's ranges), export the lock for pip, and write both back into
# {{cookiecutter.project_slug}}/ with the project's name templated again.
#   bash scripts/relock.sh [uv lock args...]
# Needs cookiecutter and uv (both in requirements-dev.txt: run it in .venv, or with PATH set).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
project_dir='{{cookiecutter.project_slug}}'
name_jinja="{{ cookiecutter.project_slug.replace('_', '-') }}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cookiecutter --no-input --output-dir "$work" . project_slug=relock_bake >/dev/null
bake="$work/relock_bake"
(cd "$bake" && uv lock --quiet "$@" \
    && uv export --frozen --no-emit-project --no-hashes --no-annotate --quiet -o requirements.txt)
sed "s/^name = \"relock-bake\"\$/name = \"$name_jinja\"/" "$bake/uv.lock" >"$project_dir/uv.lock"
sed "s/relock-bake/$name_jinja/g" "$bake/requirements.txt" >"$project_dir/requirements.txt"
if grep -q 'relock.bake' "$project_dir/uv.lock" "$project_dir/requirements.txt"; then
    echo "ERROR: the bake's name is left in the lock: template it by hand" >&2
    exit 1
fi
echo "Re-locked $project_dir/uv.lock and requirements.txt; review with git diff."
