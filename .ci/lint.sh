#!/usr/bin/env bash
# Lint and type checks over edgeface/ and convert/: ruff (rules in pyproject's [tool.ruff.lint]), then mypy
# ([tool.mypy]). Called by `make lint`, which `make test` runs first. Exit 1 when either finds something.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
VENV=${VENV:-.venv}
status=0
for tool in ruff mypy; do
  [ -x "$VENV/bin/$tool" ] || { echo "lint: $tool is not in $VENV: run make setup-dev (it installs the dev extra)" >&2; exit 2; }
done

echo "lint: ruff check edgeface convert" >&2
"$VENV/bin/ruff" check --quiet edgeface convert || {
  echo "lint: ruff found the problems above (rules: [tool.ruff.lint] in pyproject.toml; 'ruff check --fix' applies the safe fixes)" >&2
  status=1
}

# convert/ installs as edgeface.convert (pyproject's package-dir), a mapping mypy cannot follow from the source
# tree: check a tree of links laid out as installed, and print paths as they are in the repository.
tree=.mypy_cache/tree
rm -rf "$tree" && mkdir -p "$tree/edgeface"
for entry in edgeface/*; do
  case $entry in */__pycache__) ;; *) ln -s "$PWD/$entry" "$tree/$entry" ;; esac
done
ln -s "$PWD/convert" "$tree/edgeface/convert"
echo "lint: mypy edgeface (convert/ as edgeface.convert)" >&2
mypy=$(cd "$VENV/bin" && pwd)/mypy
output=$(cd "$tree" && "$mypy" --config-file ../../pyproject.toml --cache-dir .. -p edgeface 2>&1)
code=$?
sed -e "s#^$PWD/$tree/edgeface/convert/#convert/#" -e "s#^edgeface/convert/#convert/#" <<<"$output"
if [ $code -ne 0 ]; then
  echo "lint: mypy found the type errors above (settings: [tool.mypy] in pyproject.toml)" >&2
  status=1
fi
exit $status
