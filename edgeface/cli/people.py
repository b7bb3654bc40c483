"""``edgeface enroll``, ``edgeface people list/remove``, ``edgeface calibrate``: who the device knows.

Runs on the Pi (numpy, OpenCV, LiteRT; no TensorFlow). See docs/identity.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from edgeface.cli.common import EXIT_CHECK_FAILED, friendly_errors, table

ORDER = 55

people_app = typer.Typer(help="List or remove enrolled people (the gallery of a bundle).",
                         no_args_is_help=True)

BUNDLE_HELP = "The model bundle (.edgeface); each model has its own gallery."
STATE_HELP = ("Folder for galleries. Default: $EDGEFACE_STATE_DIR, else $STATE_DIRECTORY (systemd), else "
              "$XDG_STATE_HOME/edgeface, else ~/.local/state/edgeface.")
GALLERY_HELP = "A gallery file to use instead of the bundle's one in the state folder."

STATUS_TEXT = {"ok": "enrolled", "unreadable": "unreadable", "no_face": "no face",
               "several_faces": "several faces", "too_small": "too small", "blurry": "blurry",
               "duplicate": "already enrolled"}


def _threshold_line(gallery) -> str:
    from edgeface.core.gallery import DEFAULT_SIMILARITY_THRESHOLD

    if gallery.similarity_threshold is None:
        return (f"similarity threshold {DEFAULT_SIMILARITY_THRESHOLD:g} (default; run `edgeface calibrate` "
                "to measure one for these people)")
    cal = gallery.calibration or {}
    line = (f"similarity threshold {gallery.similarity_threshold:.3f}, identity threshold "
            f"{gallery.identity_threshold if gallery.identity_threshold is not None else 'from the bundle'}"
            f" (calibrated {cal.get('date', '?')}: {cal.get('far_measured', 0):.2%} of "
            f"{cal.get('faces', '?')} stranger faces accepted, target {cal.get('far_target', 0):.2%})")
    if gallery.calibration_is_stale:
        line += "; people changed since: run `edgeface calibrate` again"
    return line


@friendly_errors
def enroll(
    photos: List[Path] = typer.Argument(..., help="Photos of the person alone (files or folders).",
                                        show_default=False),
    bundle: Path = typer.Option(..., help=BUNDLE_HELP),
    name: str = typer.Option(..., help="The person's name, as the daemon will report it."),
    replace: bool = typer.Option(False, "--replace", help="Forget the person's earlier photos first."),
    state_dir: Optional[Path] = typer.Option(None, help=STATE_HELP),
    gallery: Optional[Path] = typer.Option(None, help=GALLERY_HELP),
) -> None:
    """Add a person to the bundle's gallery from a few photos, without retraining.

    Each photo is detected, aligned and embedded as a camera frame would be. Photos with no face, several
    faces, a face under 40 px tall or a blurry face are reported and not enrolled. Exit 0 when at least one
    photo was enrolled, 1 when none was, 2 on bad input. 5 clear photos (different days, light, expressions)
    work best.
    """
    from edgeface.people.enroll import enroll as enroll_person

    result = enroll_person(bundle, name, photos, gallery_path=gallery, state_dir=state_dir,
                           replace_existing=replace)
    rows = []
    for check in result.checks:
        detail = check.message.split(": ", 1)[-1] if check.message else (
            f"face {check.face.height:.0f} px, sharpness {check.sharpness:.0f}" if check.face else "")
        rows.append((check.path.name, STATUS_TEXT[check.status], detail))
    typer.echo(table(rows, ("photo", "result", "detail")))
    person = result.gallery.get(result.name)
    if result.enrolled == 0:
        typer.echo(f"error: no photo of {result.name} could be enrolled", err=True)
        raise typer.Exit(EXIT_CHECK_FAILED)
    total = len(person.embeddings) if person is not None else result.enrolled
    typer.echo(f"enrolled {result.name}: {result.enrolled} photo(s) added, {total} in all; "
               f"{len(result.gallery)} people in {result.path}")
    if result.trained_name:
        typer.echo(f"note: {result.name} is also a person the model was trained on; both name the same "
                   "person")
    if result.gallery.calibration is not None:
        typer.echo("note: the people changed since the last calibration: run `edgeface calibrate` again")


@people_app.command("list")
@friendly_errors
def list_people(
    bundle: Path = typer.Option(..., help=BUNDLE_HELP),
    state_dir: Optional[Path] = typer.Option(None, help=STATE_HELP),
    gallery: Optional[Path] = typer.Option(None, help=GALLERY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Who is enrolled for this bundle, with how many photos, and the thresholds in use."""
    from edgeface.people.enroll import gallery_for

    found, path = gallery_for(bundle, gallery, state_dir)
    if as_json:
        typer.echo(json.dumps({
            "gallery": str(path), "exists": path.exists(),
            "people": [{"name": p.name, "photos": len(p.embeddings), "added": p.added} for p in found.people],
            "similarity_threshold": found.similarity_threshold,
            "identity_threshold": found.identity_threshold,
            "calibration": found.calibration, "calibration_stale": found.calibration_is_stale,
        }, indent=2))
        return
    typer.echo(f"gallery: {path}")
    if not len(found):
        typer.echo("nobody is enrolled for this bundle (edgeface enroll --bundle ... --name NAME PHOTOS...)")
        return
    rows = [(p.name, len(p.embeddings), p.added) for p in found.people]
    typer.echo(table(rows, ("name", "photos", "added")))
    typer.echo(_threshold_line(found))


@people_app.command("remove")
@friendly_errors
def remove_people(
    names: List[str] = typer.Argument(..., help="Names of enrolled people.", show_default=False),
    bundle: Path = typer.Option(..., help=BUNDLE_HELP),
    state_dir: Optional[Path] = typer.Option(None, help=STATE_HELP),
    gallery: Optional[Path] = typer.Option(None, help=GALLERY_HELP),
) -> None:
    """Forget enrolled people (their embeddings are deleted from the gallery file)."""
    from edgeface.people.enroll import remove_person

    for name in names:
        remaining = remove_person(bundle, name, gallery, state_dir)
        typer.echo(f"removed {name}; {len(remaining)} people left")


@friendly_errors
def calibrate(
    impostors: List[Path] = typer.Option(..., help="Photos of people who are neither enrolled nor trained: "
                                                    "files, folders (one per person: their photos make "
                                                    "visits), or a CSV manifest (rows of enrolled or trained "
                                                    "people are skipped). Repeatable."),
    bundle: Path = typer.Option(..., help=BUNDLE_HELP),
    far: float = typer.Option(0.01, help="Target false-accept rate: the share of strangers' faces, and of "
                                         "their visits, that may be named as somebody."),
    identity: bool = typer.Option(True, "--identity/--no-identity",
                                  help="Also calibrate the identity head's threshold (--no-identity: keep "
                                       "the bundle's, calibrate the gallery alone)."),
    state_dir: Optional[Path] = typer.Option(None, help=STATE_HELP),
    gallery: Optional[Path] = typer.Option(None, help=GALLERY_HELP),
) -> None:
    """Pick the thresholds that accept at most --far of strangers' faces (photos), and of their visits (the
    daemon's tracks: a stranger's photos in a row, added up face after face), and store them with the gallery.

    Both ways of naming a face (enrolled people by similarity, trained people by the identity head) are
    allowed the same number of the strangers, unless one of them cannot take one more (tied scores). Run it
    again after enrolling or removing people. Hundreds of stranger faces are needed to measure 1%.
    """
    from edgeface.people.calibrate import calibrate as calibrate_gallery

    result = calibrate_gallery(bundle, impostors, far=far, gallery_path=gallery, state_dir=state_dir,
                               calibrate_identity=identity)
    t = result.thresholds
    typer.echo(f"strangers: {result.faces} faces in {result.photos} photos ({len(result.skipped)} skipped)")
    typer.echo(f"similarity threshold: {t.similarity:.4f} (gallery alone accepts {result.gallery_far:.2%})")
    if t.identity is not None and result.model_far is not None:
        typer.echo(f"identity threshold: {t.identity:.4f} (identity head alone accepts "
                   f"{result.model_far:.2%})")
    typer.echo(f"false-accept rate on these strangers: {t.far:.2%} ({t.accepted} of {t.total}), "
               f"target {far:.2%}")
    v = result.visit_thresholds
    typer.echo(f"per visit ({v.total} visits): similarity threshold {v.similarity:.4f}"
               + (f", identity threshold {v.identity:.4f}" if v.identity is not None else "")
               + f"; {v.far:.2%} of the visits named ({v.accepted} of {v.total})")
    typer.echo(f"stored in {result.path}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)


@friendly_errors
def identify(
    photos: List[Path] = typer.Argument(..., help="Photos (files or folders).", show_default=False),
    bundle: Path = typer.Option(..., help=BUNDLE_HELP),
    identity_threshold: Optional[float] = typer.Option(None, help="Default: the gallery's calibrated one, "
                                                                  "else the bundle's."),
    similarity_threshold: Optional[float] = typer.Option(None, help="Default: the gallery's calibrated one."),
    state_dir: Optional[Path] = typer.Option(None, help=STATE_HELP),
    gallery: Optional[Path] = typer.Option(None, help=GALLERY_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per photo instead of a table."),
) -> None:
    """Name the main face of each photo with the rule the daemon uses (enrolled people, trained people, or
    unknown): a quick check after enrolling or calibrating."""
    from edgeface.people.enroll import FaceEmbedder, expand_photos
    from edgeface.runtime.labeler import Labeler

    embedder = FaceEmbedder(bundle)
    labeler = Labeler.for_bundle(embedder.bundle, identity_threshold, similarity_threshold,
                                 gallery if gallery else "", state_dir=state_dir, reload=False)
    checks, outputs = embedder.photos(expand_photos(photos), quality=False)
    labels = iter(labeler(outputs)) if len(outputs["identity"]) else iter(())
    rows: list[tuple[object, ...]] = []
    for check in checks:
        face = next(labels) if check.ok else None
        if as_json:
            typer.echo(json.dumps({"photo": str(check.path), "error": check.message or None,
                                   **(face.to_dict() if face else {})}))
        elif face is None:
            rows.append((check.path.name, check.message.split(": ", 1)[-1], None, None, None))
        else:
            rows.append((check.path.name, face.identity.label, round(face.identity.score, 3),
                         face.emotion.label, face.gender.label))
    if not as_json:
        typer.echo(table(rows, ("photo", "identity", "score", "emotion", "gender")))


def register(app: typer.Typer) -> None:
    app.command("enroll")(enroll)
    app.add_typer(people_app, name="people")
    app.command("calibrate")(calibrate)
    app.command("identify")(identify)
