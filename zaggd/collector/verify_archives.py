"""`zaggd verify`: each archive against its manifest, and the chain of archives.

An archive is checked as stored (size, SHA-256) and as content (uncompressed
size, SHA-256, line count); its ranges go to the stream check. An archive
holding lines but no ranges holds output nothing accounts for; one in `raw`
format holding more bytes than its ranges cover (beyond the newlines a
producer adds to split long lines) holds bytes twice.
"""

from __future__ import annotations

import itertools
import os

from zaggd.collector.contents import digest_archive, split_newlines
from zaggd.collector.manifest import (
    GZIP_SUFFIX,
    MANIFEST_SUFFIX,
    Manifest,
    RotatedName,
    load_manifest,
)
from zaggd.collector.verify_report import Folder, Problem, Report, holding
from zaggd.logs import shown
from zaggd.statefile import Damaged


def check_manifest(here: Folder, parsed: RotatedName, report: Report) -> None:
    mpath = here.join(parsed.base + MANIFEST_SUFFIX)
    try:
        manifest = load_manifest(mpath)
    except Damaged as exc:
        report.add(Problem.ALTERED, mpath, f"damaged manifest: {exc}")
        report.add_unknown(here.path, parsed.live, parsed.stamp_us)
        return
    except OSError as exc:
        report.add(Problem.UNREADABLE, mpath, f"cannot read: {exc.strerror}")
        report.add_unknown(here.path, parsed.live, parsed.stamp_us)
        return
    if manifest.expired:
        return  # retention was deleting it when it stopped
    if manifest.file not in (parsed.base, parsed.base + GZIP_SUFFIX) or manifest.live != (
        parsed.live
    ):
        report.add(
            Problem.ALTERED,
            mpath,
            f"names {shown(manifest.file)} cut from {shown(manifest.live)}, not its own archive",
        )
        report.add_unknown(here.path, parsed.live, parsed.stamp_us)
        return
    here.chains.setdefault(parsed.live, []).append((parsed, manifest))
    report.archives += 1
    path = here.join(manifest.file)
    report.add_pieces(path, manifest.ranges, parsed.stamp_us, (here.path, parsed.live))
    if is_present(here, parsed, manifest, report) and is_intact(path, manifest, report):
        check_accounting(path, manifest, (here.path, parsed.live), parsed.stamp_us, report)


def is_present(here: Folder, parsed: RotatedName, manifest: Manifest, report: Report) -> bool:
    path = here.join(manifest.file)
    plain_left = manifest.file != parsed.base and parsed.base in here.names
    if manifest.file not in here.names:
        if plain_left:
            report.add(
                Problem.INCOMPLETE, path, "compression unfinished (the plain file is still there)"
            )
        else:
            report.add(
                Problem.MISSING,
                path,
                f"listed in {shown(parsed.base)}{MANIFEST_SUFFIX} but not on disk",
            )
        return False
    if plain_left:
        report.add(
            Problem.INCOMPLETE,
            here.join(parsed.base),
            "plain copy beside its archive (compression unfinished)",
        )
    return True


def is_intact(path: str, manifest: Manifest, report: Report) -> bool:
    """Whether the archive is what its manifest says, as stored and as content."""
    try:
        digest = digest_archive(path, manifest.compression == "gzip")
    except OSError as exc:
        report.add(Problem.UNREADABLE, path, f"cannot read: {exc.strerror}")
        return False
    held = holding(manifest.ranges)
    # Shorter and no longer a whole gzip stream: cut off; a whole one was made anew.
    if digest.size < manifest.size and (digest.content_error or manifest.compression != "gzip"):
        report.add(
            Problem.INCOMPLETE, path, f"truncated: {digest.size} of {manifest.size} bytes{held}"
        )
    elif digest.size != manifest.size:
        report.add(
            Problem.ALTERED,
            path,
            f"{digest.size} bytes where the manifest says {manifest.size}{held}",
        )
    elif digest.sha256 != manifest.sha256:
        report.add(Problem.ALTERED, path, f"SHA-256 differs from the manifest{held}")
    elif digest.content_error:
        report.add(Problem.ALTERED, path, f"{digest.content_error}{held}")
    elif digest.content_size != manifest.content_size:
        report.add(
            Problem.ALTERED,
            path,
            f"holds {digest.content_size} bytes uncompressed where the manifest says "
            f"{manifest.content_size}",
        )
    elif digest.content_sha256 != manifest.content_sha256:
        report.add(Problem.ALTERED, path, "uncompressed, its SHA-256 differs from the manifest")
    elif digest.lines != manifest.lines:
        report.add(
            Problem.ALTERED,
            path,
            f"holds {digest.lines} lines where the manifest says {manifest.lines}",
        )
    else:
        return True
    return False


def check_accounting(
    path: str, manifest: Manifest, chain: tuple[str, str], order: float, report: Report
) -> None:
    """Lines no range accounts for: none at all, or in raw format more bytes than ranges."""
    if manifest.lines and not manifest.ranges:
        report.add(Problem.UNINDEXED, path, f"holds {manifest.lines} lines but no stream ranges")
        report.add_unknown(*chain, order)
        return
    if manifest.format != "raw":
        return
    extra = manifest.content_size - sum(end - start for start, end in manifest.ranges.values())
    if extra > 0 and extra > split_newlines(path, manifest.compression == "gzip"):
        report.add(
            Problem.DOUBLED,
            path,
            f"holds {manifest.content_size} bytes, {extra} more than its stream ranges cover: "
            + holding(manifest.ranges, lead=""),
        )


def check_unsealed(here: Folder, report: Report) -> None:
    """Rotated files without a manifest: a seal not done (yet). One whose index checks
    out (check_cut_index, run first) is noted; its bytes are accounted for."""
    for cuts in here.rotated.values():
        for parsed in cuts:
            if parsed.base in here.sealed or parsed.ext not in ("", GZIP_SUFFIX):
                continue
            path = here.join(parsed.base + parsed.ext)
            if parsed.base in here.vouched:
                report.add(
                    Problem.NOTE,
                    path,
                    "rotated, not sealed yet; its index accounts for it "
                    "(the collector seals it now, or at its next start)",
                )
                continue
            if parsed.ext == "":
                report.add(Problem.INCOMPLETE, path, "rotated but not sealed: no manifest yet")
            else:
                report.add(Problem.INCOMPLETE, path, "archive without a manifest")
            report.add_unknown(here.path, parsed.live, parsed.stamp_us)


def check_chain(
    folder: str, links: list[tuple[RotatedName, Manifest]], sealed: set[str], report: Report
) -> None:
    """Archives cut from one live file link back to each other; a broken link is a lost archive.

    Only the oldest may point at an archive that is gone: retention removes the
    oldest first. A link to a base whose manifest is there (even unreadable,
    already reported) is not a loss.
    """
    links.sort(key=lambda pair: pair[0].stamp)
    for (older, _), (newer, manifest) in itertools.pairwise(links):
        previous = manifest.previous
        if previous is not None and previous != older.base and previous not in sealed:
            report.add(
                Problem.MISSING,
                os.path.join(folder, previous),
                f"archive and manifest gone: {shown(newer.base)} follows it, "
                f"{shown(older.base)} precedes it",
            )
