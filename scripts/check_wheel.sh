#!/usr/bin/env bash
# Build nudiff's wheel, install it into a fresh virtual environment (no editable install) and
# use it the way a new user would, from an empty folder outside the source tree: --version,
# --help (which must import no torch), a tiny train and a sample.
#   bash scripts/check_wheel.sh [PYTHON_WITH_PIP]
set -euo pipefail
py=${1:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$py" -m pip wheel -q --no-deps -w "$work/dist" "$root" 2> >(grep -v "^WARNING: Location" >&2)
python3 -m venv "$work/venv"
pip="$work/venv/bin/pip"
"$pip" install -q torch==2.13.0 2> >(grep -v "^WARNING: Location" >&2)
"$pip" install -q "$work"/dist/nudiff-*.whl 2> >(grep -v "^WARNING: Location" >&2)

cd "$work"
export PATH="$work/venv/bin:$PATH"
nudiff --version
python -c "
import subprocess, time
began = time.perf_counter()
subprocess.run(['nudiff', '--help'], check=True, stdout=subprocess.DEVNULL)
print(f'nudiff --help answered in {time.perf_counter() - began:.2f} s')
"
python -c "
import sys
from nudiff.cli import build_parser
build_parser().format_help()
heavy = sorted({'torch', 'numpy', 'pydantic', 'matplotlib'} & set(sys.modules))
assert not heavy, f'building the parser imported {heavy}'
import nudiff, nudiff.bench.quickstart
assert 'site-packages' in nudiff.__file__, nudiff.__file__
print('parser: no torch imported; nudiff from', nudiff.__file__)
"
nudiff bench quickstart --help > /dev/null
nudiff train quickstart --out run --device cpu --set train.steps=2 --set train.batch_size=8 \
    --set train.tensorboard=false --set train.sample_every=0
nudiff sample run --n-samples 4 --steps 3 --out samples.png --device cpu
test -s samples.png && test -s run/config.yaml
echo "wheel check passed: $(ls dist)"
