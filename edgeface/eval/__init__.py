"""Measuring models: accuracy per head, latency, reports."""
