#!/usr/bin/env bash
# Create (or update) the project's virtual environment and install unlearnbench into it.
#   bash envs/install.sh            -> .venv/ at the repository root
#   VENV=/path/to/venv bash envs/install.sh
# torch: if the venv already has a torch (e.g. a CUDA build a GPU user installed first), it is
# kept; otherwise torch==2.13.0 is added to the SAME pip call as the pinned requirements, so the
# resolver can never pull a multi-GB CUDA build in through opacus' `torch>=2.6`.
# Override the choice with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0" to force the pin).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
python=${PYTHON:-python3}

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "install.sh: Python >= 3.11 required (Snakemake 9, transformers 5); set PYTHON=python3.11" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"

if [ -z "${TORCH_SPEC+x}" ]; then
    if "$venv/bin/python" -c 'import torch' 2>/dev/null; then
        TORCH_SPEC=""
        echo "install.sh: keeping installed torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
    else
        TORCH_SPEC="torch==2.13.0"
    fi
fi

# Quiet, and without pip's per-index warnings: the log of a fresh install stays readable.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    $TORCH_SPEC -r "$root/envs/requirements.txt" -e "$root" 2> >(grep -v "is ignored: it is neither" >&2)
"$venv/bin/python" -m pip check
echo "install.sh: ready: $venv"
