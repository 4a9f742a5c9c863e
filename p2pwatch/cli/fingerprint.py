"""``p2pwatch fingerprint FILE… -o OUT`` (docs/CLI.md): hash-only fingerprints of local files.

OUT decides the layout:

* a name ending in ``.json`` gets one JSON document holding a *list* of fingerprints (one per FILE, in order);
* anything else is a directory (created when missing) that gets one ``<sha256>.json`` per FILE, named by
  content id so that no file name leaks into the listing and identical files land on one fingerprint.

Either form imports with ``p2pwatch register`` or :func:`p2pwatch.fingerprint.load_fingerprints`. Every FILE
is checked before any is hashed; a file whose media cannot be decoded is still fingerprinted (its hashes)
and gets a note on stderr. ``--json`` prints one summary document; a progress bar shows on a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from p2pwatch.cli.options import emit_json, handle_errors
from p2pwatch.errors import ConfigError
from p2pwatch.match.fingerprint import Fingerprint, ProgressCallback, fingerprint_file
from p2pwatch.match.local_files import check_regular_file


def summary(fp: Fingerprint, file: str, output: str) -> dict[str, Any]:
    """One ``--json`` entry: the ids and what the perceptual part holds, never content."""
    media: dict[str, Any] | None = None
    if fp.media is not None:
        media = {"width": fp.media.width, "height": fp.media.height, "duration": fp.media.duration,
                 "codec": fp.media.codec, "frames": len(fp.media.frame_hashes),
                 "phash": None if fp.media.image_phash is None else f"{fp.media.image_phash:016x}",
                 "pdq": None if fp.media.image_pdq is None else fp.media.image_pdq.hex()}
    return {"file": file, "id": fp.fingerprint_id, "size": fp.size, "kind": fp.kind.value, "md5": fp.md5,
            "sha1": fp.sha1, "sha256": fp.sha256, "pieces_root": fp.pieces_root().hex(),
            "v1_piece_lengths": sorted(fp.v1_piece_tables), "media": media, "media_error": fp.media_error,
            "output": output}


def _write_atomic(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".fingerprint-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
            handle.write("\n")
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


@contextmanager
def _progress(show: bool, total_bytes: int) -> Iterator[tuple[ProgressCallback | None, Any]]:
    if not show:
        yield None, None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("hashing", total=total_bytes)
        state = {"base": 0}

        def callback(done: int, _total: int) -> None:
            bar.update(task, completed=state["base"] + done)

        yield callback, (bar, task, state)


@click.command("fingerprint")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="a .json file (one list) or a directory (one <sha256>.json per file)")
@click.option("--no-media", is_flag=True, help="skip perceptual hashing of images and videos")
@click.option("--no-name", is_flag=True, help="leave the file's base name out of the fingerprint")
@click.option("--json", "as_json", is_flag=True, help="print one JSON summary document")
@handle_errors
def fingerprint(files: tuple[Path, ...], output: Path, no_media: bool, no_name: bool, as_json: bool) -> None:
    """Fingerprint FILEs: hashes only (no content, no thumbnails), importable with `register`."""
    as_list = output.suffix.lower() == ".json" and not output.is_dir()
    if not as_list and output.exists() and not output.is_dir():
        raise ConfigError(f"-o {output}: exists and is not a directory (a list output must end in .json)")
    sizes = []
    for file in files:
        sizes.append(check_regular_file(file))
    show = sys.stderr.isatty() and sys.stdout.isatty() and not as_json
    results: list[tuple[Path, Fingerprint]] = []
    with _progress(show, sum(sizes)) as (callback, bar):
        for file, size in zip(files, sizes, strict=True):
            if bar is not None:
                bar[0].update(bar[1], description=f"hashing {file.name}")
            fp = fingerprint_file(file, media=not no_media, progress=callback, keep_name=not no_name)
            if bar is not None:
                bar[2]["base"] += size
            results.append((file, fp))
            if fp.media_error:
                click.echo(f"p2pwatch: note: {file}: no perceptual hash ({fp.media_error}); the exact "
                           f"hashes are kept", err=True)
    outputs: list[str] = []
    if as_list:
        _write_atomic(output, [fp.to_json() for _, fp in results])
        outputs = [str(output)] * len(results)
    else:
        for _, fp in results:
            target = output / f"{fp.fingerprint_id}.json"
            _write_atomic(target, fp.to_json())
            outputs.append(str(target))
    rows = [summary(fp, str(file), out) for (file, fp), out in zip(results, outputs, strict=True)]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        extra = ""
        if row["media"] is not None:
            extra = f"  {row['media']['width']}x{row['media']['height']}"
            if row["kind"] == "video":
                extra += f"  {row['media']['frames']} frame hashes"
        click.echo(f"{row['sha256']}  {row['size']:>12}  {row['kind']:<5}  {row['file']}{extra}")
    click.echo(f"wrote {len(rows)} fingerprint{'s' if len(rows) != 1 else ''} to {output}")
