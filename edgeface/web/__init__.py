"""The web page the daemon serves when ``[web] enabled`` (docs/web.md): see who is there, name the faces it
could not name, manage the enrolled people and the thresholds, from a phone's or a desktop's browser.

* ``app``     ``WebPage``: the run's frame observer and the page's routes on the daemon's HTTP server;
* ``watch``   what is kept of each frame: unknown visits (one per track) and recent recognitions;
* ``store``   unknown visits and strangers' faces on disk, beside the gallery, with their retention;
* ``live``    the newest frame, encoded as a JPEG only when a page asks;
* ``pages``   the HTML, rendered on the server; ``static/`` its style sheet and one small script;
* ``guard``   who may use the page: token (header or sign-in cookie), host name, forms from the page only;
* ``http``    form fields and cookies, and the page's routes on the daemon's server (which answers with ``Reply``).

Device side: numpy, OpenCV and the standard library; it sits above ``edgeface.daemon`` and
``edgeface.people`` (it uses both) and only the CLI imports it.
"""
