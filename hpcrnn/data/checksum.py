"""Content checksums of data sets that come out the same whatever the number of ranks: the rows are cut in
blocks of a fixed number of rows, each block is hashed on its own, and the block digests, joined in index
order, are hashed again. Rank r hashes its blocks; the digests are gathered and combined. sha256: OpenSSL
runs it on the CPU's SHA instructions (1.6 GB/s a core here, twice blake2b)."""
import hashlib

import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data.shard import blockdist

ALGORITHM = "sha256 per block of block_rows rows (stored dtype, C order); sha256 of the block digests in order"
BLOCK_BYTES = 4 << 20


def default_block_rows(row_bytes):
    """Rows per checksum block for rows of row_bytes bytes: blocks of about BLOCK_BYTES."""
    return max(1, BLOCK_BYTES // max(1, int(row_bytes)))


def block_digest(rows):
    """The digest of one block: the bytes of `rows` as stored (C order)."""
    return hashlib.sha256(np.ascontiguousarray(rows)).digest()


def combine(digests):
    """The checksum (hex) of a data set from its block digests in index order."""
    return hashlib.sha256(b"".join(digests)).hexdigest()


def block_digests(rows, block_rows):
    """Digests of `rows` (a whole number of blocks, or ending with the data set's last, short one)."""
    return [block_digest(rows[first:first + block_rows]) for first in range(0, len(rows), block_rows)]


def rank_rows(num_rows, block_rows, size, rank):
    """(start, stop) of rank's rows: a contiguous run of whole blocks (blockdist over the blocks)."""
    blocks = -(-int(num_rows) // int(block_rows))
    count, first = blockdist(blocks, size, rank)
    return min(num_rows, first * block_rows), min(num_rows, (first + count) * block_rows)


def merged(parts):
    """{name: checksum} from each rank's {name: [block digests of its rows]}, in rank order (ascending rows)."""
    return {name: combine([d for part in parts for d in part[name]]) for name in sorted(parts[0])}


def gathered(comm, digests):
    """Collective: merged() of every rank's `digests`, on every rank."""
    return merged(mpi.allgather_object(comm, digests))


class RowHasher:
    """Block digests of rows written one after another in pieces of any size (a serial writer)."""

    def __init__(self, block_rows):
        self.block_rows, self.digests = int(block_rows), []
        self.current, self.filled = hashlib.sha256(), 0

    def add(self, rows):
        rows = np.ascontiguousarray(rows)
        position = 0
        while position < len(rows):
            take = min(len(rows) - position, self.block_rows - self.filled)
            self.current.update(rows[position:position + take])
            position, self.filled = position + take, self.filled + take
            if self.filled == self.block_rows:
                self.digests.append(self.current.digest())
                self.current, self.filled = hashlib.sha256(), 0

    def checksum(self):
        """The data set's checksum (hex) once every row was added."""
        tail = [self.current.digest()] if self.filled else []
        return combine(self.digests + tail)
