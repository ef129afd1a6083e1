#!/usr/bin/env bash
# The Cannon (annieslasso 0.2.96) needs numpy < 2, so it lives in its own virtual
# environment, driven as a subprocess by benchmarks/network_bench.py. Never a project pin.
#   bash benchmarks/cannon_env.sh   # creates .venv-cannon
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv-cannon/bin/python ] || ! .venv-cannon/bin/python -c "import thecannon" 2>/dev/null; then
  python3.11 -m venv .venv-cannon
  .venv-cannon/bin/pip install -q numpy==1.26.4 scipy==1.11.4 six==1.17.0 annieslasso==0.2.96
fi
.venv-cannon/bin/python -c "import numpy, thecannon; print('The Cannon', thecannon.__version__, 'with numpy', numpy.__version__)"
