#!/usr/bin/env bash
# The CUDA toolkit for `cargo build --features cuda`, from PyPI wheels, on a machine with no GPU and
# no system CUDA (issue 20). Installs NVIDIA's CUDA 13.0 wheels (nvcc, its crt headers and nvvm, the
# runtime, nvrtc, cuBLAS, cuRAND, CCCL) into a venv, lays out one CUDA root beside it (the wheels'
# tree plus the unversioned .so names the linker wants and a link-time stub of the driver,
# libcuda.so, which only the GPU machine's driver really provides), and sets the build variables.
#
#   source bench/cuda-toolchain.sh            # installs if needed, exports the variables
#   eval "$(bash bench/cuda-toolchain.sh)"    # the same from another shell: prints export lines
#   CARGO_TARGET_DIR=target-cuda cargo build --release --features cuda --locked
#
# Idempotent: a second run finds the venv and the root and only prints/exports.
# Overrides: DISTILL_CUDA_HOME (default ~/.cache/distill-cuda: venv/ and root/ under it),
# CUDA_COMPUTE_CAP (default 90: H100/H200; no nvidia-smi here to ask), DISTILL_CUDA_PYTHON
# (the python that makes the venv, default python3).
#
# Why 13.0: the CUDA 12 wheels on PyPI carry ptxas but no nvcc; the CUDA 13 ones are a whole
# toolkit. 13.0 is what the project's GPU machines have (driver 580, nvcc 13.0, torch cu130), and
# the PTX that candle's kernels are compiled to needs a driver at least as new as the nvcc (580+).
# `.ci/run` needs none of this.

_dc_main() {
    local home=${DISTILL_CUDA_HOME:-$HOME/.cache/distill-cuda}
    local venv=$home/venv root=$home/root
    local py=${DISTILL_CUDA_PYTHON:-python3}
    # Every package of one CUDA release (13.0); cuBLAS and cuRAND number their own versions.
    local pkgs=("nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*"
        "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-cccl==13.0.*"
        "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*")
    local stamp=$home/installed.txt

    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${pkgs[*]}" ] || [ ! -x "$venv/bin/python" ]; then
        echo "cuda-toolchain: installing ${pkgs[*]} into $venv" >&2
        mkdir -p "$home" || return 1
        [ -x "$venv/bin/python" ] || "$py" -m venv "$venv" || return 1
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pkgs[@]}" >&2 || return 1
        printf '%s' "${pkgs[*]}" >"$stamp"
        rm -rf "$root"
    fi

    local cu13
    cu13=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))') || return 1
    [ -x "$cu13/bin/nvcc" ] || { echo "cuda-toolchain: no nvcc under $cu13" >&2; return 1; }

    if [ ! -f "$root/.complete" ]; then
        echo "cuda-toolchain: laying out the CUDA root $root" >&2
        rm -rf "$root" && mkdir -p "$root/lib/stubs" || return 1
        # bin/, include/ and nvvm/ as the wheels have them (nvcc finds cicc, crt and libdevice
        # through its nvcc.profile, relative to itself).
        ln -s "$cu13/bin" "$root/bin" && ln -s "$cu13/include" "$root/include" && ln -s "$cu13/nvvm" "$root/nvvm" || return 1
        ln -s "$root/lib" "$root/lib64"
        # lib/: each library under its own name and the unversioned one (-lcublas, -lcudart, ...).
        local f base
        for f in "$cu13"/lib/*.so* "$cu13"/lib/*.a; do
            [ -e "$f" ] || continue
            base=$(basename "$f")
            ln -sf "$f" "$root/lib/$base"
            case $base in
                *.so.*) ln -sf "$f" "$root/lib/${base%%.so.*}.so" ;;
            esac
        done
        # lib/stubs/libcuda.so: the driver API that cudarc links (dynamic-linking) with the driver's
        # soname, libcuda.so.1, so that the binary asks for the real one at run time. Its symbols are
        # the functions of cudarc's driver bindings; none of them is ever called.
        local cudarc
        cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | tail -1)
        [ -n "$cudarc" ] || { echo "cuda-toolchain: cudarc's source is not in the cargo registry; run 'cargo fetch --locked' first" >&2; return 1; }
        grep -o 'pub unsafe fn cu[A-Za-z0-9_]*' "$cudarc/src/driver/sys/mod.rs" | sed 's/pub unsafe fn //' | sort -u |
            sed 's/.*/int &(void) { return 999; }/' >"$root/lib/stubs/libcuda-stub.c"
        ${CC:-cc} -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$root/lib/stubs/libcuda-stub.c" || return 1
        ln -s libcuda.so "$root/lib/stubs/libcuda.so.1"  # for a CPU-only try of the binary here, never on a GPU machine
        touch "$root/.complete"
    fi

    _DC_ROOT=$root
    _DC_LIB=$cu13/lib
}

_dc_exports() {
    cat <<EOF
export CUDA_ROOT='$_DC_ROOT'
export CUDA_HOME='$_DC_ROOT'
export CUDA_PATH='$_DC_ROOT'
export NVCC='$_DC_ROOT/bin/nvcc'
export PATH='$_DC_ROOT/bin':"\$PATH"
export CUDA_COMPUTE_CAP='${CUDA_COMPUTE_CAP:-90}'
export CUDARC_CUDA_VERSION=13000
export LD_LIBRARY_PATH='$_DC_LIB':"\${LD_LIBRARY_PATH:-}"
EOF
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: export into the caller's shell.
    if _dc_main; then eval "$(_dc_exports)"; echo "cuda-toolchain: CUDA root $CUDA_ROOT, nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute cap $CUDA_COMPUTE_CAP" >&2; fi
    unset -f _dc_main _dc_exports; unset _DC_ROOT _DC_LIB
else
    set -euo pipefail
    _dc_main
    _dc_exports
fi
