"""Settings of the example Django project: production-like (DEBUG off), no database."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "polycorn-example-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_app.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
DATABASES: dict = {}
USE_TZ = True
WSGI_APPLICATION = "django_app.wsgi.application"
