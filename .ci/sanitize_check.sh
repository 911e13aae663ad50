#!/usr/bin/env bash
# Sanitizer check, run by .ci/run before the normal install (usage: bash .ci/sanitize_check.sh [SEED]).
#
# Installs this clone into the active environment with rbm_cuda._emu (the CUDA kernel source built by
# the host compiler) under AddressSanitizer and UBSan, and no CUDA module; then runs `pytest -m
# emulation` with the emulated launches visiting blocks and threads in a shuffled order (SEED,
# default 1).  An out-of-bounds access or undefined behaviour in kernel code aborts the run, and so
# does a kernel whose result depends on the order of its threads.  It stands in for
# compute-sanitizer, which needs a GPU.  Install the normal build afterwards (.ci/run does).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seed=${1:-1}
logs=$(mktemp -d "${TMPDIR:-/tmp}/rbm_cuda_sanitize.XXXXXX")
trap 'rm -rf "$logs"' EXIT
start=$(date +%s)

echo "== sanitize_check: pip install '.[test]' with RBM_CUDA_SANITIZE=ON (no CUDA module)"
# A build folder of its own: the normal build's folder (build/) keeps its settings and objects.
if ! RBM_CUDA_SANITIZE=1 RBM_CUDA_DISABLE_CUDA=1 python -m pip install --quiet "$repo[test]" \
    -C build-dir="$logs/build" > "$logs/pip.log" 2>&1; then
  cat "$logs/pip.log"; echo "sanitize_check: FAILED (install)"; exit 1
fi

# The ASan runtime must be loaded before Python; libstdc++ with it, so that its C++ exception
# interceptor finds the real __cxa_throw (Python itself does not link libstdc++).
cxx=${CXX:-c++}  # the compiler CMake picks by default, so the runtime matches the build
preload="$($cxx -print-file-name=libasan.so) $($cxx -print-file-name=libstdc++.so)"
# (from another folder: in the clone, `python -c` would import the unbuilt source tree)
(cd "$logs" && LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0 \
  python -c "from rbm_cuda import _emu; assert _emu.SANITIZED, 'the installed _emu is not sanitized'")
echo "== sanitize_check: pytest -m emulation --emu-schedule shuffled:$seed under ASan and UBSan"
cd "$repo"
# Reports go to files: a process that aborts inside a test would lose them to pytest's capture.
if ! LD_PRELOAD="$preload" ASAN_OPTIONS="detect_leaks=0:log_path=$logs/asan" \
     UBSAN_OPTIONS="print_stacktrace=1:log_path=$logs/ubsan" RBM_CUDA_DATA="${RBM_CUDA_DATA:-../shared/data}" \
     pytest -q -p no:cacheprovider -m emulation --emu-schedule "shuffled:$seed"; then
  cat "$logs"/asan* "$logs"/ubsan* 2>/dev/null || true
  echo "sanitize_check: FAILED"
  exit 1
fi
echo "== sanitize_check: passed in $(( $(date +%s) - start )) s"
