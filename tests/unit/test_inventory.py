import os
import subprocess

from conftest import CTK, needs_root, needs_shared
from nvbind.host import discover, inventory
from nvbind.host.discover import libraries
from nvbind.host.model import GpuRecord


def skipped_for(inv, needle):
    return [r for i, r in inv.skipped if needle in i]


def test_sim_host_gpus_and_nodes(sim_root):
    inv = inventory.build(sim_root)
    assert inv.driver_version == "550.54.14"
    assert [g.index for g in inv.gpus] == [0, 1]
    assert [g.bus_id for g in inv.gpus] == ["0000:10:00.0", "0000:11:00.0"]
    g1 = inv.gpus[1]
    assert g1.node == "/dev/nvidia1" and g1.uuid.startswith("GPU-")
    n = inv.nodes["/dev/nvidia1"]
    assert (n.major, n.minor) == (195, 1)
    # nvidia-uvm's major is dynamic: whatever the node says, checked against /proc/devices
    uvm = inv.nodes["/dev/nvidia-uvm"]
    assert uvm.major == os.major(os.stat(sim_root + "/dev/nvidia-uvm").st_rdev) == 508
    assert g1.drm == ("/dev/dri/card2", "/dev/dri/renderD129")
    assert [(m.gi, m.ci) for m in inv.gpus[0].migs] == [(1, 0), (2, 0)]
    assert inv.gpus[0].migs[0].caps == ("/dev/nvidia-caps/nvidia-cap13", "/dev/nvidia-caps/nvidia-cap14")


def test_sim_host_libraries_versioned_and_not_stale(sim_root):
    inv = inventory.build(sim_root)
    libs = {f.path: f for f in inv.files if f.kind == "library"}
    assert "/usr/lib64/libcuda.so.550.54.14" in libs
    assert not any("470.82.01" in p for p in libs)
    cuda = libs["/usr/lib64/libcuda.so.550.54.14"]
    assert cuda.capability == "compute" and cuda.soname == "libcuda.so.1"
    assert cuda.host_path == sim_root + "/usr/lib64/libcuda.so.550.54.14"
    assert "ld.so.cache" in cuda.reason
    kinds = {(f.kind, f.path) for f in inv.files}
    assert ("binary", "/usr/bin/nvidia-smi") in kinds
    assert ("firmware", "/lib/firmware/nvidia/550.54.14/gsp_ga10x.bin") in kinds
    assert ("socket", "/run/nvidia-persistenced/socket") in kinds
    assert ("config", "/usr/share/vulkan/icd.d/nvidia_icd.json") in kinds


def test_only_stale_library_is_skipped(tmp_path, sim_root):
    root = str(tmp_path / "r")
    subprocess.run(["cp", "-a", sim_root, root], check=True)
    os.unlink(root + "/usr/lib64/libcuda.so.550.54.14")
    inv = inventory.build(root)
    assert not [f for f in inv.files if "libcuda" in f.path]
    assert skipped_for(inv, "libcuda.so.550.54.14 (compute")


def test_node_with_foreign_major_is_skipped(tmp_path, sim_root):
    root = str(tmp_path / "r")
    subprocess.run(["cp", "-a", sim_root, root], check=True)
    os.unlink(root + "/dev/nvidia1")
    os.mknod(root + "/dev/nvidia1", 0o20666, os.makedev(1, 3))  # /dev/null's numbers
    inv = inventory.build(root)
    assert "/dev/nvidia1" not in inv.nodes
    assert inv.gpus[1].node is None
    assert "major 1 is not" in skipped_for(inv, "/dev/nvidia1")[0]


def test_no_driver(tmp_path):
    inv = inventory.build(str(tmp_path))
    assert inv.driver_version is None and inv.gpus == [] and inv.files == []
    assert any("no NVIDIA driver" in n for n in inv.notes)


class FakeBackend:
    name = "fake"

    def __init__(self, version):
        self.version = version

    def driver_version(self):
        return self.version

    def gpus(self):
        return [GpuRecord(minor=0, uuid="GPU-0", bus_id="0000:07:00.0", model="x")]


@needs_shared
def test_ctk_rootfs1_cache_names_other_version():
    root = os.path.join(CTK, "rootfs-1")
    inv = inventory.build(root, FakeBackend("999.88.77"), arch="x86_64")
    libs = sorted(f.path for f in inv.files if f.kind == "library")
    assert libs == ["/lib/x86_64-linux-gnu/libcuda.so.999.88.77",
                    "/lib/x86_64-linux-gnu/vdpau/libvdpau_nvidia.so.999.88.77"]
    # the cache names 515.105.01 libraries: each is skipped with the reason
    assert any("ld.so.cache names version 515.105.01" in r
               for i, r in inv.skipped if "libnvidia-tls" in i)
    # the "device nodes" there are empty regular files
    assert inv.nodes == {}
    assert skipped_for(inv, "/dev/nvidiactl") == ["not a character device"]


@needs_shared
def test_ctk_rootfs2_only_in_cache():
    inv = inventory.build(os.path.join(CTK, "rootfs-2"), FakeBackend("999.88.77"), arch="x86_64")
    libs = [f for f in inv.files if f.kind == "library"]
    assert [f.path for f in libs] == ["/var/lib/nvidia/lib64/libcuda.so.999.88.77"]
    assert "ld.so.cache entry libcuda.so" in libs[0].reason


@needs_shared
def test_ctk_no_cache_falls_back_to_scan():
    inv = inventory.build(os.path.join(CTK, "rootfs-no-cache-lib64"), FakeBackend("999.88.77"),
                          arch="x86_64")
    libs = [f for f in inv.files if f.kind == "library"]
    assert [f.path for f in libs] == ["/usr/lib64/libcuda.so.999.88.77"]
    assert "directory scan" in libs[0].reason
    assert skipped_for(inv, "/etc/ld.so.cache")


@needs_shared
def test_ctk_drm_links_resolve_inside_root():
    inv = inventory.build(os.path.join(CTK, "rootfs-drm"), FakeBackend("999.88.77"), arch="x86_64")
    # the by-path "links" of this copy are plain files: nothing may be taken through them
    assert "does not lead to a node" in skipped_for(inv, "pci-0000:07:00.0-card")[0]
    assert "does not lead to a node" in skipped_for(inv, "pci-0000:07:00.0-render")[0]
    assert inv.gpus[0].drm == ()


@needs_root
def test_drm_by_path_links(tmp_path):
    import os as _os
    from nvbind.host.discover import nodes as devices
    d = tmp_path / "dev/dri"
    (d / "by-path").mkdir(parents=True)
    _os.mknod(d / "card3", 0o20666, _os.makedev(226, 3))
    _os.symlink("../card3", d / "by-path/pci-0000:07:00.0-card")
    _os.symlink("/../../../dev/dri/card3", d / "by-path/pci-0000:07:00.0-render")
    skipped = []
    nodes = devices.drm_nodes(str(tmp_path), "0000:07:00.0", {"drm": 226}, skipped)
    # both links resolve inside the root, the absolute one with its ".." clamped at the root
    assert [n.path for n in nodes] == ["/dev/dri/card3", "/dev/dri/card3"]
    assert all(n.host_path == str(tmp_path) + "/dev/dri/card3" for n in nodes)


def test_empty_root(tmp_path):
    inv = inventory.build(str(tmp_path), FakeBackend("999.88.77"), arch="x86_64")
    assert inv.files == [] and inv.nodes == {} and len(inv.gpus) == 1
    assert inv.gpus[0].node is None


def test_compat32_uses_i386_entries_only():
    assert "compat32" in discover.CAPABILITIES
    assert libraries.COMPAT32_OF == ("utility", "compute", "video", "graphics")
