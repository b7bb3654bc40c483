"""Who the device knows: enroll people from photos into a bundle's gallery, and calibrate the thresholds.

Runs on the Pi (numpy, OpenCV, LiteRT): every photo goes through the detector and the bundle's model.
"""
