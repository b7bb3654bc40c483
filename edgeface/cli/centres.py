"""``edgeface recentre``: a trained model's identity head from each person's mean embedding."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeface.cli.common import friendly_errors

ORDER = 21


@friendly_errors
def recentre(
    model: Path = typer.Argument(..., help="A run folder or its model.keras (from `edgeface train`)."),
    data: Path = typer.Option(..., help="Photos of the model's people (CSV or folder): usually its training photos."),
    out: Path = typer.Option(..., help="Output folder for the new model.keras and metadata.json."),
    scale: float = typer.Option(20.0, help="Softmax over SCALE x cosine: how sharp the identity probabilities are."),
    mirror: bool = typer.Option(False, "--mirror",
                                help="Read every face as the mean of itself and its mirror image: steadier "
                                     "answers for twice the backbone's work per face. A model that already "
                                     "does keeps doing it."),
    refit_heads: bool = typer.Option(False, "--refit-heads",
                                     help="Also refit the emotion and gender heads (L2 logistic regression) on "
                                          "DATA's faces as the new model reads them: with --mirror, the heads "
                                          "then match the mirrored features they will see."),
    l2: float = typer.Option(1.0, help="L2 weight of --refit-heads on standardised features (scikit-learn's "
                                       "default C = 1)."),
    whiten: bool = typer.Option(False, "--whiten",
                                help="Take the identity cosine after within-class covariance normalisation "
                                     "(WCCN) fitted on DATA's faces: the ways one person's photos vary weigh "
                                     "less than the ways people differ."),
    whitening_epsilon: float = typer.Option(1.0, help="--whiten's ridge, relative to the mean within-class "
                                                      "variance: larger is gentler."),
) -> None:
    """Replace the identity softmax with the nearest person centre (cosine to the mean embedding of each
    person's faces in DATA).

    With a dozen photos per person a softmax fits its training faces more than it generalises; the centres
    named 60.3% of celeba-299's test faces against the softmax's 57.0% (a fine-tuned, distilled model; on a
    heads-only model it changed nothing). Emotion, gender and the embedding are unchanged; evaluate both.

    --mirror also reads every face as the mean of itself and its mirror image (centres included): 63.1% on
    celeba-299 against 60.3% (66.6% against 65.1% for a longer-trained model), for twice the backbone's work
    per face on the Pi.

    --refit-heads also refits the emotion and gender heads (L2 logistic regression, --l2) on DATA's faces as
    the new model reads them; after --mirror it took celeba-299's emotion from 89.98% to 90.14%.

    --whiten measures how each person's faces vary around their mean (the within-class covariance) and
    takes the cosine after whitening it: celeba-299 identity rose by 1.0 to 1.8 points on four mirrored
    models, their int8 bundles by 0.8 to 2.1. The enrollment gallery uses the same whitened embedding.

    \b
      edgeface recentre runs/home --data photos/labels.csv --out runs/home-centres
      edgeface recentre runs/home --data photos/labels.csv --out runs/home-mirror --mirror --refit-heads --whiten
      edgeface evaluate runs/home runs/home-centres --data test.csv
    """
    from edgeface.train.centres import recentre as run_recentre

    path = run_recentre(model, data, out, scale=scale, mirror=mirror, refit_heads=refit_heads, l2=l2,
                        whiten=whiten, whitening_epsilon=whitening_epsilon,
                        on_log=lambda line: typer.echo(line, err=True))
    typer.echo(f"model: {path}")


def register(app: typer.Typer) -> None:
    app.command("recentre")(recentre)
