"""Every CUDA source of the cupy backend compiles, on any machine: NVRTC needs no GPU.

NVRTC comes from the pip package nvidia-cuda-nvrtc (``pip install
'tinylm[cuda-compile]'``); without it these tests skip and say so. Each source
is compiled to a CUBIN for every targeted architecture (sm_80, sm_90), which
runs ptxas too, and must compile without a warning.
"""

import re

import pytest

from tinylm.backends.cuda import expanded_source, header_names, nvrtc, read_source, source_names

needs_nvrtc = pytest.mark.skipif(nvrtc.find_library() is None,
                                 reason=f"NVRTC not installed; {nvrtc.INSTALL_HINT}")


def test_the_package_ships_every_kernel_source():
    assert {"adamw.cu", "attention.cu", "causal_softmax.cu", "embedding.cu", "gelu.cu", "layernorm.cu",
            "philox.cu", "softmax_xent.cu"} <= set(source_names())
    assert "common.cuh" in header_names()


@pytest.mark.parametrize("arch", nvrtc.ARCHITECTURES)
@pytest.mark.parametrize("name", source_names())
@needs_nvrtc
def test_source_compiles_without_warnings(name, arch):
    compiled = nvrtc.compile_project_source(name, arch)
    assert compiled.binary[:4] == b"\x7fELF", f"{name} for {arch}: not a CUBIN"
    assert "warning" not in compiled.log, f"{name} for {arch}:\n{compiled.log}"


@pytest.mark.parametrize("name", source_names())
@needs_nvrtc
def test_every_extern_kernel_is_in_the_ptx(name):
    """The names the cupy backend looks up exist, unmangled, in the compiled module."""
    kernels = re.findall(r'extern "C" __global__ void (\w+)\(', read_source(name))
    assert kernels, f"{name} defines no extern \"C\" kernel"
    ptx = nvrtc.compile_source(expanded_source(name), name, "compute_80").binary.decode()
    for kernel in kernels:
        assert f".entry {kernel}(" in ptx, f"{kernel} of {name} missing from the PTX"


def test_headers_are_expanded_in_place_keeping_line_numbers():
    expanded = expanded_source("layernorm.cu").splitlines()
    original = read_source("layernorm.cu").splitlines()
    at = next(i for i, line in enumerate(original) if line.startswith('#include "common.cuh"'))
    assert expanded[at] == '#line 1 "common.cuh"' and "warp_sum" in "\n".join(expanded)
    resumes = expanded.index(f'#line {at + 2} "layernorm.cu"')
    assert expanded[resumes + 1:] == original[at + 1:]
    assert not any(line.startswith("#include") for line in expanded)


@needs_nvrtc
def test_a_compile_error_names_the_file_and_line():
    broken = 'extern "C" __global__ void k(float* x) {\n    float a = 1.0f\n    x[0] = a;\n}\n'
    with pytest.raises(nvrtc.CudaCompileError, match=r'broken\.cu\(3\): error: expected a ";"'):
        nvrtc.compile_source(broken, "broken.cu", "sm_80")


def test_without_nvrtc_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(nvrtc, "find_library", lambda: None)
    monkeypatch.setattr(nvrtc, "_lib", None)
    with pytest.raises(nvrtc.BackendUnavailable, match=r"tinylm\[cuda-compile\]"):
        nvrtc.library()


@pytest.mark.parametrize("name", source_names())
@needs_nvrtc
def test_no_kernel_spills_registers_on_sm_90(name):
    """ptxas's report (-v): a kernel that spills to local memory is slower than it looks."""
    log = nvrtc.compile_source(expanded_source(name), name, "sm_90",
                               options=(*nvrtc.OPTIONS, "--ptxas-options=-v")).log
    reports = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert reports, f"{name}: no ptxas report in the log"
    assert all(stores == loads == "0" for stores, loads in reports), f"{name} spills:\n{log}"
