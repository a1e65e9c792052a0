"""Duetto's launcher: the small frozen program an installer carries. It builds the app's
environment from the installer's lock on first start (with the torch build that fits the
machine), repairs and updates it, and starts the app."""
