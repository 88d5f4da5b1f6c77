"""Reports for many images: input discovery, a DataLoader that decodes in workers, batched
inference, a resumable JSON-lines file, a CSV summary, and sharding by torchrun rank.

    run_reports(pipe, ["scans/", "more/*.dcm"], out="reports.jsonl", batch_size=8)

The CLI (``python -m crrg report``) is a thin layer over :func:`run_reports`. A rerun with the
same ``out`` skips the images already in it (matched by the ``image`` path) and appends the
rest; images whose earlier line is an error are tried again. Every line is flushed as it is
written, so a crash loses at most the batch in flight; a half-written last line is dropped.
Under ``torchrun`` each rank takes every WORLD_SIZE-th input and writes ``DIR/part-RANK.jsonl``.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from crrg import DISCLAIMER

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".dcm", ".dicom"})
_GLOB_CHARS = frozenset("*?[")


# --- inputs --------------------------------------------------------------------------------------
def looks_like_image(path: Path) -> bool:
    """By extension, else by content: PNG, JPEG, TIFF, WebP, BMP or DICOM magic bytes."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return (head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM"))
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or head[128:132] == b"DICM")


def discover(inputs: Sequence[str | Path]) -> list[str]:
    """Image paths for ``inputs`` in a stable order, each once.

    A file is taken as given (a bad one becomes an error line later); a folder is searched
    recursively for images (:func:`looks_like_image`, sorted); a glob pattern (``*``, ``?``,
    ``[``; ``**`` recurses) expands to its matching files, sorted, and into matching folders.
    A path that does not exist and is no pattern is kept, so that it gets an error line.
    """
    found: list[str] = []
    for item in map(str, inputs):
        path = Path(item).expanduser()
        if path.is_dir():
            found += _walk(path)
        elif path.exists() or not (_GLOB_CHARS & set(item)):
            found.append(str(path) if path.exists() else item)
        else:
            for match in sorted(glob.glob(str(path), recursive=True)):
                m = Path(match)
                found += _walk(m) if m.is_dir() else ([match] if looks_like_image(m) else [])
    return list(dict.fromkeys(found))


def _walk(folder: Path) -> list[str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [str(p) for p in files if looks_like_image(p)]


def shard(paths: Sequence[str], rank: int, world_size: int) -> list[str]:
    """This rank's share: every ``world_size``-th path from ``rank`` (disjoint, covering all)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return list(paths[rank::world_size])


def dist_rank() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as torchrun sets them; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def output_file(out: str | Path, rank: int, world_size: int) -> Path:
    """``out`` itself, or ``out/part-RANK.jsonl`` when ``out`` is a folder (ends with ``/`` or
    exists as one). Several ranks need a folder."""
    text = str(out)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return Path(text) / f"part-{rank}.jsonl"
    if world_size > 1:
        raise ValueError(f"--out {text!r}: with {world_size} processes give a folder (ending in '/'); "
                         "each rank writes part-RANK.jsonl there")
    return Path(text)


# --- the JSON-lines file -------------------------------------------------------------------------
class JsonlLog:
    """Append-only JSON lines, flushed per line, that knows which images it already holds.

    Opening an existing file keeps its complete report lines, drops a truncated last line and
    the error lines (those images are tried again), and rewrites the file only when it dropped
    something (atomically, via a temporary file).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept, dropped = self._read()
        if dropped:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
        self.done: set[str] = {json.loads(line)["image"] for line in kept}
        self._handle: IO[str] = self.path.open("a")

    def _read(self) -> tuple[list[str], int]:
        if not self.path.is_file():
            return [], 0
        kept, dropped = [], 0
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1  # a line cut by a crash
                continue
            if not isinstance(record, dict) or "image" not in record or "error" in record:
                dropped += 1
                continue
            kept.append(line)
        return kept, dropped

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        self.done.add(record["image"])

    def close(self) -> None:
        self._handle.close()

    def records(self) -> Iterator[dict[str, Any]]:
        for line in self.path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)


def write_csv(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """One row per image: image, report, selected regions (``;``-separated), one
    ``label:<prompt>`` column per prompt seen, error. Returns the number of rows."""
    rows = list(records)
    prompts: dict[str, None] = {}
    for record in rows:
        prompts.update(dict.fromkeys(record.get("labels") or {}))
    header = ["image", "report", "selected_regions", *(f"label:{p}" for p in prompts), "error"]
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for record in rows:
            labels = record.get("labels") or {}
            selected = [r["name"] for r in record.get("regions") or [] if r.get("selected")]
            writer.writerow([record["image"], record.get("report", ""), ";".join(selected),
                             *(labels.get(p, "") for p in prompts), record.get("error", "")])
    return len(rows)


# --- decoding in DataLoader workers --------------------------------------------------------------
@dataclass
class Item:
    """One input after decoding: a :class:`crrg.pipeline.Prepared` or the reason it failed."""

    path: str
    prepared: Any = None
    error: str | None = None


class ImageFiles:
    """``torch.utils.data.Dataset`` of image paths -> :class:`Item` (errors travel as items)."""

    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        from crrg.pipeline import prepare

        path = self.paths[index]
        try:
            return Item(path, prepared=prepare(path, self.size))
        except (ValueError, OSError, TypeError) as err:  # ImageError is a ValueError
            return Item(path, error=str(err))
        except Exception as err:  # noqa: BLE001 - any decoder failure is this image's error line,
            return Item(path, error=f"{type(err).__name__}: {err}")  # never the loader's crash


def _as_list(items: list[Item]) -> list[Item]:
    return items


def loader(paths: Sequence[str], size: int, batch_size: int, workers: int) -> Iterable[list[Item]]:
    from torch.utils.data import DataLoader

    workers = workers if len(paths) > 1 else 0  # one image: no worker processes to start
    return DataLoader(ImageFiles(paths, size), batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=_as_list, persistent_workers=False)


# --- the run -------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    total: int  # images of this rank
    skipped: int  # already in the output file
    written: int = 0
    failed: int = 0  # error lines, the rejected ones included
    rejected: int = 0  # not analysed: the input check said it is not a frontal chest radiograph
    out: Path | None = None
    failures: list[str] = field(default_factory=list)


def error_record(path: str, message: str) -> dict[str, Any]:
    return {"image": path, "error": message, "disclaimer": DISCLAIMER}


def rejected_record(path: str, check: Any) -> dict[str, Any]:
    """The line of an image the input check rejected (no report; ``--force`` reports anyway)."""
    return {"image": path, "error": f"not analysed: {check.reason} (--force reports anyway)",
            "input_check": check.to_json(), "disclaimer": DISCLAIMER}


def run_reports(
    pipe: Any,
    inputs: Sequence[str | Path],
    out: str | Path | None = None,
    batch_size: int = 8,
    workers: int = 0,
    prompts: Any = None,
    regions: Sequence[str] | None = None,
    box: Sequence[float] | None = None,
    num_beams: int | None = None,
    csv_path: str | Path | None = None,
    progress: bool = False,
    on_record: Callable[[dict[str, Any], Any], None] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    force: bool = False,
) -> RunSummary:
    """Write a report line for every image of ``inputs`` (this rank's shard) and return counts.

    An image that fails the model's input check (``result.input_check.ok`` false: not a frontal
    chest radiograph) gets ``{"image", "error", "input_check"}`` and no report, unless ``force``
    (then its report line keeps ``input_check``). Like every error line it is dropped from the
    output file and tried again on a resumed run: without ``force`` the check rejects it again
    (same weights, same verdict, one more forward pass), but a rerun with ``--force``, or with
    weights whose checker changed, can then report it instead of skipping it as done.

    ``on_record(record, result)`` sees each line as it is written (``result`` is the
    :class:`crrg.types.ReportResult`, or ``None`` for an error line): the CLI prints with it.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if rank is None or world_size is None:
        rank, world_size = dist_rank()
    paths = shard(discover(inputs), rank, world_size)
    log = JsonlLog(output_file(out, rank, world_size)) if out is not None else None
    todo = [p for p in paths if log is None or p not in log.done]
    summary = RunSummary(total=len(paths), skipped=len(paths) - len(todo), out=log.path if log else None)
    kept: list[dict[str, Any]] = []  # the CSV's rows when there is no output file to read back

    def emit(record: dict[str, Any], result: Any) -> None:
        if log is not None:
            log.write(record)
        elif csv_path is not None:
            kept.append(record)
        if on_record is not None:
            on_record(record, result)
        if "error" in record:
            summary.failed += 1
            summary.rejected += "input_check" in record
            summary.failures.append(record["image"])
        else:
            summary.written += 1

    bar = tqdm(total=len(todo), unit="img", file=sys.stderr, dynamic_ncols=True,
               disable=not (progress or sys.stderr.isatty()), desc=f"rank {rank}" if world_size > 1 else None)
    try:
        for items in (loader(todo, pipe.config.image_size, batch_size, workers) if todo else []):
            good = [item for item in items if item.error is None]
            results = _infer(pipe, good, prompts, regions, box, num_beams) if good else {}
            for item in items:
                if item.error is not None:
                    emit(error_record(item.path, item.error), None)
                    continue
                result = results[item.path]
                if isinstance(result, str):
                    emit(error_record(item.path, result), None)
                    continue
                check = getattr(result, "input_check", None)
                if check is not None and not check.ok and not force:
                    emit(rejected_record(item.path, check), None)
                    continue
                record = result.to_json()
                record["image"] = item.path
                emit(record, result)
            bar.update(len(items))
    finally:
        bar.close()
        if log is not None:
            log.close()
    if csv_path is not None:
        csv_file = Path(csv_path)
        if world_size > 1:
            csv_file = csv_file.with_name(f"{csv_file.stem}.part-{rank}{csv_file.suffix or '.csv'}")
        write_csv(log.records() if log is not None else kept, csv_file)
    return summary


def _infer(pipe: Any, items: list[Item], prompts: Any, regions: Any, box: Any, beams: Any) -> dict[str, Any]:
    """path -> ReportResult, or -> error message; a failing batch is retried image by image so
    that one bad input cannot take the others with it."""
    kwargs = {"prompts": prompts, "regions": regions, "box": box, "num_beams": beams}
    try:
        results = pipe.batch([item.prepared for item in items], **kwargs)
        return {item.path: result for item, result in zip(items, results)}
    except (ValueError, KeyError, RuntimeError) as err:
        if len(items) == 1:
            return {items[0].path: f"{type(err).__name__}: {err}"}
    return {k: v for item in items for k, v in _infer(pipe, [item], prompts, regions, box, beams).items()}
