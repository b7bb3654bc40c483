"""The web page the daemon serves under ``/ui`` (docs/web.md): live view, unknown faces, people, recent
recognitions, thresholds. ``edgeface run`` passes ``web_page`` to the daemon as an extension; when
``[web] enabled`` is set it makes a ``WebPage``, which

* watches every frame (``observe``, on the pipeline's thread: ``watch`` and ``live`` keep what the page shows),
* keeps the stranger groups and their faces on disk on its own thread (``keeper``), starting from those an
  earlier run kept (they join the pipeline's groups, so their ids stay the same),
* answers its routes (``routes``, one small class per resource over ``state.PageState``) on the daemon's HTTP
  server, behind the server's own host and access check, its forms behind the page's (``guard``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.web.keeper import Keeper
from edgeface.web.routes import mount
from edgeface.web.state import PREFIX, PageState

if TYPE_CHECKING:
    from edgeface.daemon.records import Published
    from edgeface.daemon.run import Daemon

log = logging.getLogger("edgeface.daemon.web")


class WebPage:
    """The page of one run: made by the daemon once its parts exist, closed with the run."""

    def __init__(self, daemon: "Daemon") -> None:
        if daemon.http is None:
            raise EdgefaceError("[web] needs the HTTP server ([http] enabled)")
        config = daemon.config
        pipeline = daemon.pipeline
        self.state = PageState.open(daemon.bundle, pipeline.labeler, config.web, config.gallery, pipeline.strangers)
        mount(daemon.http.router, self.state)
        self.keeper = Keeper(self.state)
        self.keeper.start()
        self._errors = 0
        where = self.state.store.root if self.state.store is not None else "nowhere (naming is off)"
        log.info("web: the page is at %s/ on the HTTP server; faces kept in %s", PREFIX, where)

    def observe(self, image: np.ndarray, item: "Published") -> None:
        self.state.live.observe(image, item)
        try:
            self.state.watcher.observe(image, item)
        except Exception:  # the page must never stop the labelling
            self._errors += 1
            if self._errors <= 3:
                log.exception("web: error while keeping faces (frame %d)", item.result.index)

    def close(self) -> None:
        self.keeper.close()


def web_page(daemon: "Daemon") -> WebPage | None:
    """The run's web page when its config has ``[web] enabled``, else None: an extension of the daemon
    (``edgeface.daemon.run.Extension``), asked again at each start and SIGHUP reload."""
    return WebPage(daemon) if daemon.config.web.enabled else None
