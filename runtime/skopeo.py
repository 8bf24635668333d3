"""skopeo, typed: one class holding the global flags, one method per subcommand, options as dataclasses rendered to
argv by a pure .args(), and failures classified once from skopeo's own stderr (the only place its words are read).

skopeo copies images between transports (`docker://` a registry, `oci:DIR` a layout, `oci-archive:`,
`docker-archive:`); we never talk to a registry ourselves. Processes start through the caller's Monitor, as runc's
do, so this module never waits on a process itself.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass

from .runc import Monitor

# Go's names for machines, as skopeo's --override-arch takes them
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
          "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def host_arch() -> str:
    machine = os.uname().machine
    return GOARCH.get(machine, machine)


@dataclass(frozen=True)
class Platform:
    """Which image of a multi-platform index to take: linux on this machine's architecture unless told."""

    os: str = "linux"
    arch: str = ""  # "" : the host's
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """"linux/arm64", "linux/arm/v7", "arm64" -> a Platform; ValueError if it is none."""
        parts = text.split("/") if text else []
        if not 1 <= len(parts) <= 3 or not all(re.fullmatch(r"[a-z0-9_]+", p) for p in parts):
            raise ValueError(f"invalid platform {text!r}: use OS/ARCH[/VARIANT], e.g. linux/amd64")
        if len(parts) == 1:
            return cls(arch=parts[0])
        return cls(os=parts[0], arch=parts[1], variant=parts[2] if len(parts) == 3 else "")

    def args(self) -> list[str]:
        out = ["--override-os", self.os, "--override-arch", self.arch or host_arch()]
        if self.variant:
            out += ["--override-variant", self.variant]
        return out

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.arch or host_arch(), self.variant) if p)


@dataclass(frozen=True)
class CopyOpts:
    """skopeo copy's options. tls_verify applies to whichever side is a registry; None keeps skopeo's default."""

    src_tls_verify: bool | None = None
    dest_tls_verify: bool | None = None
    authfile: str = ""
    format: str = ""  # "oci" or "v2s2": the manifest type written; "" keeps the source's
    remove_signatures: bool = True  # an image we store is never signed again by us
    quiet: bool = False

    def args(self) -> list[str]:
        out: list[str] = []
        if self.src_tls_verify is not None:
            out.append(f"--src-tls-verify={str(self.src_tls_verify).lower()}")
        if self.dest_tls_verify is not None:
            out.append(f"--dest-tls-verify={str(self.dest_tls_verify).lower()}")
        if self.authfile:
            out += ["--authfile", self.authfile]
        if self.format:
            out += ["--format", self.format]
        if self.remove_signatures:
            out.append("--remove-signatures")
        if self.quiet:
            out.append("--quiet")
        return out


@dataclass(frozen=True)
class InspectOpts:
    tls_verify: bool | None = None
    authfile: str = ""
    raw: bool = True  # the manifest (or index) itself, as the source has it

    def args(self) -> list[str]:
        out: list[str] = []
        if self.tls_verify is not None:
            out.append(f"--tls-verify={str(self.tls_verify).lower()}")
        if self.authfile:
            out += ["--authfile", self.authfile]
        if self.raw:
            out.append("--raw")
        return out


# --- errors, classified once from skopeo's stderr ------------------------------------------------------------------

class SkopeoError(Exception):
    """skopeo failed. .message is skopeo's own last words; .command what we ran."""

    def __init__(self, command: str, message: str, exit_code: int) -> None:
        super().__init__(f"{command}: {message}")
        self.command = command
        self.message = message
        self.exit_code = exit_code


class ImageNotFound(SkopeoError):
    """The registry, archive or layout has no such image (or no such tag)."""


class Unauthorized(SkopeoError):
    """The registry wants credentials we do not have, or refused the ones we sent."""


class Unreachable(SkopeoError):
    """No registry answers there (refused, no such host, TLS asked of a plain-HTTP registry)."""


class InvalidReference(SkopeoError):
    """The reference or the transport's details are malformed."""


class NoPlatform(SkopeoError):
    """A multi-platform index has no image for the platform asked for."""


class BadArchive(SkopeoError):
    """An archive or layout that skopeo cannot read as an image."""


_RULES: tuple[tuple[str, type[SkopeoError]], ...] = (
    ("no image found in manifest list", NoPlatform),
    ("no image found in image index", NoPlatform),
    ("choosing image instance", NoPlatform),
    ("manifest unknown", ImageNotFound),
    ("name unknown", ImageNotFound),
    ("repository name not known", ImageNotFound),
    ("not found", ImageNotFound),
    ("no such file or directory", ImageNotFound),
    ("unauthorized", Unauthorized),
    ("authentication required", Unauthorized),
    ("denied", Unauthorized),
    ("connection refused", Unreachable),
    ("no such host", Unreachable),
    ("server gave http response to https client", Unreachable),
    ("i/o timeout", Unreachable),
    ("pinging container registry", Unreachable),
    ("invalid reference format", InvalidReference),
    ("invalid image name", InvalidReference),
    ("invalid source name", InvalidReference),
    ("invalid destination name", InvalidReference),
    ("repository name must", InvalidReference),
    ("unexpected eof", BadArchive),
    ("archive/tar", BadArchive),
    ("loading tar component", BadArchive),
    ("invalid character", BadArchive),
    ("more than one image", BadArchive),
    ("does not look like", BadArchive),
)


def last_error(stderr: str) -> str:
    """skopeo's final complaint: its last non-empty line, without logrus' `time="..." level=fatal msg=` dress."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return ""
    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', lines[-1])
    return m.group(1).replace('\\"', '"') if m else lines[-1]


def classify(command: str, stderr: str, exit_code: int) -> SkopeoError:
    message = last_error(stderr) or f"exited with status {exit_code} and said nothing"
    low = message.lower()
    for needle, cls in _RULES:
        if needle in low:
            return cls(command, message, exit_code)
    return SkopeoError(command, message, exit_code)


# --- the program -------------------------------------------------------------------------------------------------

class Skopeo:
    def __init__(self, monitor: Monitor, binary: str = "skopeo", platform: Platform = Platform(),
                 tmpdir: str | None = None, policy: str = "", registries_conf: str = "") -> None:
        self.monitor = monitor
        self.binary = binary
        self.platform = platform
        self.tmpdir = tmpdir  # skopeo's big temporary files (archives are unpacked there), and our stderr files
        self.policy = policy
        # a containers-registries.conf(5) in place of the system's: mirrors, insecure (plain HTTP) registries,
        # blocked ones. A global flag (hidden in skopeo's help, there since 1.0): it applies to every docker://
        # reference of the command, mirrors resolved per endpoint.
        self.registries_conf = registries_conf

    def _global(self) -> list[str]:
        out = [self.binary, *self.platform.args()]
        if self.tmpdir:
            out += ["--tmpdir", self.tmpdir]
        if self.policy:
            out += ["--policy", self.policy]
        if self.registries_conf:
            out += ["--registries-conf", self.registries_conf]
        return out

    async def _run(self, sub: list[str], stdout: int | None = None) -> None:
        with tempfile.TemporaryFile(dir=self.tmpdir) as err:
            code = await self.monitor.run(self._global() + sub, stdout=stdout, stderr=err.fileno())
            if code != 0:
                err.seek(0)
                raise classify(f"{self.binary} {sub[0]}", err.read().decode(errors="replace"), code)

    async def copy(self, src: str, dest: str, opts: CopyOpts = CopyOpts(), progress: int | None = None) -> None:
        """skopeo copy SRC DEST (transport:details each); its progress lines go to the fd `progress`."""
        await self._run(["copy", *opts.args(), src, dest], stdout=progress)

    async def inspect(self, ref: str, opts: InspectOpts = InspectOpts()) -> dict:
        with tempfile.TemporaryFile(dir=self.tmpdir) as out:
            await self._run(["inspect", *opts.args(), ref], stdout=out.fileno())
            out.seek(0)
            try:
                return json.loads(out.read())
            except ValueError as e:
                raise SkopeoError(f"{self.binary} inspect", f"{ref}: not JSON: {e}", 0) from e


def transport(kind: str, path: str, ref: str = "") -> str:
    """`oci:/dir:ref`, `oci-archive:/f.tar`, `docker-archive:/f.tar:name:tag`, `docker://host/name:tag`."""
    if kind == "docker":
        return f"docker://{path}"
    return f"{kind}:{path}" + (f":{ref}" if ref else "")
