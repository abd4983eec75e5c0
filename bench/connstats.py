"""Guest helper of bench/guest.sh: the GET_STATS counters of every connection of one session.

    python bench/connstats.py SID LABEL

prints one line per connection (the CIDs under /sys/class/iscsi_connection, in order):
    LABEL cid=C scsicmd_pdus=N scsirsp_pdus=N datain_pdus=N ...   (every counter the kernel sent)
Exit status 1 (and why on stderr) if the session has no connection or a GET_STATS fails.
Needs our iscsi_if module loaded and root (the iscsi_if netlink family).
"""

from __future__ import annotations

import sys

from pyiscsid import sysfs
from pyiscsid.errors import IscsiError
from pyiscsid.netlink import IscsiNetlink


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdecimal():
        print("usage: connstats.py SID LABEL", file=sys.stderr)
        return 2
    sid, label = int(argv[0]), argv[1]
    cids = sysfs.connection_ids(sid)
    if not cids:
        print(f"connstats: session {sid} has no connection in sysfs", file=sys.stderr)
        return 1
    lines = []
    try:
        with IscsiNetlink() as nl:
            for cid in cids:
                stats = nl.get_stats(sid, cid)
                kv = " ".join(f"{k.name.lower()}={v}" for k, v in sorted(stats.items()))
                lines.append(f"{label} cid={cid} {kv}")
    except (IscsiError, OSError) as e:
        print(f"connstats: GET_STATS of session {sid}: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
