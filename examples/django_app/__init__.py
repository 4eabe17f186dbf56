"""A minimal single-package Django project for the docs and the tests.

Run from examples/: polycorn django_app.wsgi (the module's `application`).
"""
