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


@dataclass(frozen=True)
class ExecOpts:
    process_file: str
    pid_file: str
    console_socket: str | None = None
    detach: bool = True

    def args(self) -> list[str]:
        out = ["--process", self.process_file, "--pid-file", self.pid_file]
        if self.console_socket:
            out += ["--console-socket", self.console_socket]
        if self.detach:
            out.append("--detach")
        return out


@dataclass(frozen=True)
class UpdateOpts:
    memory_limit: int | None = None
    pids_limit: int | None = None

    def args(self) -> list[str]:
        out = []
        if self.memory_limit is not None:
            # swap limit = memory limit: no swap, as at create; runc orders the cgroup writes itself
            out += ["--memory", str(self.memory_limit), "--memory-swap", str(self.memory_limit)]
        if self.pids_limit is not None:
            out += ["--pids-limit", str(self.pids_limit)]
        return out
