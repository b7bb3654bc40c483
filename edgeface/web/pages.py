"""The page's HTML, rendered on the server: every page works without JavaScript (forms and links), and the
live view's script only refreshes the picture. Every value from outside (names, labels) goes through ``esc``."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence
from urllib.parse import quote

from edgeface.web.store import FaceGroup

PREFIX = "/ui"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def ago(seconds: float) -> str:
    """How long ago, the same wherever the phone and the device think they are: ``42 s``, ``3 min``, ``5 h``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def count(n: int, word: str, plural: str = "") -> str:
    """``1 face``, ``3 faces``."""
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def utc(iso: str) -> str:
    """An ISO date as ``2026-12-01 10:15 UTC``."""
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return esc(iso or "?")


@dataclass(frozen=True)
class Frame:
    """What every page shows around its content."""

    csrf: str
    counts: dict[str, int]  # nav badges: unknown, people
    signed_in: bool  # with a token: show "sign out"
    retention: str  # one line: where faces are kept and for how long


NAV = (("live", "", "Live"), ("unknown", "unknown", "Unknown"), ("people", "people", "People"),
       ("recent", "recent", "Recent"), ("thresholds", "thresholds", "Thresholds"))


def layout(frame: Frame | None, current: str, title: str, body: str, note: tuple[str, str] | None = None) -> str:
    nav = ""
    if frame is not None:
        links = []
        for key, path, label in NAV:
            n = frame.counts.get(key)
            badge = f' <span class="badge">{n}</span>' if n else ""
            here = ' aria-current="page"' if key == current else ""
            links.append(f'<a href="{PREFIX}/{path}"{here}>{label}{badge}</a>')
        nav = f'<nav>{"".join(links)}</nav>'
    message = ""
    if note is not None and note[1]:
        message = f'<p class="note {esc(note[0])}" role="status">{esc(note[1])}</p>'
    footer = ""
    if frame is not None:
        out = (f'<form method="post" action="{PREFIX}/logout">{csrf_field(frame.csrf)}'
               '<button class="link">Sign out</button></form>') if frame.signed_in else ""
        footer = f'<footer><p>{esc(frame.retention)}</p>{out}</footer>'
    meta = f'<meta name="csrf" content="{esc(frame.csrf)}">' if frame is not None else ""
    js = f'<script src="{PREFIX}/static/page.js" defer></script>'
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
            f'<title>{esc(title)} · edgeface</title><link rel="stylesheet" href="{PREFIX}/static/page.css">'
            f'</head><body><header class="top"><a class="brand" href="{PREFIX}/">edgeface</a>{nav}</header>'
            f'<main>{message}{body}</main>{footer}{js}</body></html>')


def face_url(of: str, face_id: str, group: str = "") -> str:
    """The address of one face crop (escaped for an attribute): ``of`` unknown (of ``group``), person, stranger
    or recent."""
    extra = f"&group={quote(group)}" if group else ""
    return esc(f"{PREFIX}/face.jpg?of={of}&id={quote(face_id)}{extra}")


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(token)}">'


def hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'


# --- live ----------------------------------------------------------------------------------------------------

def live_page(frame: Frame, state: dict[str, Any] | None, fps: float, note: tuple[str, str] | None = None) -> str:
    faces = face_list(frame.csrf, state["faces"] if state else [])
    status = "waiting for the first frame" if state is None else f"frame {state['frame']}"
    body = (f'<h1 class="sr-only">Live</h1><div class="live-wrap">'
            f'<div class="live" id="live" data-fps="{fps:g}" data-api="{PREFIX}/api/live" '
            f'data-image="{PREFIX}/live.jpg">'
            f'<img id="live-image" src="{PREFIX}/live.jpg" alt="The camera\'s newest frame" width="640" height="480">'
            f'<div id="live-boxes" class="boxes" aria-hidden="true"></div></div><div>'
            f'<p id="live-status" class="muted">{esc(status)}</p>'
            f'<ul id="live-faces" class="rows">{faces}</ul></div></div>')
    return layout(frame, "live", "Live", body, note)


def face_list(csrf: str, faces: Sequence[dict[str, Any]]) -> str:
    """One row per face of the live frame (sent again with each ``/ui/api/live`` answer for page.js)."""
    if not faces:
        return '<li class="muted">Nobody in view.</li>'
    rows = []
    for face in faces:
        identity = face["identity"]
        unknown = identity["label"] == "unknown"
        # No scores here: the list is drawn again only when a label changes (the boxes carry the scores).
        text = (f'<span class="{"unknown" if unknown else "known"}">{esc(identity["label"])}</span> '
                f'· {esc(face["emotion"]["label"])} · {esc(face["gender"]["label"])}')
        action = ""
        if not unknown and face.get("recognition"):
            action = not_form(csrf, face["recognition"], identity["label"], f"{PREFIX}/")
        elif unknown and face.get("group"):
            action = f'<a class="button" href="{PREFIX}/unknown#group-{esc(face["group"])}">Name them</a>'
        rows.append(f'<li class="row"><span class="track">#{face["track"]}</span>'
                    f'<span class="grow">{text}</span>{action}</li>')
    return "".join(rows)


def not_form(csrf: str, recognition: str, name: str, back: str) -> str:
    return (f'<form method="post" action="{PREFIX}/recent">{csrf_field(csrf)}{hidden("recognition", recognition)}'
            f'{hidden("back", back)}<button class="warn">Not {esc(name)}</button></form>')


# --- unknown faces -------------------------------------------------------------------------------------------

def unknown_page(frame: Frame, groups: Sequence[FaceGroup], names: Sequence[str], now: float, retention: str,
                 can_name: str, suggested: str = "", note: tuple[str, str] | None = None) -> str:
    intro = (f'<h1>Unknown faces <span class="muted">({len(groups)})</span></h1>'
             f'<p class="muted">People the camera could not name, newest first: one card per person, with the '
             f'good faces of all their visits (visits are put together by face, so check that a card shows one '
             f'person). {esc(retention)} Pick the good faces, then say who it is: the daemon names them from the '
             f'next frame on.</p>')
    if can_name:
        intro += f'<p class="note error">{esc(can_name)}</p>'
    if not groups:
        return layout(frame, "unknown", "Unknown faces", intro + '<p class="empty">No unknown faces kept.</p>', note)
    cards = "".join(group_card(frame.csrf, g, now, suggested, disabled=bool(can_name)) for g in groups)
    options = "".join(f'<option value="{esc(n)}">' for n in names)
    body = f'{intro}<div class="cards">{cards}</div><datalist id="people-names">{options}</datalist>'
    return layout(frame, "unknown", "Unknown faces", body, note)


def group_card(csrf: str, group: FaceGroup, now: float, suggested: str, disabled: bool) -> str:
    crops = "".join(
        f'<label class="crop" title="sharpness {s.sharpness:.0f}, face {s.height:.0f} px, seen {ago(now - s.time)} '
        f'ago"><input type="checkbox" name="face" value="{esc(s.id)}" checked>'
        f'<img src="{face_url("unknown", s.id, group.id)}" alt="unknown face {i + 1}" '
        f'width="96" height="96" loading="lazy"></label>'
        for i, s in enumerate(group.samples))
    nearest = max(group.samples, key=lambda s: s.similarity)
    why = (f' · nearest: {esc(nearest.best)} {nearest.similarity:.2f}' if nearest.best else "")
    seen = (f"{count(group.visits, 'visit')} · last seen {ago(now - group.last)} ago" +
            (f", first {ago(now - group.first)} ago" if group.visits > 1 else ""))
    off = " disabled" if disabled else ""
    return (f'<article class="card" id="group-{esc(group.id)}"><form method="post" action="{PREFIX}/unknown">'
            f'{csrf_field(csrf)}{hidden("group", group.id)}'
            f'<p class="card-head"><strong class="visits">{esc(seen)}</strong><span class="muted"> · '
            f'{count(len(group.samples), "face")}{why}</span></p>'
            f'<div class="crops">{crops}</div>'
            f'<div class="actions"><label class="sr-only" for="name-{esc(group.id)}">This is</label>'
            f'<input id="name-{esc(group.id)}" name="name" list="people-names" placeholder="Who is it?" '
            f'autocomplete="off" maxlength="64" value="{esc(suggested)}"{off}>'
            f'<button name="action" value="name" class="primary"{off}>This is</button>'
            f'<button name="action" value="stranger"{off}>A stranger</button>'
            f'<button name="action" value="ignore" class="quiet">Ignore</button></div></form></article>')


# --- people --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PersonView:
    name: str
    added: str
    photos: Sequence[tuple[str, str, bool]]  # (sha256, file, has a crop)


def people_page(frame: Frame, people: Sequence[PersonView], gallery: str, can_change: str,
                note: tuple[str, str] | None = None) -> str:
    intro = (f'<h1>People <span class="muted">({len(people)})</span></h1>'
             f'<p class="muted">Who the daemon names. Each face below is one enrolled photo; removing one '
             f'forgets its embedding too. Gallery: <code>{esc(gallery)}</code></p>')
    if can_change:
        intro += f'<p class="note error">{esc(can_change)}</p>'
    if not people:
        body = intro + (f'<p class="empty">Nobody is enrolled yet. Name someone under '
                        f'<a href="{PREFIX}/unknown">Unknown</a>, or run <code>edgeface enroll</code>.</p>')
        return layout(frame, "people", "People", body, note)
    return layout(frame, "people", "People", intro + "".join(person_card(frame.csrf, p) for p in people), note)


def person_card(csrf: str, person: PersonView) -> str:
    who = hidden("person", person.name)
    crops = []
    for i, (sha, file, has_crop) in enumerate(person.photos):
        picture = (f'<img src="{face_url("person", sha)}" alt="{esc(person.name)}, photo {i + 1}" '
                   f'width="96" height="96" loading="lazy">' if has_crop else
                   f'<span class="nocrop">{esc(file or "photo")}</span>')
        crops.append(f'<figure class="crop" title="{esc(file)}">{picture}'
                     f'<form method="post" action="{PREFIX}/people">{csrf_field(csrf)}{who}{hidden("photo", sha)}'
                     f'<button name="action" value="remove_photo" class="x" aria-label="Remove this photo of '
                     f'{esc(person.name)}" title="Remove this photo">×</button></form></figure>')
    added = f" · enrolled {utc(person.added)}" if person.added else ""
    return (f'<article class="card person" id="person-{quote(person.name, safe="")}">'
            f'<p class="card-head"><strong class="name">{esc(person.name)}</strong><span class="muted"> · '
            f'{count(len(person.photos), "photo")}{added}</span></p><div class="crops">{"".join(crops)}</div>'
            f'<div class="actions"><a class="button" href="{PREFIX}/unknown?name={quote(person.name)}">'
            f'Add from unknown faces</a>'
            f'<details><summary>Rename or remove</summary>'
            f'<form method="post" action="{PREFIX}/people" class="inline">{csrf_field(csrf)}{who}'
            f'<input name="name" value="{esc(person.name)}" maxlength="64" required aria-label="New name">'
            f'<button name="action" value="rename">Rename</button></form>'
            f'<form method="post" action="{PREFIX}/people" class="inline" data-confirm="Remove '
            f'{esc(person.name)} and all their photos?">{csrf_field(csrf)}{who}'
            f'<button name="action" value="remove" class="danger">Remove {esc(person.name)}</button></form>'
            f'</details></div></article>')


# --- recent recognitions -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecognitionView:
    id: str
    name: str
    score: float
    emotion: str
    gender: str
    seen: float  # seconds ago
    best: str
    similarity: float


def recent_page(frame: Frame, items: Sequence[RecognitionView], note: tuple[str, str] | None = None) -> str:
    intro = ('<h1>Recent recognitions</h1><p class="muted">The last faces the daemon named, newest first (kept in '
             'memory only, gone at a restart). <em>Not …</em> keeps that face as evidence that it is not that '
             'person: the daemon stops giving them that name (and faces nearer it than the person\'s own), it '
             'counts as a stranger\'s when you recalibrate, and if that person was named on this page from the card '
             'this visit was on, that naming is taken back.</p>')
    if not items:
        return layout(frame, "recent", "Recent", intro + '<p class="empty">Nobody was named yet.</p>', note)
    rows = []
    for r in items:
        why = (f'nearest enrolled: {esc(r.best)} {r.similarity:.2f}' if r.best else "named by the model")
        rows.append(f'<li class="row"><img class="thumb" src="{face_url("recent", r.id)}" '
                    f'alt="{esc(r.name)}" width="64" height="64"><span class="grow"><strong>{esc(r.name)}</strong> '
                    f'{r.score:.2f} · {esc(r.emotion)} · {esc(r.gender)}<br><span class="muted">{ago(r.seen)} ago'
                    f' · {why}</span></span>{not_form(frame.csrf, r.id, r.name, f"{PREFIX}/recent")}</li>')
    return layout(frame, "recent", "Recent", f'{intro}<ul class="rows">{"".join(rows)}</ul>', note)


# --- thresholds ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ThresholdsView:
    similarity: float
    similarity_from: str  # given, calibrated, default
    identity: float
    identity_from: str  # given, calibrated, bundle
    visit_similarity: float  # the thresholds of the rule over a visit's faces (the camera's)
    visit_identity: float
    calibration: dict[str, Any] | None
    stale: bool
    negatives: Sequence["NegativeView"]
    calibration_faces: int  # this camera's strangers' faces (what recalibration uses)
    enrolled: int


@dataclass(frozen=True)
class NegativeView:
    """A face kept as a stranger's or as not somebody's."""

    id: str
    reason: str  # "a stranger", "not Maya"
    time: float
    crop: bool  # kept on this device (a face shared by another device has none)
    evidence: bool  # in the gallery: the identity rule uses it
    calibration: bool  # recalibration uses it


FROM = {"given": "set in the daemon's configuration (recalibrating does not change it)",
        "calibrated": "calibrated", "default": "the default: not calibrated yet", "bundle": "the bundle's"}


def thresholds_page(frame: Frame, view: ThresholdsView, far: float, max_strangers: int,
                    note: tuple[str, str] | None = None) -> str:
    table = (f'<table><tr><th></th><th class="num">per visit</th><th class="num">per photo</th><th></th></tr>'
             f'<tr><th>Enrolled people</th><td class="num">{view.visit_similarity:.3f}</td>'
             f'<td class="num">{view.similarity:.3f}</td><td>cosine similarity; '
             f'{esc(FROM.get(view.similarity_from, view.similarity_from))}</td></tr>'
             f'<tr><th>Trained people</th><td class="num">{view.visit_identity:.3f}</td>'
             f'<td class="num">{view.identity:.3f}</td><td>identity confidence; '
             f'{esc(FROM.get(view.identity_from, view.identity_from))}</td></tr></table>'
             f'<p class="muted">The camera names a person over a visit\'s faces (per visit); a photo on its own '
             f'(<code>edgeface identify</code>) per photo.</p>')
    cal = view.calibration
    if cal:
        visits = (f' ({count(int(cal["visits"]), "visit")}, {float(cal.get("visit_far_measured", 0)):.2%} of them '
                  f'named at some point)' if cal.get("visits") else "")
        when = (f'<p>Calibrated {utc(cal.get("date", ""))} on {cal.get("faces", "?")} strangers\' faces{visits}: '
                f'{float(cal.get("far_measured", 0)):.2%} of the faces named as somebody (target '
                f'{float(cal.get("far_target", 0)):.2%}).</p>')
        if view.stale:
            when += '<p class="note warn">People were enrolled or removed since: recalibrate.</p>'
    else:
        when = '<p>Never calibrated.</p>'
    stored = view.calibration_faces
    faces_text = count(stored, "stranger's face", "strangers' faces")
    can = stored > 0 and view.enrolled > 0
    why_not = ("" if can else '<p class="muted">' + ("Enroll somebody first. " if not view.enrolled else "") +
               ("Mark faces as strangers first (Unknown faces: <em>A stranger</em>; Recent: <em>Not …</em>)."
                if not stored else "") + "</p>")
    form = (f'<form method="post" action="{PREFIX}/thresholds" class="inline">{csrf_field(frame.csrf)}'
            f'<label>Strangers named at most <input name="far" type="number" min="0" max="50" step="0.1" '
            f'value="{far * 100:g}" class="short"> %</label>'
            f'<button name="action" value="recalibrate" class="primary"{"" if can else " disabled"}>'
            f'Recalibrate on {faces_text}</button></form>{why_not}')
    faces = "".join(negative_figure(frame.csrf, n) for n in view.negatives)
    body = (f'<h1>Thresholds</h1><p class="muted">How sure the daemon must be before it names a face.</p>'
            f'{table}{when}{form}<h2>Strangers\' faces and "not …" <span class="muted">({len(view.negatives)}, at '
            f'most {max_strangers})</span></h2><p class="muted">Faces said to be nobody enrolled (<em>a stranger'
            f'</em>) or not a person (<em>not …</em>). The daemon names nobody from a face nearer one of them than '
            f'the person\'s own faces, and the thresholds are calibrated so that few of this camera\'s would be '
            f'named (visit by visit; hundreds are needed to measure 1%).</p>'
            f'<div class="crops negatives">{faces or "<p class=empty>None yet.</p>"}</div>')
    return layout(frame, "thresholds", "Thresholds", body, note)


def negative_figure(csrf: str, face: NegativeView) -> str:
    uses = ("" if face.evidence and face.calibration else " (calibration only)" if face.calibration else
            " (from another device)" if not face.crop else " (evidence only)")
    picture = (f'<img src="{face_url("stranger", face.id)}" alt="{esc(face.reason)}" width="96" height="96" '
               f'loading="lazy">' if face.crop else f'<span class="nocrop">{esc(face.reason)}</span>')
    return (f'<figure class="crop" title="{esc(face.reason + uses)}">{picture}'
            f'<figcaption>{esc(face.reason)}</figcaption>'
            f'<form method="post" action="{PREFIX}/thresholds">{csrf_field(csrf)}{hidden("face", face.id)}'
            f'<button name="action" value="remove_stranger" class="x" aria-label="Forget this face ({esc(face.reason)})" '
            f'title="Forget this face">×</button></form></figure>')


# --- sign in -------------------------------------------------------------------------------------------------

def login_page(next_path: str, error: str = "") -> str:
    body = (f'<h1>Sign in</h1><p class="muted">This device\'s page needs the token of its HTTP API '
            f'(<code>[http] token</code> in its configuration).</p>'
            f'<form method="post" action="{PREFIX}/login" class="stack">{hidden("next", next_path)}'
            f'<label for="token">Token</label><input id="token" name="token" type="password" '
            f'autocomplete="current-password" required autofocus>'
            f'<button class="primary">Sign in</button></form>')
    return layout(None, "", "Sign in", body, ("error", error) if error else None)
