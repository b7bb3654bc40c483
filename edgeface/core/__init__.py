"""The core both sides share: model spec, bundle and gallery formats, results, errors, file and image IO.

It imports neither the device side nor the workstation side (the contract in pyproject.toml says so).
"""
