"""From frames to people: tracking, the quality of each view, each track's evidence and the identity rule over
it, visits and the strangers seen (device side: numpy, OpenCV, LiteRT). The daemon, ``edgeface.load(...).run``
and the web page all use ``FacePipeline`` (``pipeline.py``)."""
