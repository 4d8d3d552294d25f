"""The cupy backend on a machine without a GPU: what ``available()`` tells the user.

A fake ``cupy`` module (put into sys.modules) plays each machine: no driver at
all, a driver that sees no GPU, a driver older than CuPy's CUDA runtime. These
run everywhere; the kernels themselves are checked on a GPU (tests marked ``gpu``).
"""

import importlib.machinery
import sys
import types

import pytest

from tinylm.backends import cupy_backend

INSUFFICIENT_DRIVER, NO_DEVICE = 35, 100


class CUDARuntimeError(RuntimeError):
    """Shaped like CuPy's: the cudaError_t code as ``status``."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def fake_cupy(monkeypatch, *, error=None, count=1, driver=12040, runtime=12040):
    """Install a ``cupy`` whose runtime fails with ``error`` (or reports ``count`` devices)."""
    def get_device_count():
        if error is not None:
            raise error
        return count

    def version(value):
        def query():
            if isinstance(value, Exception):
                raise value
            return value
        return query

    module = types.ModuleType("cupy")
    module.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=get_device_count, driverGetVersion=version(driver),
        runtimeGetVersion=version(runtime)))
    monkeypatch.setitem(sys.modules, "cupy", module)


def test_no_driver_says_there_is_no_gpu_or_driver_not_to_upgrade(monkeypatch):
    fake_cupy(monkeypatch, driver=0, error=CUDARuntimeError(
        INSUFFICIENT_DRIVER, "cudaErrorInsufficientDriver: CUDA driver version is insufficient "
                             "for CUDA runtime version"))
    ok, reason = cupy_backend.available()
    assert not ok
    assert reason.startswith("no NVIDIA GPU or driver on this machine"), reason
    assert "insufficient" not in reason and "upgrade" not in reason


def test_no_driver_found_even_when_cupy_cannot_report_its_version(monkeypatch):
    fake_cupy(monkeypatch, driver=CUDARuntimeError(INSUFFICIENT_DRIVER, "no driver"),
              error=CUDARuntimeError(INSUFFICIENT_DRIVER, "CUDA driver version is insufficient"))
    monkeypatch.setattr(cupy_backend, "_libcuda_found", lambda: False)
    ok, reason = cupy_backend.available()
    assert not ok and reason.startswith("no NVIDIA GPU or driver on this machine"), reason


def test_a_driver_that_sees_no_device_says_so(monkeypatch):
    fake_cupy(monkeypatch, driver=12040, error=CUDARuntimeError(
        NO_DEVICE, "cudaErrorNoDevice: no CUDA-capable device is detected"))
    ok, reason = cupy_backend.available()
    assert not ok
    assert reason == ("no NVIDIA GPU on this machine: the NVIDIA driver (CUDA 12.4) is "
                      "installed but sees no device")


def test_zero_devices_is_no_gpu(monkeypatch):
    fake_cupy(monkeypatch, count=0)
    ok, reason = cupy_backend.available()
    assert not ok and reason.startswith("no NVIDIA GPU on this machine"), reason


def test_an_old_driver_is_told_to_upgrade_with_both_versions(monkeypatch):
    fake_cupy(monkeypatch, driver=11080, runtime=13000, error=CUDARuntimeError(
        INSUFFICIENT_DRIVER, "cudaErrorInsufficientDriver: CUDA driver version is insufficient"))
    ok, reason = cupy_backend.available()
    assert not ok
    assert "supports CUDA up to 11.8" in reason and "needs CUDA 13.0" in reason
    assert "upgrade the driver" in reason


def test_an_unknown_failure_keeps_cupys_first_line(monkeypatch):
    fake_cupy(monkeypatch, error=CUDARuntimeError(999, "cudaErrorUnknown: unknown error\nmore"))
    ok, reason = cupy_backend.available()
    assert (ok, reason) == (False, "CuPy cannot reach a CUDA device: cudaErrorUnknown: unknown error")


def test_a_gpu_is_available(monkeypatch):
    fake_cupy(monkeypatch, count=1)
    assert cupy_backend.available() == (True, "")


@pytest.mark.parametrize("driver", [0, 12040])
def test_the_cli_prints_the_reason_in_one_line(monkeypatch, driver):
    from click.testing import CliRunner

    from tinylm.cli import cli
    fake_cupy(monkeypatch, driver=driver, error=CUDARuntimeError(
        INSUFFICIENT_DRIVER if driver == 0 else NO_DEVICE, "failure"))
    result = CliRunner().invoke(cli, ["backends"])
    line = next(l for l in result.output.splitlines() if "cupy" in l)
    assert "no NVIDIA GPU" in line, result.output
