"""Where labels go, several at once, behind one interface (``base.Sink``): JSON lines (``jsonl``), MQTT (``mqtt``).

The run loop calls ``Sink.publish`` once per frame; it never waits on the network or a disk. JSON lines and
MQTT put records in a bounded buffer emptied by their own thread, which retries with backoff when the output
fails; when the buffer is full the oldest record is dropped and counted. The HTTP server
(``edgeface.daemon.server``) takes each frame the same way, only to answer ``/labels``.
"""
