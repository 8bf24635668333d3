"""The manager's images: pull, import, tag, remove, prune, save and push over the content store, and the lookup a
create makes. Fetching and archive formats are skopeo's (runtime/skopeo.py); the store and the unpacking are ours.

Every change to the index, and every collection of garbage, holds one lock: a collection never sees a pull's
blobs moved in but not yet listed. Reads (list, inspect, a create's lookup) read the index file as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tarfile
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from runtime.skopeo import CopyOpts, Platform, Skopeo, SkopeoError, transport
from shimproto.errors import AlreadyExists, InvalidArgument, InvalidState, NotFound

from .. import faults
from . import builtin, commit, oci, reference, rootfs
from .config import DEFAULT_PATH
from .content import ContentStore, Image, Index
from .errors import from_skopeo
from .pull import Transfer

log = logging.getLogger("shimd.manager")


class AsyncMonitor:
    """Runs a program for a runtime/ wrapper with asyncio (the manager is no subreaper: asyncio may wait)."""

    async def run(self, argv: list[str], *, stdin: int | None = None, stdout: int | None = None,
                  stderr: int | None = None, env: dict[str, str] | None = None, group: bool = False) -> int:
        dn = asyncio.subprocess.DEVNULL
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=dn if stdin is None else stdin,
                                                        stdout=dn if stdout is None else stdout,
                                                        stderr=dn if stderr is None else stderr, env=env,
                                                        process_group=0 if group else None)
        except FileNotFoundError:
            raise InvalidState(f"{argv[0]} is not installed (scripts/setup installs it)") from None
        try:
            return await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            await proc.wait()
            raise


@dataclass
class Resolved:
    """What a create needs of an image: its overlay's lower directories (top first), config and digest."""

    lowers: list[str]
    config: dict
    digest: str = ""


BUILTIN_CONFIG = {"config": {"Cmd": ["sh"], "Env": [DEFAULT_PATH, "TERM=xterm"]}}


def _names_in_archive(path: str) -> list[str]:
    """The references an archive or layout names for itself (docker's RepoTags, OCI ref names that are whole
    references); [] when it names none or cannot be read here (skopeo then says what is wrong)."""
    import json

    try:
        if os.path.isdir(path):
            with open(os.path.join(path, "index.json")) as f:
                idx = json.load(f)
        else:
            with tarfile.open(path) as tf:
                member = next((m for m in tf if m.name.lstrip("./") in ("manifest.json", "index.json")), None)
                f2 = tf.extractfile(member) if member is not None else None
                if f2 is None:
                    return []
                idx = json.load(f2)
    except (OSError, ValueError, tarfile.TarError):
        return []
    if isinstance(idx, list):  # docker's manifest.json
        names = [t for m in idx if isinstance(m, dict) for t in m.get("RepoTags") or []]
    else:
        names = [m.get("annotations", {}).get(oci.REF_NAME, "") for m in idx.get("manifests", [])
                 if isinstance(m, dict)]
    return [n for n in names if isinstance(n, str) and ("/" in n or ":" in n)]


def archive_kind(path: str) -> str:
    """oci (a layout directory), oci-archive or docker-archive, told by what is inside; InvalidArgument if none."""
    if not os.path.isabs(path):
        raise InvalidArgument(f"import: {path!r} must be an absolute path")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "oci-layout")):
            return "oci"
        raise InvalidArgument(f"import: {path} is a directory but not an OCI layout (no oci-layout file)")
    if os.path.exists(path) and not os.path.isfile(path):
        raise InvalidArgument(f"import: {path} is neither a regular file nor a directory")
    try:
        with tarfile.open(path) as tf:
            names = {m.name.lstrip("./") for m in tf}
    except FileNotFoundError:
        raise NotFound(f"import: no such file {path}") from None
    except IsADirectoryError:
        raise InvalidArgument(f"import: {path} is not a tar archive") from None
    except OSError as e:
        raise InvalidArgument(f"import: cannot read {path}: {e.strerror}") from None
    except tarfile.TarError:
        raise InvalidArgument(f"import: {path} is not a tar archive (plain, gzip, bzip2 or xz)") from None
    if "oci-layout" in names:
        return "oci-archive"
    if "manifest.json" in names:
        return "docker-archive"
    raise InvalidArgument(f"import: {path} is neither a docker archive (manifest.json) nor an OCI archive "
                          f"(oci-layout)")


class Images:
    def __init__(self, root: str, in_use: Callable[[], tuple[set[str], dict[str, list[str]]]]) -> None:
        self.root = root
        self.content = ContentStore(root)  # empties ingest/: what a dead pull left
        self.in_use = in_use  # (lower dirs, image digests) of every container on disk
        self.lock = asyncio.Lock()
        self.transfers: dict[str, Transfer] = {}

    async def collect(self) -> tuple[int, int]:
        """Remove what no image lists and no container uses (what a crash mid-pull or mid-removal left):
        (blobs, layers) removed. The manager runs it once after it starts serving (daemon.collect_images)."""
        async with self.lock:
            return await asyncio.to_thread(lambda: self.content.gc(self.in_use()[0]))

    def skopeo(self, platform: Platform, registries_conf: str = "") -> Skopeo:
        return Skopeo(AsyncMonitor(), platform=platform, tmpdir=self.content.ingest, registries_conf=registries_conf)

    # --- lookups ---------------------------------------------------------------------------------------------

    def resolve(self, name: str) -> Resolved:
        """The image a create names: a stored one first, else the built-in of that name."""
        index = self.content.load()
        try:
            img = self.content.find(index, name)
        except NotFound:
            if name in builtin.BUILTIN:
                return Resolved([builtin.resolve(self.root, name)], BUILTIN_CONFIG)
            raise NotFound(f"no such image: {name} (pull or import it first; built in: "
                           f"{', '.join(builtin.BUILTIN)})") from None
        return Resolved([self.content.layer_path(d) for d in reversed(img.layers)],
                        oci.config_of(self.content, img), img.digest)

    def view(self, index: Index, img: Image, users: dict[str, list[str]] | None = None) -> dict:
        return {"id": img.config, "digest": img.digest, "tags": [reference.parse(t).familiar for t in
                                                                  index.tags_of(img.digest)],
                "repo_tags": index.tags_of(img.digest), "size": img.size, "created": img.created,
                "layers": img.layers, "platform": img.platform, "containers": (users or {}).get(img.digest, [])}

    def list(self) -> list[dict]:
        index = self.content.load()
        return [self.view(index, i) for i in sorted(index.images.values(), key=lambda i: -i.added_at)]

    def progress(self, source: str) -> list[dict]:
        """The transfers under way (a pull's source is its normalized reference, an import's its path)."""
        wanted = {source, _normalized(source)} if source else None
        return [t.view() for s, t in self.transfers.items() if wanted is None or s in wanted]

    def inspect(self, name: str) -> dict:
        index = self.content.load()
        img = self.content.find(index, name)
        return {**self.view(index, img), "config": oci.config_of(self.content, img)}

    # --- into the store ------------------------------------------------------------------------------------------

    async def _transfer(self, source: str, src: str, opts: CopyOpts, platform: Platform,
                        tags: list[str], registries_conf: str = "") -> dict:
        if source in self.transfers:
            raise AlreadyExists(f"{source} is being pulled or imported already")
        ingest = self.content.new_ingest("transfer-")
        t = self.transfers[source] = Transfer(source, os.path.join(ingest, "layout"))
        try:
            try:
                with open(t.progress_path, "wb") as progress:
                    await self.skopeo(platform, registries_conf).copy(src, transport("oci", t.layout, "img"), opts,
                                                     progress=progress.fileno())
            except SkopeoError as e:
                raise from_skopeo(e, source) from None
            t.move("fetched")
            faults.point("image:fetched")
            async with self.lock:
                try:
                    img, _ = await asyncio.to_thread(oci.import_layout, self.content, t.layout, str(platform))
                    faults.point("image:unpacked")
                    index = self.content.load()
                    index.images.setdefault(img.digest, img)
                    for tag in tags:
                        index.tags[tag] = img.digest
                    self.content.save(index)
                except BaseException:
                    await asyncio.to_thread(self.content.gc, self.in_use()[0])
                    raise
            t.move("stored")
            log.info("stored image %s from %s as %s", img.digest, source, ", ".join(tags) or "<none>")
            return self.view(index, index.images[img.digest])
        except BaseException as e:
            t.error = str(e)
            if not t.state.finished:
                t.move("fail")
            raise
        finally:
            self.transfers.pop(source, None)
            shutil.rmtree(ingest, ignore_errors=True)

    async def pull(self, text: str, tls_verify: bool, authfile: str, platform: Platform,
                   registries_conf: str = "") -> dict:
        """registries_conf (a containers-registries.conf file) replaces the system's for this pull: where the
        registry's mirrors are and which are plain HTTP. tls_verify true leaves that to the file (skopeo is given
        no --src-tls-verify); false makes every endpoint plain HTTP."""
        ref = reference.parse(text)
        _check_file("authfile", authfile)
        _check_file("registries_conf", registries_conf)
        opts = CopyOpts(src_tls_verify=None if tls_verify else False, authfile=authfile, quiet=False)
        return await self._transfer(str(ref), transport("docker", str(ref)), opts, platform,
                                    [str(ref)] if ref.tag and not ref.digest else [], registries_conf)

    async def import_(self, path: str, tag: str, platform: Platform, ref: str = "") -> dict:
        """ref picks one image of an archive or layout holding several (a docker archive's name, a layout's
        ref name)."""
        kind = await asyncio.to_thread(archive_kind, path)  # it reads the whole archive's headers
        names = [str(reference.tagged(tag))] if tag else \
            [str(reference.tagged(n)) for n in await asyncio.to_thread(_names_in_archive, path)]
        if kind == "oci" and ":" in ref:
            raise InvalidArgument(f"import: ref {ref!r}: an OCI layout's ref name has no ':'")
        return await self._transfer(path, transport(kind, path, ref), CopyOpts(), platform, names)

    async def commit(self, lowers: list[str], upper: str, image_digest: str, tag: str, comment: str, author: str,
                     hold: AbstractAsyncContextManager) -> dict:
        """A new image: the container's image (image_digest; "" : its lower trees as a base layer) plus its upper
        directory as one layer, read while hold is held (the container paused); tagged tag when given."""
        new_tag = str(reference.tagged(tag)) if tag else ""
        index = self.content.load()
        base_img = index.images.get(image_digest) if image_digest else None
        if image_digest and base_img is None:
            raise NotFound(f"commit: the container's image {image_digest} is not stored any more")
        tmp = self.content.new_ingest("commit-")
        try:
            layers = []
            if base_img is None:
                layers.append(await asyncio.to_thread(commit.write_layer, rootfs.merged(lowers),
                                                      os.path.join(tmp, "base.tar.gz")))
            async with hold:
                layers.append(await asyncio.to_thread(commit.write_layer, rootfs.diff(upper),
                                                      os.path.join(tmp, "upper.tar.gz")))
            base = commit.Base(base_img, oci.config_of(self.content, base_img) if base_img else
                               {**BUILTIN_CONFIG, "rootfs": {"type": "layers", "diff_ids": []}})
            async with self.lock:
                try:
                    img = await asyncio.to_thread(commit.store_image, self.content, tmp, base, layers, comment,
                                                  author)
                    faults.point("image:committed")
                    index = self.content.load()
                    index.images.setdefault(img.digest, img)
                    if new_tag:
                        index.tags[new_tag] = img.digest
                    self.content.save(index)
                except BaseException:
                    await asyncio.to_thread(self.content.gc, self.in_use()[0])
                    raise
            log.info("committed image %s as %s", img.digest, new_tag or "<none>")
            return self.view(index, index.images[img.digest])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # --- names ---------------------------------------------------------------------------------------------

    async def tag(self, src: str, dst: str) -> None:
        new = str(reference.tagged(dst))
        async with self.lock:
            index = self.content.load()
            index.tags[new] = self.content.find(index, src).digest
            self.content.save(index)

    async def remove(self, name: str, force: bool, users: dict[str, list[str]]) -> dict:
        """docker rmi: one of several tags of an image is only untagged; the last name (or an id) removes the
        image, refused while a container uses it unless force, which untags it and leaves it to a later prune."""
        async with self.lock:
            index = self.content.load()
            img = self.content.find(index, name)
            tags = index.tags_of(img.digest)
            named = _normalized(name)
            if named in tags and len(tags) > 1:
                index.tags.pop(named)
                self.content.save(index)
                return {"untagged": [reference.parse(named).familiar], "deleted": []}
            using = users.get(img.digest, [])
            if using and not force:
                raise InvalidState(f"unable to remove image {name}: container {using[0]} uses it (remove the "
                                   f"container, or -f to untag the image anyway)")
            for t in tags:
                index.tags.pop(t)
            if not using:
                index.images.pop(img.digest)
            self.content.save(index)
            faults.point("image:untagged")
            if not using:
                await asyncio.to_thread(self.content.gc, self.in_use()[0])
        return {"untagged": [reference.parse(t).familiar for t in tags], "deleted": [] if using else [img.digest]}

    async def prune(self, all: bool, users: dict[str, list[str]]) -> dict:
        """Remove images no container uses: untagged ones (dangling), or every unused one with all."""
        async with self.lock:
            index = self.content.load()
            gone = [d for d in index.images if d not in users and (all or not index.tags_of(d))]
            for d in gone:
                index.images.pop(d)
                for t in index.tags_of(d):
                    index.tags.pop(t)
            self.content.save(index)
            blobs, layers = await asyncio.to_thread(self.content.gc, self.in_use()[0])
        return {"deleted": gone, "blobs": blobs, "layers": layers}

    # --- out of the store ----------------------------------------------------------------------------------

    async def _out(self, name: str, dest: str, opts: CopyOpts, ref_name: str) -> None:
        index = self.content.load()
        img = self.content.find(index, name)
        tmp = self.content.new_ingest("out-")
        try:
            layout = os.path.join(tmp, "layout")
            oci.write_layout(self.content, img, layout, "img")
            try:
                await self.skopeo(Platform()).copy(transport("oci", layout, "img"), dest, opts)
            except SkopeoError as e:
                raise from_skopeo(e, name) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def save(self, name: str, path: str, fmt: str) -> None:
        """Write the image to path as a docker (`docker load`) or OCI archive; a new file, renamed into place."""
        if not os.path.isabs(path) or not os.path.isdir(os.path.dirname(path)):
            raise InvalidArgument(f"save: {path!r} must be an absolute path in an existing directory")
        if fmt not in ("docker", "oci"):
            raise InvalidArgument(f"save: unknown format {fmt!r} (docker or oci)")
        index = self.content.load()
        img = self.content.find(index, name)
        tags = index.tags_of(img.digest)
        named = _normalized(name)
        ref_name = named if named in tags else (tags[0] if tags else "")
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.shimd-tmp")
        if os.path.exists(tmp):
            os.unlink(tmp)
        kind = "docker-archive" if fmt == "docker" else "oci-archive"
        try:
            await self._out(name, transport(kind, tmp, reference.parse(ref_name).familiar if ref_name else ""),
                            CopyOpts(), ref_name)
            os.rename(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    async def push(self, name: str, dest: str, tls_verify: bool, authfile: str) -> None:
        _check_file("authfile", authfile)
        ref = reference.parse(dest or name)
        await self._out(name, transport("docker", str(ref)),
                        CopyOpts(dest_tls_verify=None if tls_verify else False, authfile=authfile), str(ref))


def _normalized(name: str) -> str:
    """name as the index keys tags, or "" when it is no reference (an id)."""
    try:
        return str(reference.parse(name))
    except InvalidArgument:
        return ""


def _check_file(param: str, path: str) -> None:
    """A file a pull or push was given: checked here, because skopeo's own "no such file" reads as a missing
    image (runtime/skopeo.py's rules)."""
    if path and (not os.path.isabs(path) or not os.path.isfile(path)):
        raise InvalidArgument(f"{param} {path!r}: no such file (give an absolute path)")
