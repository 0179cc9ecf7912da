import pytest

from nvbind.host import procfs


@pytest.mark.parametrize("line, version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024",
     "550.54.14"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  560.35.03  Release Build  "
     "(dvs-builder@U16-I3-B03-4-3)  Fri Aug 16 21:42:42 UTC 2024", "560.35.03"),
    ("NVRM version: NVIDIA UNIX aarch64 Kernel Module  535.104.05  Sat Aug 19 01:17:26 UTC 2023",
     "535.104.05"),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.82  Thu Oct 28 2021", "470.82"),
])
def test_driver_version_formats(line, version):
    assert procfs.parse_version(line + "\nGCC version:  gcc version 12.2.0\n") == version


def test_driver_version_garbage():
    assert procfs.parse_version("hello\nNVRM version: nothing here\n") is None


def test_information_file():
    text = ("Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 190\nGPU UUID: \t GPU-8a3d0e1f-aaaa\n"
            "Bus Location: \t 0000:07:00.0\nDevice Minor: \t 3\n")
    info = procfs.parse_information(text)
    assert info["Model"] == "NVIDIA H100 80GB HBM3"
    assert info["GPU UUID"] == "GPU-8a3d0e1f-aaaa"
    assert info["Device Minor"] == "3"


def test_proc_devices_reads_only_character_devices():
    text = ("Character devices:\n  1 mem\n195 nvidia-frontend\n195 nvidia\n511 nvidia-uvm\n"
            "\nBlock devices:\n  7 loop\n511 nvidia-uvm-block\n")
    majors = procfs.parse_devices(text)
    assert majors == {"mem": 1, "nvidia-frontend": 195, "nvidia": 195, "nvidia-uvm": 511}


def test_mig_minors():
    m = procfs.parse_mig_minors("config 1\nmonitor 2\ngpu0/gi0/access 3\ngpu0/gi0/ci0/access 4\n")
    assert m == {"config": 1, "monitor": 2, "gpu0/gi0/access": 3, "gpu0/gi0/ci0/access": 4}


@pytest.mark.parametrize("raw, norm", [
    ("00000000:07:00.0", "0000:07:00.0"), ("0000:07:00.0", "0000:07:00.0"),
    ("07:00.0", "0000:07:00.0"), ("0000:AB:00.1", "0000:ab:00.1"), ("0001:07:00.0", "0001:07:00.0"),
])
def test_bus_ids(raw, norm):
    assert procfs.normalize_bus_id(raw) == norm
