"""A precise, human-readable reason something was rejected — shared by validators and services."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: a stable code, where it is, and what to do about it."""

    code: str  # machine-readable, snake_case, stable across releases (e.g. "file_sha256_mismatch")
    path: str  # the file, and line or field where useful ("frames.jsonl:37", "manifest.json:files[2]")
    message: str  # a sentence a player or operator can act on

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form, the same keys as scale_diffusion.common.v1.Problem."""
        return asdict(self)


class ProblemError(Exception):
    """Raised with one or more problems; str() lists them all."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("ProblemError needs at least one problem")
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))
