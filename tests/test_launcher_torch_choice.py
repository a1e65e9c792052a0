"""The launcher picks the torch build from what nvidia-smi says (a FAKE nvidia-smi: canned
text in its real format), the system and the builds the installer carries."""

from __future__ import annotations

import pytest
from duetto_launcher.torch_choice import choose, read_nvidia

BUILDS = ["cpu", "cu126", "cu128", "cu130"]


def fake_nvidia_smi(cuda: str, gpus: str = "NVIDIA GeForce RTX 4070"):
    header = (
        "+-----------------------------------------------------------------------------+\n"
        f"| NVIDIA-SMI 570.86.15    Driver Version: 570.86.15    CUDA Version: {cuda}     |\n"
        "|-------------------------------+----------------------+----------------------+\n"
    )

    def run(command):
        if command == ["nvidia-smi"]:
            return header
        if command[:2] == ["nvidia-smi", "--query-gpu=name"]:
            return gpus + "\n"
        return None

    return run


def no_nvidia_smi(command):
    return None


@pytest.mark.parametrize(("driver", "build"), [
    ("12.8", "cu128"), ("12.9", "cu128"), ("13.1", "cu130"), ("12.6", "cu126"),
])
def test_the_newest_cuda_build_the_driver_runs(driver, build):
    choice = choose(BUILDS, system="Linux", machine="x86_64", run=fake_nvidia_smi(driver),
                    override="")
    assert choice.build == build
    assert "NVIDIA GeForce RTX 4070" in choice.reason and f"CUDA {driver}" in choice.reason


def test_a_driver_older_than_every_cuda_build_gets_the_cpu_and_is_told_to_update():
    choice = choose(BUILDS, system="Windows", machine="AMD64", run=fake_nvidia_smi("11.8"),
                    override="")
    assert choice.build == "cpu"
    assert "update the NVIDIA driver" in choice.reason


def test_no_nvidia_gpu_means_the_cpu_build():
    choice = choose(BUILDS, system="Linux", machine="x86_64", run=no_nvidia_smi, override="")
    assert choice.build == "cpu" and choice.label == "CPU"
    assert "No NVIDIA GPU" in choice.reason


def test_apple_silicon_gets_the_metal_build_and_an_intel_mac_the_cpu():
    mac = ["cpu", "mps"]
    assert choose(mac, system="Darwin", machine="arm64", run=no_nvidia_smi,
                  override="").build == "mps"
    assert choose(mac, system="Darwin", machine="x86_64", run=no_nvidia_smi,
                  override="").build == "cpu"


def test_a_gpu_without_a_cuda_lock_in_the_installer_says_so():
    choice = choose(["cpu"], system="Linux", machine="x86_64", run=fake_nvidia_smi("12.8"),
                    override="")
    assert choice.build == "cpu" and "carries no CUDA build" in choice.reason


def test_the_override_is_honoured_and_checked():
    assert choose(BUILDS, run=no_nvidia_smi, override="cu126").build == "cu126"
    with pytest.raises(ValueError, match="not a build this installer carries"):
        choose(["cpu"], run=no_nvidia_smi, override="cu128")


def test_two_gpus_are_both_named():
    driver = read_nvidia(fake_nvidia_smi("12.8", "NVIDIA A100\nNVIDIA A100"))
    assert driver is not None and driver.gpus == ["NVIDIA A100", "NVIDIA A100"]
    assert driver.cuda == (12, 8)
