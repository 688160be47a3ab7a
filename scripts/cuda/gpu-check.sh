#!/usr/bin/env bash
# GPU smoke and speed check of a `--features cuda` noprop binary.
#
# Runs on a GPU machine that has the NVIDIA driver and the CUDA 13 libraries
# but no crates.io: the binary is built elsewhere by `cargo xtask gpu-check`
# (bundle in target/gpu-check/) and carried here with the repository.
#
# Usage: scripts/cuda/gpu-check.sh [--libs-only] [BUNDLE_DIR_OR_BINARY]
#   BUNDLE_DIR_OR_BINARY  default target/gpu-check (holding `noprop`)
#   --libs-only           only locate the CUDA libraries and check that the
#                         binary's dependencies resolve (works without a GPU;
#                         a missing driver libcuda.so.1 is then a warning)
# Environment:
#   NOPROP_CUDA_LIB_DIRS  ':'-separated directories searched first
#   OUT                   where logs go (default BUNDLE_DIR/out)
#
# Steps: 1. find each library the binary needs (ldd) in the usual places
# (CUDA_HOME, /usr/local/cuda*, pip wheels in any python's site-packages,
# then a bounded filesystem search) and build LD_LIBRARY_PATH from them;
# 2. record the GPU and driver (nvidia-smi); refuse a GPU older than the
# binary's compute capability, or a driver too old for CUDA 13;
# 3. run `noprop gpu-check` (compare a GPU and a CPU training step from
# the same weights, train each variant briefly on MNIST on the GPU, print
# throughput and latency; docs/cuda.md). Exit status: 0 passed, 1 failed,
# 3 the binary is older than the `gpu-check` subcommand.
set -euo pipefail

libs_only=0
if [[ "${1:-}" == "--libs-only" ]]; then
    libs_only=1
    shift
fi
target="${1:-target/gpu-check}"
if [[ -d "$target" ]]; then
    bundle="$target"
    binary="$target/noprop"
else
    bundle="$(dirname "$target")"
    binary="$target"
fi
# A binary too big to carry travels xz-compressed (see `cargo xtask gpu-check`);
# it is unpacked into a temporary directory, not next to the bundle.
if [[ ! -e "$binary" && -f "$binary.xz" ]]; then
    unpacked="$(mktemp -d)"
    trap 'rm -rf "$unpacked"' EXIT
    if command -v xz >/dev/null; then
        xz -dc "$binary.xz" > "$unpacked/noprop"
    else
        python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst: shutil.copyfileobj(src, dst)' "$binary.xz" "$unpacked/noprop"
    fi
    chmod +x "$unpacked/noprop"
    binary="$unpacked/noprop"
fi
[[ -x "$binary" ]] || { echo "gpu-check: no executable noprop binary at $binary (build it with \`cargo xtask gpu-check\`)" >&2; exit 1; }
out="${OUT:-$bundle/out}"
mkdir -p "$out"
log() { echo "gpu-check: $*" | tee -a "$out/gpu-check.log" >&2; }
: > "$out/gpu-check.log"
log "binary $binary, logs in $out, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
[[ -f "$bundle/bundle.json" ]] && cp "$bundle/bundle.json" "$out/bundle.json"

# --- 1. libraries -----------------------------------------------------------
# Directories that may hold the CUDA 13 run-time libraries, best first. A
# `stubs` directory never qualifies: its libcuda would shadow the driver's.
candidate_dirs() {
    local IFS=:
    for dir in ${NOPROP_CUDA_LIB_DIRS:-}; do echo "$dir"; done
    if [[ -n "${CUDA_HOME:-}" ]]; then
        echo "$CUDA_HOME/lib64"; echo "$CUDA_HOME/lib"; echo "$CUDA_HOME/targets/x86_64-linux/lib"
    fi
    for root in /usr/local/cuda /usr/local/cuda-13* /opt/cuda; do
        echo "$root/lib64"; echo "$root/targets/x86_64-linux/lib"
    done
    # pip wheels: nvidia/cu13/lib (CUDA 13 layout), nvidia/<component>/lib.
    for python in python3 python; do
        command -v "$python" >/dev/null 2>&1 || continue
        "$python" - <<'PY' 2>/dev/null || true
import glob, site, sys
roots = list(getattr(site, "getsitepackages", lambda: [])()) + [site.getusersitepackages()] + sys.path
for root in dict.fromkeys(r for r in roots if r):
    for lib in sorted(glob.glob(f"{root}/nvidia/cu13/lib")) + sorted(glob.glob(f"{root}/nvidia/*/lib")):
        print(lib)
PY
    done
}

# Libraries the binary needs that the loader cannot find with the current
# LD_LIBRARY_PATH.
missing_libraries() {
    ldd "$binary" | awk '/not found/ { print $1 }'
}

add_library_dir() {
    case ":${LD_LIBRARY_PATH:-}:" in
        *":$1:"*) ;;
        *) export LD_LIBRARY_PATH="$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
}

mapfile -t dirs < <(candidate_dirs | awk '!seen[$0]++' | grep -v '/stubs$' || true)
for lib in $(missing_libraries); do
    [[ "$lib" == libcuda.so* ]] && continue # the driver's, never searched for
    found=""
    for dir in "${dirs[@]}"; do
        if [[ -e "$dir/$lib" ]]; then found="$dir"; break; fi
    done
    if [[ -z "$found" ]]; then
        # Last resort: a bounded search of the usual install roots.
        found="$(timeout 60 find /usr /opt /root /home /work -xdev -maxdepth 9 -name "$lib" \
            -not -path '*/stubs/*' 2>/dev/null | head -n 1 | xargs -r dirname || true)"
    fi
    if [[ -n "$found" ]]; then
        add_library_dir "$found"
        log "found $lib in $found"
    fi
done
ldd "$binary" > "$out/ldd.txt" || true
unresolved="$(missing_libraries | grep -v '^libcuda\.so' || true)"
if [[ -n "$unresolved" ]]; then
    log "FAILED: CUDA libraries not found: $(echo $unresolved). Set NOPROP_CUDA_LIB_DIRS to where they are (pip: python3 -m pip install --target DIR nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96; then DIR/nvidia/cu13/lib)."
    exit 1
fi
log "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
if missing_libraries | grep -q '^libcuda\.so'; then
    if [[ $libs_only == 1 ]]; then
        log "libraries resolve; libcuda.so.1 (driver) absent, expected without a GPU (--libs-only)"
        exit 0
    fi
    log "FAILED: libcuda.so.1 not found: no NVIDIA driver on this machine"
    exit 1
fi
if [[ $libs_only == 1 ]]; then
    log "libraries resolve, driver library present (--libs-only)"
    exit 0
fi

# --- 2. GPU and driver ----------------------------------------------------
command -v nvidia-smi >/dev/null || { log "FAILED: nvidia-smi not found: no NVIDIA driver"; exit 1; }
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || { log "FAILED: nvidia-smi: $(tail -1 "$out/nvidia-smi.txt")"; exit 1; }
gpu="$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader | head -n 1)"
log "GPU: $gpu"
driver_major="$(echo "$gpu" | awk -F', ' '{ split($2, v, "."); print v[1] }')"
gpu_cap="$(echo "$gpu" | awk -F', ' '{ gsub(/\./, "", $3); print $3 }')"
if (( driver_major < 580 )); then
    log "FAILED: driver $driver_major is older than 580, the first for CUDA 13.0"
    exit 1
fi
built_cap="$(sed -n 's/.*"compute_cap": *"\([0-9]*\)".*/\1/p' "$bundle/bundle.json" 2>/dev/null || true)"
if [[ -n "$built_cap" ]] && (( gpu_cap < built_cap )); then
    log "FAILED: the binary's kernels are for sm_$built_cap, this GPU is sm_$gpu_cap (rebuild with CUDA_COMPUTE_CAP=$gpu_cap)"
    exit 1
fi

# --- 3. the trainer's check -----------------------------------------------
if ! "$binary" gpu-check --help > /dev/null 2>&1; then
    log "NOT RUN: this noprop binary predates the \`gpu-check\` subcommand (rebuild it with \`cargo xtask gpu-check\`); libraries and driver are fine"
    exit 3
fi
data="${NOPROP_DATA:-data/mnist}"
log "running: $binary gpu-check --data $data --json $out/gpu-check.json"
status=0
"$binary" gpu-check --data "$data" --json "$out/gpu-check.json" 2>&1 | tee -a "$out/gpu-check.log" || status=$?
if (( status == 0 )); then log "PASSED"; else log "FAILED (exit $status)"; fi
exit "$status"
