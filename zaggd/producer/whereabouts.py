"""Where a stream's file is now, for `zaggd status`.

The tailer follows a file while it holds it or sees it renamed. A stream
that is closed or finished (read to its end, its name deleted) keeps the
last name it was seen under, while logrotate may go on renaming and
compressing it (app.log.1 -> app.log.2 -> app.log.2.gz). Asked for status,
this looks in the stream's folder for the file by inode, then for a
compressed copy by its first bytes; failing both, the last name is kept,
marked as gone. Only status asks, so nothing here runs per block.
"""

from __future__ import annotations

import os

from zaggd.identity import FileId, can_decompress, compressed_head

GONE = " (gone)"


def current_path(path: str, file_id: FileId) -> str:
    """The name `file_id`'s content goes by now: `path`, a sibling, or `path (gone)`."""
    if _is_there(path, file_id):
        return path
    folder = os.path.dirname(path)
    try:
        names = sorted(os.listdir(folder or "."))
    except OSError:
        return path + GONE
    siblings = [os.path.join(folder, name) for name in names]
    for sibling in siblings:
        if sibling != path and _is_there(sibling, file_id):
            return sibling
    fingerprint = file_id.fingerprint
    if fingerprint.size:
        for sibling in siblings:
            if can_decompress(sibling):
                head = compressed_head(sibling, fingerprint.size)
                if head is not None and fingerprint.matches(head):
                    return sibling
    return path + GONE


def _is_there(path: str, file_id: FileId) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return file_id.is_same_inode(st)
