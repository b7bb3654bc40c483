"""The web page the daemon serves when ``[web] enabled`` (docs/web.md): see who is there, name the faces it
could not name, manage the enrolled people and the thresholds, from a phone's or a desktop's browser.

* ``app``       ``WebPage``: watches every frame, keeps strangers' faces on disk (``keeper``), mounts the routes;
* ``state``     ``PageState``: what the routes share (bundle, labeler, gallery, kept faces, messages);
* ``routes``    the routes, one small class per resource: live, unknown, people, recent, thresholds, sign-in;
* ``unknowns``  what the Unknown page lists (``Unknowns``): a card per stranger group of the pipeline's;
* ``watch``     what is kept of each frame: the good faces of unknown visits and recent recognitions;
* ``store``     stranger groups with their faces, and strangers' faces, on disk beside the gallery;
* ``live``      the newest frame, encoded as a JPEG only when a page asks;
* ``pages``     the HTML, rendered on the server; ``static/`` its style sheet and one small script;
* ``guard``     forms from the page only, and the headers of its answers (the server checks host and token).

Device side: numpy, OpenCV and the standard library; it sits above ``edgeface.daemon`` and
``edgeface.people`` (it uses both) and only the CLI imports it.
"""
