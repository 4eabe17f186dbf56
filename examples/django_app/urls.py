"""URLs of the example Django project."""

from django.urls import path

from django_app import views

urlpatterns = [
    path("", views.index),
    path("echo", views.echo),
    path("json", views.as_json),
    path("stream", views.stream),
    path("health", views.health),
]
