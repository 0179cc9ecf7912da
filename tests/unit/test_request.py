import pytest

from nvbind.errors import InputError
from nvbind.core.request import from_config


def req(env=None, ann=None):
    return from_config(env or {}, ann or {})


def test_unset_is_no_request():
    assert req().empty


@pytest.mark.parametrize("value", ["", "void", "  "])
def test_empty_and_void_inject_nothing(value):
    assert req({"NVIDIA_VISIBLE_DEVICES": value}).empty


def test_none_injects_driver_without_devices():
    r = req({"NVIDIA_VISIBLE_DEVICES": "none"})
    assert r.wants_driver and r.devices == ()
    assert r.capabilities == ("compute", "utility")


def test_all_and_lists():
    assert req({"NVIDIA_VISIBLE_DEVICES": "all"}).devices == "all"
    r = req({"NVIDIA_VISIBLE_DEVICES": "0, GPU-abc,0:1,0000:07:00.0,MIG-x,0"})
    assert r.devices == ("0", "GPU-abc", "0:1", "0000:07:00.0", "MIG-x")


def test_legacy_cuda_image_gets_everything():
    r = req({"CUDA_VERSION": "11.0"})
    assert r.devices == "all"
    assert "graphics" in r.capabilities and "video" in r.capabilities
    assert req({"CUDA_VERSION": "11.0", "NVIDIA_REQUIRE_CUDA": "cuda>=11.0"}).empty


def test_capabilities():
    r = req({"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_DRIVER_CAPABILITIES": "video,utility"})
    assert r.capabilities == ("utility", "video")
    r = req({"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_DRIVER_CAPABILITIES": "all"})
    assert len(r.capabilities) == 7
    r = req({"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_DRIVER_CAPABILITIES": ""})
    assert r.capabilities == ("compute", "utility")


def test_unknown_capability_is_an_error():
    with pytest.raises(InputError, match="unknown capability 'cuda'"):
        req({"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_DRIVER_CAPABILITIES": "compute,cuda"})


def test_annotations_win_over_env():
    r = req({"NVIDIA_VISIBLE_DEVICES": "0"}, {"nvbind.io/gpus": "1", "nvbind.io/capabilities": "video"})
    assert r.devices == ("1",) and r.capabilities == ("video",)
    assert "annotation" in r.source


@pytest.mark.parametrize("value", ["0,all", "none,1", "0;rm -rf /", "../../etc", "a" * 5000])
def test_malformed_device_lists(value):
    with pytest.raises(InputError):
        req({"NVIDIA_VISIBLE_DEVICES": value})


@pytest.mark.parametrize("env, ann, mounts", [
    ({"NVIDIA_VISIBLE_DEVICES": "0"}, {}, []), ({"CUDA_VERSION": "12.0"}, {}, []),
    ({}, {"nvbind.io/gpus": "0"}, []),
    ({}, {}, [{"destination": "/var/run/nvidia-container-devices/0", "source": "/dev/null"}]),
])
def test_fast_path_never_hides_a_request(env, ann, mounts):
    """oci.may_request must be True whenever request.from_config could find a request."""
    import json

    from nvbind import oci
    cfg = {"process": {"env": [f"{k}={v}" for k, v in env.items()]}, "root": {"path": "r"},
           "annotations": ann, "mounts": mounts}
    text = json.dumps(cfg)
    assert not from_config(env, ann, cfg, {"mounts": True}).empty
    assert oci.may_request(text)
    # the same config with its keys hidden behind \\u escapes is still caught
    hidden = text.replace("NVIDIA", "\\u004eVIDIA").replace("nvbind", "\\u006evbind") \
        .replace("CUDA", "\\u0043UDA").replace("nvidia-c", "\\u006evidia-c")
    assert json.loads(hidden) == cfg and oci.may_request(hidden)
    assert not oci.may_request(json.dumps({"process": {"env": ["PATH=/bin"]}, "root": {"path": "r"}}))
