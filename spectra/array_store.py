"""Array shards: the normalised spectra, outside the database.

A shard is one ``.npy`` file of shape (N, 2, 2, 4000) float32: for each spectrum,
[normalised flux, its inverse variance] x [blue, red] x pixels (masked pixels: flux 1,
ivar 0). Rows are addressed by (shard name, row). Shards are named by the sha256 of
their bytes, so writing the same arrays twice gives the same single file, and they are
written to a temporary name and renamed, so a reader never sees half a shard.
Pure Python/numpy; the root directory comes from the caller (settings.SPECTRA_ARRAY_ROOT).
"""

import hashlib
import io
import os
import threading
from pathlib import Path

import numpy as np

SHARD_DTYPE = np.float32


class ArrayStoreError(RuntimeError):
    """The store cannot take a shard (disk full, read-only, quota, I/O error).

    Not a fault of the spectra being written: a caller stops instead of recording them as
    failed. ``errno`` is the operating system's error number.
    """

    def __init__(self, root: Path, error: OSError):
        self.errno = error.errno
        super().__init__(f"cannot write an array shard under {root}: {error.strerror or error} (errno {error.errno})")


class ArrayStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, shard: str) -> Path:
        return self.root / shard[:2] / f"{shard}.npy"

    def write(self, flux: np.ndarray, ivar: np.ndarray) -> str:
        """Store (N, 2, 4000) flux and ivar; return the shard name.

        Raises ArrayStoreError when the file system refuses the shard; its temporary file
        is removed first.
        """
        stacked = np.ascontiguousarray(np.stack([flux, ivar], axis=1), dtype=SHARD_DTYPE)
        buffer = io.BytesIO()
        np.save(buffer, stacked, allow_pickle=False)
        payload = buffer.getvalue()
        shard = hashlib.sha256(payload).hexdigest()[:32]
        target = self.path(shard)
        if not target.exists():
            temporary = target.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                temporary.write_bytes(payload)
                os.replace(temporary, target)
            except OSError as error:
                temporary.unlink(missing_ok=True)  # never leave a partial shard behind
                raise ArrayStoreError(self.root, error) from error
        return shard

    def read(self, shard: str, rows: np.ndarray | list[int] | None = None) -> np.ndarray:
        """(n, 2, 2, 4000) float32 for the given rows (all rows by default); memory-mapped."""
        data = np.load(self.path(shard), mmap_mode="r", allow_pickle=False)
        return np.asarray(data if rows is None else data[np.asarray(rows)])

    def read_many(self, shards: list[str] | np.ndarray, rows: np.ndarray, *, flux_only: bool = False) -> np.ndarray:
        """Rows from many shards in the order given: (n, 2, 2, 4000), or (n, 2, 4000) flux.

        Each shard is opened once, whatever the order of the requests.
        """
        shards = np.asarray(shards, dtype=object)
        rows = np.asarray(rows, dtype=np.int64)
        shape = (shards.shape[0], 2, 4000) if flux_only else (shards.shape[0], 2, 2, 4000)
        out = np.empty(shape, dtype=SHARD_DTYPE)
        for shard in np.unique(shards.astype(str)):
            positions = np.flatnonzero(shards == shard)
            data = np.load(self.path(shard), mmap_mode="r", allow_pickle=False)
            selected = data[rows[positions]]
            out[positions] = selected[:, 0] if flux_only else selected
        return out
