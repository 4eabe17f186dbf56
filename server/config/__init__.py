"""Settings, command line, config file and app loading (Gunicorn-compatible)."""
