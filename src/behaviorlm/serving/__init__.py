"""Prediction as a service: Python API, batch prediction, HTTP server."""
