"""Reports for many images: input discovery, a DataLoader that decodes in workers, batched
inference, a resumable JSON-lines file, a CSV summary, and sharding by torchrun rank.

    run_reports(pipe, ["scans/", "more/*.dcm"], ReportOptions(out="reports.jsonl", batch_size=8))

The CLI (``python -m crrg report``) is a thin layer over :func:`run_reports`. A rerun with the
same ``out`` skips the images already in it (matched by the ``image`` path) and appends the
rest; images whose earlier line is an error are tried again. Every line is flushed as it is
written, so a crash loses at most the batch in flight; a half-written last line is dropped.
Under ``torchrun`` each rank takes every WORLD_SIZE-th input and writes ``DIR/part-RANK.jsonl``;
the ranks then agree on one exit status (:mod:`crrg.shards`), so no rank ends the job early.

Results stay typed until they are written: a line is a :class:`crrg.types.ReportResult` or a
:class:`Failure` (unreadable, rejected by the input check, or a model error), and ``to_json`` of
either is the JSON line and the CSV row.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import IO, Any

from crrg import DISCLAIMER
from crrg.shards import dist_rank, shard
from crrg.types import InputCheck, ReportResult

__all__ = ["Failure", "FailureKind", "JsonlLog", "ReportOptions", "RunSummary", "default_workers", "discover",
           "dist_rank", "looks_like_image", "output_file", "run_reports", "shard", "write_csv"]

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


# --- what a run writes ---------------------------------------------------------------------------
class FailureKind(str, Enum):
    """Why an image got no report."""

    UNREADABLE = "unreadable"  # missing, not an image, cut short, too large or too small
    REJECTED = "rejected"  # the input check: not a frontal chest radiograph (``force`` reports it)
    ERROR = "error"  # the model failed on this image


@dataclass(frozen=True)
class Failure:
    """An image without a report: its line is ``{"image", "error", ["input_check",] "disclaimer"}``."""

    image: str
    kind: FailureKind
    message: str
    input_check: InputCheck | None = None  # the verdict, for REJECTED

    @classmethod
    def rejected(cls, image: str, check: InputCheck) -> Failure:
        return cls(image, FailureKind.REJECTED, f"not analysed: {check.reason} (--force reports anyway)", check)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "error": self.message}
        if self.input_check is not None:
            out["input_check"] = self.input_check.to_json()
        out["disclaimer"] = DISCLAIMER
        return out


#: one line of a run: a report, or why there is none
Line = ReportResult | Failure


@dataclass(frozen=True)
class ReportOptions:
    """How :func:`run_reports` runs; the CLI's ``report`` flags."""

    out: str | Path | None = None  # FILE.jsonl, or DIR/ for DIR/part-RANK.jsonl; None: no file
    csv_path: str | Path | None = None  # also a one-row-per-image CSV (CSV.part-RANK.csv per rank)
    batch_size: int = 8  # images per detector / CLIP pass and per generate call
    workers: int = 0  # DataLoader processes decoding images (0: in this process)
    prompts: str | tuple[str, ...] | None = None  # zero-shot labels; None: the model's, (): none
    regions: tuple[str, ...] | None = None  # write sentences for exactly these regions
    box: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 in image pixels
    num_beams: int | None = None  # None: the model's
    force: bool = False  # report the images the input check rejects (their lines keep input_check)
    progress: bool = False  # the progress bar even when stderr is not a terminal
    rank: int | None = None  # None (both): torchrun's RANK and WORLD_SIZE
    world_size: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")
        for name in ("prompts", "regions", "box"):  # lists in, tuples kept: the options stay frozen
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, tuple(value))

    def where(self) -> tuple[int, int]:
        """(rank, world size): the given ones, else torchrun's."""
        if self.rank is None or self.world_size is None:
            return dist_rank()
        return self.rank, self.world_size


@dataclass
class RunSummary:
    """What one rank did."""

    total: int  # images of this rank
    skipped: int  # already in the output file
    written: int = 0
    out: Path | None = None
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Error lines, the rejected ones included."""
        return len(self.failures)

    @property
    def rejected(self) -> int:
        """Not analysed: the input check said it is not a frontal chest radiograph."""
        return sum(f.kind is FailureKind.REJECTED for f in self.failures)


# --- decoding in DataLoader workers --------------------------------------------------------------
@dataclass
class Item:
    """One input after decoding: a :class:`crrg.pipeline.PreparedImage`, or why it could not be read."""

    path: str
    prepared: Any = None
    failure: Failure | None = None


class ImageFiles:
    """``torch.utils.data.Dataset`` of image paths -> :class:`Item` (failures travel as items)."""

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
            message = str(err)
        except Exception as err:  # noqa: BLE001 - any decoder failure is this image's error line,
            message = f"{type(err).__name__}: {err}"  # never the loader's crash
        return Item(path, failure=Failure(path, FailureKind.UNREADABLE, message))


def _as_list(items: list[Item]) -> list[Item]:
    return items


def default_workers() -> int:
    """Decoding worker processes that pay off here: the cores that torch's threads (of every
    process on this node, under torchrun) leave free, at most 2.

    Decoding is about 2 ms of a 100 ms image (at ``--batch-size 8``, 384 px). On a machine whose
    cores all run torch's threads, workers only compete with them (and each starts by forking the
    model's process): on the 2-core machine, 64 mixed images in one process ran at 10.0 to 10.3
    images/s, with 2 workers at 8.5 to 9.1 (three alternating runs each). With spare cores the
    workers decode while the model runs.
    """
    import torch

    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(2, (os.cpu_count() or 1) - processes * torch.get_num_threads()))


def loader(paths: Sequence[str], size: int, batch_size: int, workers: int) -> Iterable[list[Item]]:
    from torch.utils.data import DataLoader

    workers = workers if len(paths) > 1 else 0  # one image: no worker processes to start
    return DataLoader(ImageFiles(paths, size), batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=_as_list, persistent_workers=False)


# --- the run -------------------------------------------------------------------------------------
class _Sink:
    """Writes each line (JSON at the file boundary), counts it, and hands it to ``on_record``."""

    def __init__(self, summary: RunSummary, log: JsonlLog | None, keep: bool,
                 on_record: Callable[[Line], None] | None) -> None:
        self.summary, self.log, self.keep, self.on_record = summary, log, keep, on_record
        self.kept: list[Line] = []  # the CSV's rows when there is no output file to read back

    def emit(self, line: Line) -> None:
        if self.log is not None:
            self.log.write(line.to_json())
        elif self.keep:
            self.kept.append(line)
        if self.on_record is not None:
            self.on_record(line)
        if isinstance(line, Failure):
            self.summary.failures.append(line)
        else:
            self.summary.written += 1


def run_reports(pipe: Any, inputs: Sequence[str | Path], options: ReportOptions | None = None, *,
                on_record: Callable[[Line], None] | None = None, **overrides: Any) -> RunSummary:
    """Write a line for every image of ``inputs`` (this rank's shard) and return the counts.

    ``options`` (:class:`ReportOptions`) with ``overrides`` applied (``run_reports(pipe, ["scans/"],
    out="r.jsonl")`` is ``run_reports(pipe, ["scans/"], ReportOptions(out="r.jsonl"))``).

    An image that fails the model's input check (``result.input_check.ok`` false: not a frontal
    chest radiograph) gets a :class:`Failure` line (``{"image", "error", "input_check"}``) and no
    report, unless ``force`` (then its report line keeps ``input_check``). Like every error line
    it is dropped from the output file and tried again on a resumed run: without ``force`` the
    check rejects it again (same weights, same verdict, one more forward pass), but a rerun with
    ``--force``, or with weights whose checker changed, can then report it instead of skipping it.

    ``on_record(line)`` sees each line as it is written, a :class:`crrg.types.ReportResult` or a
    :class:`Failure` (the CLI prints with it). Under torchrun the caller ends with
    :func:`crrg.shards.agree`, so that no rank ends the job while another still works.
    """
    from tqdm import tqdm

    opts = replace(options or ReportOptions(), **overrides)
    rank, world_size = opts.where()
    paths = shard(discover(inputs), rank, world_size)
    log = JsonlLog(output_file(opts.out, rank, world_size)) if opts.out is not None else None
    todo = [p for p in paths if log is None or p not in log.done]
    summary = RunSummary(total=len(paths), skipped=len(paths) - len(todo), out=log.path if log else None)
    sink = _Sink(summary, log, keep=opts.csv_path is not None, on_record=on_record)
    bar = tqdm(total=len(todo), unit="img", file=sys.stderr, dynamic_ncols=True,
               disable=not (opts.progress or sys.stderr.isatty()), desc=f"rank {rank}" if world_size > 1 else None)
    try:
        for items in (loader(todo, pipe.config.image_size, opts.batch_size, opts.workers) if todo else []):
            for line in _lines(pipe, items, opts):
                sink.emit(line)
            bar.update(len(items))
    finally:
        bar.close()
        if log is not None:
            log.close()
    if opts.csv_path is not None:
        csv_file = Path(opts.csv_path)
        if world_size > 1:
            csv_file = csv_file.with_name(f"{csv_file.stem}.part-{rank}{csv_file.suffix or '.csv'}")
        write_csv(log.records() if log is not None else (line.to_json() for line in sink.kept), csv_file)
    return summary


def _lines(pipe: Any, items: list[Item], opts: ReportOptions) -> Iterator[Line]:
    """The line of each decoded item, in order: its report, or its failure."""
    good = [item for item in items if item.failure is None]
    results = _infer(pipe, good, opts) if good else {}
    for item in items:
        line = item.failure or results[item.path]
        if isinstance(line, ReportResult):
            check = line.input_check
            if check is not None and not check.ok and not opts.force:
                line = Failure.rejected(item.path, check)
            elif line.image != item.path:
                line = replace(line, image=item.path)  # the path as discovered, to match on resume
        yield line


def _infer(pipe: Any, items: list[Item], opts: ReportOptions) -> dict[str, ReportResult | Failure]:
    """path -> ReportResult, or -> its Failure; a failing batch is retried image by image so
    that one bad input cannot take the others with it."""
    try:
        results = pipe.batch([item.prepared for item in items], prompts=opts.prompts, regions=opts.regions,
                             box=opts.box, num_beams=opts.num_beams)
        return {item.path: result for item, result in zip(items, results)}
    except (ValueError, KeyError, RuntimeError) as err:
        if len(items) == 1:
            return {items[0].path: Failure(items[0].path, FailureKind.ERROR, f"{type(err).__name__}: {err}")}
    return {k: v for item in items for k, v in _infer(pipe, [item], opts).items()}
