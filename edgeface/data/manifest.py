"""Labelled photo sets: a CSV manifest or a folder per person.

CSV::

    image,identity,emotion,gender
    images/000093.jpg,celeb_07399,neutral,female
    /abs/path/to/photo.jpg,Maya,,female        <- empty field: label unknown

Image paths are relative to the CSV's folder, or absolute.

Folder (for people who only have photos sorted by person)::

    photos/
      Maya/IMG_001.jpg              identity Maya, emotion unknown
      Maya/happy/IMG_002.jpg        identity Maya, emotion happy
      Maya/neutral/IMG_003.jpg      identity Maya, emotion neutral
      people.csv                    optional: identity,gender  (gender is a property of the person)

Loading never drops anything silently: every row that is not used is recorded as a ``Problem`` naming the file
and row, and ``check_dataset`` adds what only reading the images can find.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

from edgeface.core.errors import DataError, one_line
from edgeface.core.fileio import read_text_input
from edgeface.core.imageio import IMAGE_SUFFIXES
from edgeface.core.spec import ATTRIBUTE_LABELS, HEADS

CSV_COLUMNS = ("image", "identity", "emotion", "gender")
PEOPLE_FILE = "people.csv"


@dataclass(frozen=True)
class Sample:
    """One labelled photo. A label of ``None`` means unknown: that head ignores the photo."""

    image: Path
    identity: str | None = None
    emotion: str | None = None
    gender: str | None = None
    where: str = ""  # "labels.csv:12" or the file path, for messages

    def label(self, head: str) -> str | None:
        return getattr(self, head)


@dataclass(frozen=True)
class Problem:
    level: Literal["error", "warning"]
    where: str
    message: str

    def __str__(self) -> str:
        return one_line(f"{self.level}: {self.where}: {self.message}")


@dataclass(frozen=True)
class Dataset:
    """Samples plus the problems met while reading them."""

    samples: tuple[Sample, ...]
    source: Path
    problems: tuple[Problem, ...] = ()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    def labels(self, head: str) -> tuple[str, ...]:
        """The label vocabulary of a head: fixed for emotion and gender, the people present for identity."""
        if head in ATTRIBUTE_LABELS:
            return ATTRIBUTE_LABELS[head]
        return tuple(sorted({s.identity for s in self.samples if s.identity is not None}))

    def counts(self, head: str) -> Counter[str]:
        return Counter(label for s in self.samples if (label := s.label(head)) is not None)

    def subset(self, samples: Iterable[Sample], source: Path | None = None) -> "Dataset":
        return Dataset(tuple(samples), source or self.source, ())

    def fingerprint(self) -> str:
        """A short hash of the rows and the sizes of their files: which data a model was trained on."""
        digest = hashlib.sha256()
        for s in sorted(self.samples, key=lambda s: str(s.image)):
            try:
                size = s.image.stat().st_size
            except OSError:
                size = -1
            digest.update(f"{s.image.name}|{s.identity}|{s.emotion}|{s.gender}|{size}\n".encode())
        return digest.hexdigest()[:16]

    def raise_for_errors(self) -> None:
        """Stop with the first error (one line) and how many more there are."""
        errors = self.errors
        if errors:
            more = f" (and {len(errors) - 1} more; run `edgeface data check {self.source}`)" if len(errors) > 1 else ""
            raise DataError(f"{errors[0].where}: {errors[0].message}{more}")


def _normalise(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _check_attribute(head: str, value: str | None, where: str, problems: list[Problem]) -> str | None:
    if value is None:
        return None
    lowered = value.lower()
    if lowered not in ATTRIBUTE_LABELS[head]:
        problems.append(Problem("error", where, f"unknown {head} label {value!r} (expected one of "
                                                f"{', '.join(ATTRIBUTE_LABELS[head])}, or empty for unknown)"))
        return None
    return lowered


MAX_CSV_BYTES = 256 << 20
MAX_CSV_ROWS = 1_000_000  # each row costs about 1 KB in memory; CelebA, all of it, has 202,599


def _csv_reader(path: Path) -> csv.DictReader:
    """A reader over the whole file, read as UTF-8 (bytes that are not are one DataError naming the line)."""
    return csv.DictReader(io.StringIO(read_text_input(path, MAX_CSV_BYTES, DataError, "CSV file"), newline=""))


@contextlib.contextmanager
def _csv_errors(path: Path, reader: csv.DictReader) -> Iterator[None]:
    """Malformed CSV (a field over csv's 128 KiB limit, a stray quote) as one DataError naming the line."""
    try:
        yield
    except csv.Error as exc:
        # line_num counts the lines parsed whole: the bad one is the next.
        raise DataError(f"{path}:{reader.line_num + 1}: not a readable CSV row ({exc})") from None


def load_csv(path: Path) -> Dataset:
    problems: list[Problem] = []
    samples: list[Sample] = []
    seen: dict[Path, str] = {}
    reader = _csv_reader(path)
    with _csv_errors(path, reader):
        header = [c.strip() for c in (reader.fieldnames or [])]
        if "image" not in header:
            raise DataError(f"{path}:1: no 'image' column (header is {','.join(header) or 'empty'}; "
                            f"expected {','.join(CSV_COLUMNS)})")
        unknown_columns = [c for c in header if c not in CSV_COLUMNS]
        if unknown_columns:
            problems.append(Problem("warning", f"{path.name}:1", f"ignoring column(s) {', '.join(unknown_columns)}"))
        reader.fieldnames = header
        for line, row in enumerate(reader, start=2):
            if line > MAX_CSV_ROWS + 1:
                raise DataError(f"{path}:{line}: more than {MAX_CSV_ROWS:,} rows: split the photo set")
            where = f"{path.name}:{line}"
            image = _normalise(row.get("image"))
            if image is None:
                problems.append(Problem("error", where, "empty image path"))
                continue
            if "\0" in image:
                raise DataError(f"{path}:{line}: the image path contains a NUL byte: not a text CSV file")
            image_path = Path(image) if Path(image).is_absolute() else path.parent / image
            try:
                image_path = Path(str(image_path.resolve()) if image_path.exists() else image_path.absolute())
            except OSError as exc:  # a name longer than the file system allows, a loop of links
                problems.append(Problem("error", where, f"{image[:80]}: not a usable path ({exc.strerror or exc})"))
                continue
            if image_path in seen:
                problems.append(Problem("error", where, f"duplicate row: {image} is already listed at {seen[image_path]}"))
                continue
            seen[image_path] = where
            errors_before = len(problems)
            emotion = _check_attribute("emotion", _normalise(row.get("emotion")), where, problems)
            gender = _check_attribute("gender", _normalise(row.get("gender")), where, problems)
            if len(problems) > errors_before:
                continue
            samples.append(Sample(image_path, _normalise(row.get("identity")), emotion, gender, where))
    return Dataset(tuple(samples), path, tuple(problems))


def load_folder(root: Path) -> Dataset:
    problems: list[Problem] = []
    genders: dict[str, str] = {}
    people_file = root / PEOPLE_FILE
    if people_file.is_file():
        people = load_csv_people(people_file, problems)
        genders.update(people)
    samples: list[Sample] = []
    for person_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        person = person_dir.name
        for image in sorted(person_dir.rglob("*")):
            if not image.is_file() or image.name.startswith("."):
                continue
            where = str(image.relative_to(root))
            if image.suffix.lower() not in IMAGE_SUFFIXES:
                problems.append(Problem("warning", where, f"not an image file ({image.suffix or 'no suffix'}); skipped"))
                continue
            relative = image.relative_to(person_dir).parts
            emotion = None
            if len(relative) > 1:
                emotion = _check_attribute("emotion", relative[0], where, problems)
                if emotion is None:
                    continue
            samples.append(Sample(image.absolute(), person, emotion, genders.get(person), where))
    named_people = {s.identity for s in samples}
    for person in sorted(set(genders) - named_people):
        problems.append(Problem("warning", f"{PEOPLE_FILE}", f"{person!r} has no folder of photos"))
    return Dataset(tuple(samples), root, tuple(problems))


def load_csv_people(path: Path, problems: list[Problem]) -> dict[str, str]:
    genders: dict[str, str] = {}
    reader = _csv_reader(path)
    with _csv_errors(path, reader):
        if not reader.fieldnames or "identity" not in reader.fieldnames:
            raise DataError(f"{path}:1: expected columns identity,gender")
        for line, row in enumerate(reader, start=2):
            where = f"{path.name}:{line}"
            person = _normalise(row.get("identity"))
            gender = _check_attribute("gender", _normalise(row.get("gender")), where, problems)
            if person and gender:
                genders[person] = gender
    return genders


def load_dataset(path: str | Path) -> Dataset:
    """Read a CSV manifest or a folder of per-person folders. Problems are recorded, not raised."""
    path = Path(path)
    if path.is_dir():
        return load_folder(path)
    if path.is_file():
        return load_csv(path)
    raise DataError(f"{path}: no such file or folder")


# --- splitting -----------------------------------------------------------------------------------------

def _stable_rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_dataset(dataset: Dataset, fraction: float = 0.3, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split each person's photos ``1 - fraction`` / ``fraction``, deterministically for a seed.

    Every person with two or more photos lands in both parts, so identity accuracy on the second part is
    measured on people the model has seen, on photos it has not. The order of a person's photos is a hash of
    the seed and file name, so adding a person does not move anyone else's photos.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be between 0 and 1, got {fraction}")
    by_person: dict[str | None, list[Sample]] = {}
    for sample in dataset.samples:
        by_person.setdefault(sample.identity, []).append(sample)
    first: list[Sample] = []
    second: list[Sample] = []
    for person, samples in by_person.items():
        ranked = sorted(samples, key=lambda s: _stable_rank(seed, f"{person}/{s.image.name}"))
        if person is None:  # no identity: split photo by photo
            cut = round(len(ranked) * (1 - fraction))
        elif len(ranked) < 2:
            cut = len(ranked)
        else:
            cut = min(max(round(len(ranked) * (1 - fraction)), 1), len(ranked) - 1)
        first.extend(ranked[:cut])
        second.extend(ranked[cut:])
    order = {s.image: i for i, s in enumerate(dataset.samples)}
    first.sort(key=lambda s: order[s.image])
    second.sort(key=lambda s: order[s.image])
    return dataset.subset(first), dataset.subset(second)


def write_csv(samples: Sequence[Sample], path: str | Path) -> Path:
    """Write samples as a manifest; image paths are written relative to the CSV when they are below it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for s in samples:
            try:
                image = s.image.resolve().relative_to(base).as_posix()
            except ValueError:
                image = str(s.image.resolve())
            writer.writerow([image, s.identity or "", s.emotion or "", s.gender or ""])
    return path


# --- checking ------------------------------------------------------------------------------------------

@dataclass
class CheckReport:
    """What ``edgeface data check`` prints."""

    source: Path
    rows: int  # usable rows (rows with label errors are counted among the problems instead)
    readable: int
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    photos_per_person: Counter[str] = field(default_factory=Counter)
    unreadable: list[Sample] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]


def check_dataset(dataset: Dataset, min_photos: int = 2, read_images: bool = True,
                  progress: bool = False) -> CheckReport:
    """Everything wrong with a dataset: label errors from loading, plus unreadable images and thin classes."""
    from edgeface.core.errors import ImageError
    from edgeface.core.imageio import read_image

    report = CheckReport(dataset.source, rows=len(dataset.samples), readable=0)
    report.problems.extend(dataset.problems)
    samples: Iterable[Sample] = dataset.samples
    if read_images and progress:
        from edgeface.core.progress import progress_bar
        samples = progress_bar(dataset.samples, desc="reading images", unit="img")
    for sample in samples:
        if not read_images:
            if not sample.image.is_file():
                report.problems.append(Problem("error", sample.where, f"{sample.image}: file not found"))
                report.unreadable.append(sample)
            else:
                report.readable += 1
            continue
        try:
            read_image(sample.image)
            report.readable += 1
        except ImageError as exc:
            report.problems.append(Problem("error", sample.where, str(exc)))
            report.unreadable.append(sample)
    for head in HEADS:
        report.counts[head] = dataset.counts(head)
    report.photos_per_person = dataset.counts("identity")
    for person, count in sorted(report.photos_per_person.items()):
        if count < min_photos:
            report.problems.append(Problem("warning", person, f"only {count} photo(s) (fewer than {min_photos}): "
                                                              "too few to both train and validate"))
    if len(report.photos_per_person) < 2:
        report.problems.append(Problem("error", str(dataset.source),
                                       f"identity needs at least 2 people, found {len(report.photos_per_person)}"))
    for head in ("emotion", "gender"):
        counts = report.counts[head]
        if not counts:
            report.problems.append(Problem("warning", str(dataset.source), f"no {head} labels: that head will not learn"))
        elif len(counts) < 2:
            report.problems.append(Problem("warning", str(dataset.source),
                                           f"{head} has only the label {next(iter(counts))!r}: that head cannot learn"))
    return report
