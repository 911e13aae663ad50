#!/usr/bin/env bash
# CUDA build check, run by .ci/run before the pip install (usage: bash .ci/cuda_check.sh [BUILD_DIR]).
#
# Configures and builds the extension (both _cuda and _emu) for ALL architectures with warnings as
# errors (host and device) into a scratch build directory (BUILD_DIR, default a fresh temporary one,
# removed afterwards), prints ptxas' register/stack/spill report per kernel and architecture, and
# fails when the build fails, when nvcc is not found, or when a sampling kernel (sample_hidden,
# sample_visible_softmax, sigmoid_bernoulli) spills registers to local memory.
# Environment: PYTHON (default: python), RBM_CUDA_ARCHS (default: CMakeLists' full list),
# CMAKE_BUILD_PARALLEL_LEVEL (default: number of CPUs).
set -euo pipefail

# RBM_CUDA_CHECK_LOG=FILE: skip the build and only check the ptxas report in FILE (to test the check).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python}
build=${1:-}
cleanup=0
if [[ -z "$build" ]]; then
  build=$(mktemp -d "${TMPDIR:-/tmp}/rbm_cuda_check.XXXXXX")
  cleanup=1
fi
mkdir -p "$build"
log="$build/build.log"
trap '[[ $cleanup == 1 ]] && rm -rf "$build"' EXIT
start=$(date +%s)

if [[ -n "${RBM_CUDA_CHECK_LOG:-}" ]]; then
  cp "$RBM_CUDA_CHECK_LOG" "$log"
else
archs_arg=()
[[ -n "${RBM_CUDA_ARCHS:-}" ]] && archs_arg=(-DRBM_CUDA_ARCHS="$RBM_CUDA_ARCHS")
echo "== cuda_check: configure ($build)"
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DRBM_CUDA_WERROR=ON -DRBM_CUDA_DISABLE_CUDA=OFF \
  "${archs_arg[@]}" -DPython_EXECUTABLE="$(command -v "$python")" >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; echo "cuda_check: FAILED (configure)"; exit 1; }
status=$(grep -o 'rbm_cuda: built with.*\|rbm_cuda: built without.*' "$build/configure.log" || true)
echo "$status"
if [[ "$status" != *"built with CUDA"* ]]; then
  echo "cuda_check: FAILED: nvcc was not found (or CUDA was disabled); this check needs the CUDA toolkit"
  exit 1
fi

echo "== cuda_check: build (warnings are errors)"
# ptxas writes its report on nvcc's stderr; keep all of it in the log
if ! cmake --build "$build" --parallel "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" >"$log" 2>&1; then
  grep -v '^ptxas info\|^    [0-9]* bytes stack' "$log" | tail -60
  echo "cuda_check: FAILED (build)"
  exit 1
fi

fi

echo "== cuda_check: ptxas report"
"$python" - "$log" <<'PY'
import re, sys
from collections import defaultdict

SAMPLING = ("sample_hidden_kernel", "sample_visible_softmax_kernel", "sigmoid_bernoulli_kernel")
entry = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+a?)'")
props = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
regs = re.compile(r"Used (\d+) registers")
rows, cur = [], None
for line in open(sys.argv[1], errors="replace"):
    if m := entry.search(line):
        cur = {"name": m.group(1), "arch": m.group(2)}
    elif cur and (m := props.search(line)):
        cur.update(stack=int(m.group(1)), stores=int(m.group(2)), loads=int(m.group(3)))
    elif cur and (m := regs.search(line)):
        cur["regs"] = int(m.group(1))
        rows.append(cur)
        cur = None

def short(mangled):
    """_ZN3rbm29sample_visible_softmax_kernelILi5EEEv... -> sample_visible_softmax_kernel<5>"""
    m = re.match(r"_ZN3rbm(\d+)", mangled)
    name = mangled[m.end():m.end() + int(m.group(1))] if m else mangled
    t = re.match(r"ILi(\d+)E", mangled[m.end() + int(m.group(1)):]) if m else None
    return name + (f"<{t.group(1)}>" if t else "")

if not rows:
    sys.exit("cuda_check: FAILED: no ptxas report found in the build log (is -Xptxas=-v still set?)")
table = defaultdict(dict)
for r in rows:
    table[short(r["name"])][r["arch"]] = r
archs = sorted({r["arch"] for r in rows}, key=lambda a: int(re.sub(r"\D", "", a)))
print(f"{'kernel':34s} " + " ".join(f"{a:>12s}" for a in archs))
print(f"{'':34s} " + " ".join(f"{'regs/stk/spl':>12s}" for _ in archs))
bad = []
for k in sorted(table):
    cells = []
    for a in archs:
        r = table[k].get(a)
        cells.append(f"{r['regs']}/{r['stack']}/{r['stores'] + r['loads']}" if r else "-")
        if r and (r["stores"] or r["loads"]) and k.startswith(SAMPLING):
            bad.append(f"{k} on {a}: {r['stores']} bytes spill stores, {r['loads']} bytes spill loads")
    print(f"{k:34s} " + " ".join(f"{c:>12s}" for c in cells))
print("(registers / stack frame bytes / spill store+load bytes)")
if bad:
    print("cuda_check: FAILED: sampling kernels spill registers:\n  " + "\n  ".join(bad))
    sys.exit(1)
print(f"cuda_check: no spills in the sampling kernels ({len(rows)} kernel builds checked)")
PY
echo "== cuda_check: passed in $(( $(date +%s) - start )) s"
