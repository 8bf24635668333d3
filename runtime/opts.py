"""One options dataclass per runtime subcommand, rendered to argv by a pure .args()."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CreateOpts:
    pid_file: str
    console_socket: str | None = None
    no_pivot: bool = False

    def args(self) -> list[str]:
        out = ["--pid-file", self.pid_file]
        if self.console_socket:
            out += ["--console-socket", self.console_socket]
        if self.no_pivot:
            out.append("--no-pivot")
        return out


@dataclass(frozen=True)
class KillOpts:
    all: bool = False

    def args(self) -> list[str]:
        return ["--all"] if self.all else []


@dataclass(frozen=True)
class DeleteOpts:
    force: bool = False

    def args(self) -> list[str]:
        return ["--force"] if self.force else []
