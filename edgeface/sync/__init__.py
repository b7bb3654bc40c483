"""People sync: the devices of one household share the people they know through the household's MQTT broker.

``records`` (what travels, and how it is checked), ``clock`` (hybrid logical clocks), ``replica`` (merging
records, the gallery they make, the records a changed gallery makes) and ``peer`` (around a connection) are
pure logic; ``mqtt`` is the transport and ``household`` the component the daemon runs. docs/fleet.md.
"""
