"""Polycorn's node-local server: master, workers, HTTP/1.1 and WSGI. Imports nothing from ha/."""
