"""The stamp: root attributes saying that a data file's values were checked (what, by which hpcrnn, the
layout of its data sets then, the largest label) with a content checksum per data set. A stamp whose layout
no longer matches the file is ignored. hpcrnn_checked is removed first and written last, so a write that
fails half way leaves a file without a stamp, never one with a wrong stamp."""
import json
import time
from dataclasses import dataclass, field

import h5py
import numpy as np

from hpcrnn.data import checksum

DATASETS = ("inputs", "targets", "labels", "lengths", "series")
CHECKED = "hpcrnn_checked"
PREFIX = "hpcrnn_checksum_"


@dataclass(frozen=True)
class Stamp:
    """What a stamp records (also what a writer hands to write())."""
    checks: tuple                 # e.g. ("finite", "lengths", "labels")
    layout: str                   # JSON {name: [shape, dtype]} of the data sets (layout_of)
    label_max: int = -1           # classification: the largest label; -1 otherwise
    block_rows: int = 0           # checksum block size in rows (0: no checksums)
    digests: dict = field(default_factory=dict)   # data set name -> checksum (hex)
    by: str = ""                  # "hpcrnn 0.1.0 (synth)"
    algorithm: str = checksum.ALGORITHM    # of the digests


def layout_of(handle):
    """JSON of the shape and dtype of each data set of the file (the stamp is valid while it is unchanged)."""
    found = {name: [list(handle[name].shape), handle[name].dtype.str] for name in DATASETS
             if name in handle and isinstance(handle[name], h5py.Dataset)}
    return json.dumps(found, sort_keys=True)


def checks_for(handle):
    """The checks a full scan of this file makes (recorded in the stamp)."""
    return ("finite",) + (("lengths",) if "lengths" in handle else ()) + (("labels",) if "labels" in handle else ())


def read(handle):
    """(Stamp or None, note): None with an empty note when the file has no stamp, None with a note saying why
    when a stamp is there but does not describe the file as it is now."""
    attrs = handle.attrs
    if CHECKED not in attrs:
        return None, ""
    try:
        stamp = Stamp(checks=tuple(str(attrs["hpcrnn_checked_what"]).split(",")),
                      layout=str(attrs["hpcrnn_checked_layout"]),
                      label_max=int(attrs.get("hpcrnn_label_max", -1)),
                      block_rows=int(attrs.get("hpcrnn_checksum_block_rows", 0)),
                      digests={key[len(PREFIX):]: str(attrs[key]) for key in attrs
                               if key.startswith(PREFIX) and key[len(PREFIX):] in DATASETS},
                      by=str(attrs.get("hpcrnn_checked_by", "")),
                      algorithm=str(attrs.get("hpcrnn_checksum_algorithm", "")))
    except (KeyError, ValueError, TypeError):
        return None, "its stamp is incomplete"
    if int(np.asarray(attrs[CHECKED]).reshape(-1)[0]) != 1:
        return None, "its stamp is incomplete"
    if stamp.layout != layout_of(handle):
        return None, (f"its stamp is ignored: the data sets changed shape or type since it was stamped "
                      f"(then {stamp.layout}, now {layout_of(handle)})")
    if set(stamp.checks) != set(checks_for(handle)):
        return None, f"its stamp is ignored: it records the checks {','.join(stamp.checks)} only"
    return stamp, ""


def write(path, stamp):
    """Writes the stamp into the file's root attributes (serially: no other process may have it open)."""
    with h5py.File(path, "r+") as handle:
        attrs = handle.attrs
        for key in [key for key in attrs if key == CHECKED or key.startswith(("hpcrnn_checked_", PREFIX))]:
            del attrs[key]
        attrs.pop("hpcrnn_label_max", None)
        attrs["hpcrnn_checked_what"] = ",".join(stamp.checks)
        attrs["hpcrnn_checked_layout"] = stamp.layout
        attrs["hpcrnn_checked_by"] = stamp.by
        attrs["hpcrnn_checked_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if stamp.label_max >= 0:
            attrs["hpcrnn_label_max"] = np.int64(stamp.label_max)
        if stamp.digests:
            attrs["hpcrnn_checksum_algorithm"] = checksum.ALGORITHM
            attrs["hpcrnn_checksum_block_rows"] = np.int64(stamp.block_rows)
            for name, digest in stamp.digests.items():
                attrs[PREFIX + name] = digest
        handle.flush()
        attrs[CHECKED] = np.int64(1)


def made_by(tool):
    from hpcrnn import __version__
    return f"hpcrnn {__version__} ({tool})"
