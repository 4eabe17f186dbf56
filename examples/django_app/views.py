"""Views of the example Django project."""

import os

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from Django\n", content_type="text/plain")


@csrf_exempt  # a test client posts raw bodies without a CSRF token
@require_POST
def echo(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.body,
                        content_type=request.content_type or "application/octet-stream")


@require_GET
def as_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"app": "django", "pid": os.getpid(),
                         "version": os.environ.get("APP_VERSION", "1"),
                         "args": request.GET.dict()})


@require_GET
def stream(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("n", "5"))
    return StreamingHttpResponse((f"chunk {i}\n" for i in range(count)),
                                 content_type="text/plain")


@require_GET
def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")
