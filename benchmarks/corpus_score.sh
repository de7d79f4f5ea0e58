#!/bin/sh
# Reproduce the classifier's accuracy on the shared labelled corpus (docs/accuracy.md).
#   benchmarks/corpus_score.sh [CORPUS_DIR]
# Runs `bouncekeeper classify --jsonl` over every email from inside the corpus folder (so each "file"
# matches labels.jsonl), scores it with CORPUS_DIR/score.py, then scores the two halves of a fixed
# split (sha1 of the file name, even/odd) to show how evenly the rules carry across files, and finally
# the per-family and leave-one-family-out figures (what they measure: benchmarks/generalisation.py).
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${1:-$HERE/../shared/corpus}
CORPUS=$(cd "$CORPUS" && pwd)
PY=${PYTHON:-$HERE/.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cd "$CORPUS"
# shellcheck disable=SC2046  # the file list is meant to be split into words
PYTHONPATH="$HERE/milter" "$PY" -m bouncekeeper.cli classify --jsonl $(find emails -name '*.eml' | sort) > "$OUT/out.jsonl"
"$PY" score.py "$OUT/out.jsonl"
"$PY" - "$OUT/split.json" <<'PYEOF'
import hashlib, json, sys
files = [json.loads(line)["file"] for line in open("labels.jsonl")]
half = lambda f: int(hashlib.sha1(f.encode()).hexdigest(), 16) % 2
json.dump({"dev": [f for f in files if half(f) == 0], "holdout": [f for f in files if half(f) == 1]}, open(sys.argv[1], "w"))
PYEOF
for part in dev holdout; do
  echo "--- split half: $part"
  "$PY" score.py "$OUT/out.jsonl" --split "$OUT/split.json" --part "$part" | awk "NR==1"
done
echo "--- generalisation: per MTA family, and leave-one-family-out (benchmarks/generalisation.py)"
"$PY" "$HERE/benchmarks/generalisation.py" "$CORPUS"
echo "(output in $OUT)"
