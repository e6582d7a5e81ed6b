"""A projected service-account token volume, written the way the kubelet writes it.

The kubelet's atomic writer never rewrites a file in place: it writes the new
contents into a fresh hidden directory, points a ``..data`` symlink at it with one
rename, and each visible file is a symlink through ``..data``. A reader therefore sees
the old token or the new one, never half of each, and ``tokenFile`` in a kubeconfig
names the visible path, which stays the same across rotations.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import Final

DATA: Final = "..data"


class ProjectedTokenVolume:
    """The mount point of a volume with one ``serviceAccountToken`` source."""

    def __init__(self, mount_path: Path, *, path: str = "token") -> None:
        self.mount_path = mount_path
        self.file_name = path
        self._generations = itertools.count()
        mount_path.mkdir(parents=True, exist_ok=True)

    @property
    def token_file(self) -> Path:
        return self.mount_path / self.file_name

    def write(self, token: str) -> None:
        """Publish ``token`` atomically, as a rotation by the kubelet does."""
        generation = self.mount_path / f"..generation_{next(self._generations)}"
        generation.mkdir(mode=0o755)
        (generation / self.file_name).write_text(token)
        previous = self._current_generation()

        swap = self.mount_path / f"{DATA}_tmp"
        swap.symlink_to(generation.name)
        os.replace(swap, self.mount_path / DATA)
        if not self.token_file.is_symlink():
            self.token_file.symlink_to(f"{DATA}/{self.file_name}")
        if previous is not None:
            shutil.rmtree(previous)

    def _current_generation(self) -> Path | None:
        data = self.mount_path / DATA
        if not data.is_symlink():
            return None
        return self.mount_path / os.readlink(data)
