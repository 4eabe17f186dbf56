"""WSGI (PEP 3333) glue between the sans-IO HTTP layer and the application."""
