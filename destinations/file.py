"""`file`: events appended to a file as JSON lines (development, audits, piping)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

from .base import OK, Destination, DestinationConfig, Result, encode_json, register, retry


class FileConfig(DestinationConfig, tag="file", kw_only=True):
    path: str
    """The file; created if missing, appended to."""


@register
class FileDestination(Destination):
    config_type = FileConfig
    max_batch: ClassVar[int] = 1000
    max_bytes: ClassVar[int] = 16 * 1024 * 1024

    def __init__(self, name: str, config: FileConfig) -> None:
        super().__init__(name, config)
        self.path = Path(config.path)

    async def send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        data = b"".join(encode_json(e) + b"\n" for e in batch)
        try:
            await asyncio.to_thread(self._append, data)
        except OSError as e:
            return [retry(f"cannot write {self.path}: {e.strerror}")] * len(batch)
        return [OK] * len(batch)

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(data)
            f.flush()
