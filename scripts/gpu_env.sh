# Sourced by scripts/gpu_checks.sh and scripts/gpu_pretrain.sh: the Python to use and its path.
# On the device machine: the image's python3, plus the wheels carried in .whl/ (scripts/gpu_wheels.sh)
# installed to /tmp/site; with SMOKE set and no $PYTHON, this checkout's .venv (the CPU check).
PY=${PYTHON:-python3}
[[ -n "${SMOKE:-}" && -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=.venv/bin/python
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
