"""`hpcrnn check FILE`: the full parallel scan of a data file's values (each rank its blocks), a checksum of
each data set compared with the file's stamp when it has a valid one, and with --stamp a new stamp written by
rank 0 once every rank agrees the file is clean. Any problem is one DataError raised on every rank."""
import h5py

from hpcrnn import comm as mpi
from hpcrnn.data import checksum, scan, stamp
from hpcrnn.data.parallel import attempt
from hpcrnn.data.read_mode import datasets_read
from hpcrnn.data.schema import check_classes, describe
from hpcrnn.errors import DataError


def _stored(path):
    with h5py.File(path, "r") as handle:
        found, note = stamp.read(handle)
        return found, note, stamp.layout_of(handle), stamp.checks_for(handle)


def check_file(path, comm, write_stamp=False, force=False):
    """Scans path; returns the one-line summary (the same on every rank). force: with write_stamp, stamp
    even when the values no longer match the stored checksums (they were changed on purpose)."""
    info, message = attempt(path, describe, path)
    mpi.agree(comm, message, DataError)
    (stored, note, layout, checks), message = attempt(path, _stored, path)
    mpi.agree(comm, message, DataError)
    names = datasets_read(info)
    comparable = stored is not None and stored.block_rows > 0 and stored.algorithm == checksum.ALGORITHM
    if stored is not None and stored.digests and not comparable:
        note = f"its stamp's checksums ({stored.algorithm}) are not comparable with {checksum.ALGORITHM}"
    block_rows = stored.block_rows if comparable else 0
    if not block_rows:
        block_rows = checksum.default_block_rows(scan.row_bytes(info, names[0]))
    findings = scan.scan_file(info, comm, check_finite=True, block_rows=block_rows)
    mpi.agree(comm, scan.verdict(info, findings), DataError)
    if info.task == "classification":
        mpi.agree(comm, attempt(path, check_classes, info, int(findings["label_max"]) + 1)[1], DataError)
    digests = findings["digests"]
    changed = [name for name in names if comparable and name in stored.digests
               and stored.digests[name] != digests[name]]
    if changed and not (write_stamp and force):
        name = changed[0]
        raise DataError(f"{path}: /{name} checksum {digests[name]} does not match the stamp's "
                        f"{stored.digests[name]}: its values changed after the file was stamped "
                        f"(hpcrnn check --stamp --force stamps the values as they are now)")
    summary = (f"{path}: clean: {info.num_rows if info.form == 'series' else info.num_samples} "
               f"{'rows' if info.form == 'series' else 'samples'} checked ({', '.join(checks)}) on {comm.size} "
               f"rank(s); checksums " + " ".join(f"/{name} {digests[name]}" for name in names))
    if comparable and not changed:
        summary += f"; they match the stamp ({stored.by})"
    elif note:
        summary += f"; note: {note}"
    if write_stamp:
        label_max = int(findings["label_max"]) if info.task == "classification" else -1
        record = stamp.Stamp(checks, layout, label_max, block_rows, digests, stamp.made_by("check"))
        mpi.agree(comm, _write(path, record) if comm.rank == 0 else None, DataError)
        summary += "; stamped"
    return summary


def _write(path, record):
    """stamp.write; returns None, or a one-line message when the file cannot be written."""
    try:
        stamp.write(path, record)
    except OSError as error:
        return f"{path}: cannot be stamped ({' '.join(str(error).split())})"
    return None
