"""Images in the benchmark (issue 11's figures): pull and unpack of a ~50 MB, 5-layer image from a registry on
127.0.0.1 (Debian's docker-registry, started here with tests/imagekit.py's loopback-only config), against
`skopeo copy` into an OCI layout alone (the floor: the same fetch, nothing unpacked) and `ctr image pull`
(containerd: fetch, then unpack into its overlayfs snapshotter); then `run -d` from that image against the
built-in busybox (a deep overlay must not slow starts).

Each pull starts from nothing: after shimd's, `image rm` and `image prune` (so its layers are unpacked again);
after containerd's, `ctr image rm --sync` (its content and snapshots go with it); skopeo's layout is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from report import Row, table
from util import median, run, say, timed

from tests.imagekit import Layout, Registry, busybox_tree

LAYER_MB = 12  # four layers of random (incompressible) bytes on top of busybox: ~50 MB


def _random_layer(n: int):
    def change(rootfs: str) -> None:
        with open(os.path.join(rootfs, "data", f"blob{n}"), "wb") as f:
            for _ in range(LAYER_MB):
                f.write(os.urandom(1 << 20))
    return change


class BigImage:
    """The 5-layer image, built with umoci and pushed to a registry of our own; close() removes both."""

    def __init__(self, base: str) -> None:
        self.work = tempfile.mkdtemp(prefix="image-", dir=base)
        self.registry = Registry()
        lay = Layout(self.work)
        lay.layer("l1", busybox_tree)
        for n in range(2, 6):
            lay.layer(f"l{n}", _random_layer(n))
        lay.config("l5", "--config.cmd", "sh")
        self.ref = f"{self.registry.addr}/bench/big:1"
        lay.push("l5", self.ref)
        self.mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(lay.dir, "blobs"))
                      for f in fs) / 1e6

    def close(self) -> None:
        self.registry.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def pulls(shimd, ctd, image: BigImage, n: int, base: str) -> dict[str, list[float]]:
    """n pulls of the image by each (skopeo alone, shimd, containerd), alternating, each from nothing."""
    out: dict[str, list[float]] = {"skopeo": [], "shimd": [], "containerd": []}
    for i in range(n):
        order = ["skopeo", "shimd", "containerd"]
        for name in order[i % 3:] + order[:i % 3]:
            if name == "skopeo":
                dest = tempfile.mkdtemp(prefix="skopeo-", dir=base)
                out[name].append(timed(["skopeo", "copy", "--src-tls-verify=false", f"docker://{image.ref}",
                                        f"oci:{dest}:big"]))
                shutil.rmtree(dest)
            elif name == "shimd":
                out[name].append(timed(shimd.ctl("pull", "--tls-verify=false", image.ref)))
                run(shimd.ctl("image", "rm", image.ref))
                run(shimd.ctl("image", "prune", "-a"))
            else:
                out[name].append(timed(ctd.ctl("image", "pull", "--plain-http", image.ref)))
                run(ctd.ctl("image", "rm", "--sync", image.ref))
    return out


def deep_starts(shimd, image: BigImage, n: int, prefix: str) -> dict[str, list[float]]:
    """`run -d` from the 5-layer image and from the built-in busybox, alternating; every container removed."""
    run(shimd.ctl("pull", "--tls-verify=false", image.ref))
    out: dict[str, list[float]] = {"deep": [], "busybox": []}
    for i in range(n):
        for kind in (("deep", "busybox") if i % 2 == 0 else ("busybox", "deep")):
            id = f"{prefix}-img{kind[0]}{i}"
            shimd.made.add(id)
            src = image.ref if kind == "deep" else "busybox"
            out[kind].append(timed(shimd.ctl("run", "-d", "--name", id, src, "sleep", "100000")))
            shimd.remove(id)
    run(shimd.ctl("image", "rm", image.ref))
    run(shimd.ctl("image", "prune", "-a"))
    return out


def measure(shimd, ctd, base: str, prefix: str, n: int) -> dict:
    say("images: building a 5-layer image and starting a registry on 127.0.0.1")
    image = BigImage(base)
    try:
        say(f"images: {n} pulls each of {image.mb:.0f} MB (skopeo alone, shimd, containerd)")
        res: dict = {"mb": image.mb, "pull": pulls(shimd, ctd, image, n, base)}
        say(f"images: run -d from it, {2 * n} starts")
        res["start"] = deep_starts(shimd, image, 2 * n, prefix)
        return res
    finally:
        image.close()


def section(res: dict | None, took: float) -> list[str]:
    """The image figures as a section of docs/benchmarks.md."""
    if not res:
        return ["## Images (issue 11)", "", "_Skipped in this run (BENCH_IMAGES=0)._", ""]
    p, s = res["pull"], res["start"]
    rows = [
        Row(f"pull + unpack of a {res['mb']:.0f} MB, 5-layer image from a registry on 127.0.0.1 (CLI)", None,
            median(p["shimd"]), median(p["containerd"]), "ms", "reported; floor: skopeo copy alone"),
        Row("`run -d` from that 5-layer image (CLI)", None, median(s["deep"]), None, "ms",
            "no slower than from busybox"),
        Row("`run -d` from the built-in busybox, alternating with it (CLI)", None, median(s["busybox"]), None, "ms",
            ""),
    ]
    return ["## Images (issue 11)", "", *table(rows), "",
            f"The floor: `skopeo copy` of the same image into an OCI layout, nothing unpacked, took "
            f"{median(p['skopeo']) * 1000:.0f} ms (median of {len(p['skopeo'])}); shimd's pull is that copy plus "
            "checking every blob's digest and unpacking each layer once into its own directory; containerd's "
            "`ctr image pull --plain-http` fetches and unpacks into its overlayfs snapshotter. Each pull started "
            "from nothing (shimd: `image rm` + `image prune -a`; containerd: `ctr image rm --sync`; skopeo: a new "
            f"layout). The image part took {took:.0f} s (skip it with BENCH_IMAGES=0).", ""]
