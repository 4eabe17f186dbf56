/* polycorn.server._accel, its third part: a whole plain request taken in one call.
 *
 *   take_plain(conn, request_type, client, wsgi_input, header_keys, trusted_keys)
 *       For an AccelConnection between requests (no fallback, no EOF) whose buffer
 *       starts with a complete plainly framed head, and its whole Content-Length body
 *       if it has one (of at most the body limit): what AccelConnection.
 *       _split_next_head, _take_head, the body's Data event, the END event and
 *       EnvironBuilder._build_native would give, in one call: the connection moved
 *       as they move it, and (Request, environ), whose wsgi.input is the body's
 *       (input_from_bytes(body), as HTTPProtocol._wsgi_input makes it) or wsgi_input
 *       without a body.  None, with nothing changed, for anything else
 *       (split_head's or build_environ's None, a body not all received yet or past
 *       the limit, a trusted front end's header that _finish_native reads): the
 *       Python path then runs.  A plainly framed head has no Expect (plain_framing,
 *       _accel.c), so no 100 Continue is owed.
 *   configure_take(req_idle, req_done, body_limit, input_from_bytes)
 *       The request states (state.py) it moves between; the largest body it takes
 *       (the event worker keeps bodies up to SPOOL_LIMIT in memory); WSGIInput.from_bytes.
 *
 * It only composes split_head and build_environ (_accel.c), whose answers the
 * Python path gives the same way, so it judges nothing itself.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "accel.h"

static PyObject *req_idle, *req_done, *input_from_bytes;
static Py_ssize_t body_limit;
static PyObject *s_fallback_reason, *s_request_state, *s_eof, *s_received, *s_header_count,
    *s_small_head, *s_line_judged, *s_request, *s_continue_owed, *s_persistent,
    *s_body_remaining, *s_content_length, *s_keep_alive, *s_method,
    *s_target, *s_http_version, *s_headers, *s_parser, *s_zero;

/* 1 when conn is between requests on its compiled path with bytes waiting, 0 when
 * not, -1 on error; *buf, *fields, *limit set (new references) when 1. */
static int
idle_with_bytes(PyObject *conn, PyObject **buf, PyObject **fields, PyObject **limit)
{
    PyObject *reason = accel_getattr(conn, s_fallback_reason);
    if (reason == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();  /* not a FastConnection (the pure parser's): not ours */
        return 0;
    }
    Py_DECREF(reason);
    if (reason != Py_None)
        return 0;
    PyObject *state = accel_getattr(conn, s_request_state);
    if (state == NULL)
        return -1;
    Py_DECREF(state);
    if (state != req_idle)
        return 0;
    PyObject *eof = accel_getattr(conn, s_eof);
    if (eof == NULL)
        return -1;
    Py_DECREF(eof);
    if (eof != Py_False)
        return 0;
    *buf = accel_getattr(conn, s_received);
    if (*buf == NULL)
        return -1;
    if (!PyBytes_CheckExact(*buf) || PyBytes_GET_SIZE(*buf) == 0) {
        Py_CLEAR(*buf);
        return 0;
    }
    *fields = accel_getattr(conn, s_header_count);
    *limit = *fields == NULL ? NULL : accel_getattr(conn, s_small_head);
    if (*limit == NULL) {
        Py_CLEAR(*buf);
        Py_CLEAR(*fields);
        return -1;
    }
    return 1;
}

/* _take_head's moves, the body's (buf[head_end:end], when it has one) and the END
 * event's. 0 or -1. */
static int
commit(PyObject *conn, PyObject *buf, Py_ssize_t head_end, Py_ssize_t end, PyObject *request)
{
    PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + end,
                                               PyBytes_GET_SIZE(buf) - end);
    if (rest == NULL)
        return -1;
    int rc = accel_setattr(conn, s_received, rest);
    Py_DECREF(rest);
    if (rc < 0)
        return -1;
    PyObject *keep_alive = accel_getattr(request, s_keep_alive);
    if (keep_alive == NULL)
        return -1;
    Py_DECREF(keep_alive);
    if (accel_setattr(conn, s_line_judged, Py_False) < 0
            || accel_setattr(conn, s_request, request) < 0
            || accel_setattr(conn, s_request_state, req_done) < 0
            || accel_setattr(conn, s_continue_owed, Py_False) < 0
            || (keep_alive != Py_True && accel_setattr(conn, s_persistent, Py_False) < 0)
            || accel_setattr(conn, s_body_remaining, s_zero) < 0)
        return -1;
    /* _take_head: llhttp, which expected the body we read ourselves, starts afresh. */
    if (end > head_end && accel_setattr(conn, s_parser, Py_None) < 0)
        return -1;
    return 0;
}

PyObject *
accel_take_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyTuple_CheckExact(args[2]) || PyTuple_GET_SIZE(args[2]) != 2
            || !PyDict_CheckExact(PyTuple_GET_ITEM(args[2], 0))
            || !PyDict_CheckExact(args[4]) || !PyTuple_CheckExact(args[5])) {
        PyErr_SetString(PyExc_TypeError, "take_plain: unexpected arguments");
        return NULL;
    }
    if (req_idle == NULL || input_from_bytes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "take_plain: configure_take() was not called");
        return NULL;
    }
    PyObject *conn = args[0], *request_type = args[1], *wsgi_input = args[3];
    PyObject *base = PyTuple_GET_ITEM(args[2], 0);
    int trusted = PyObject_IsTrue(PyTuple_GET_ITEM(args[2], 1));
    if (trusted < 0)
        return NULL;
    PyObject *buf = NULL, *fields = NULL, *limit = NULL, *split = NULL, *environ = NULL;
    PyObject *body_input = NULL, *result = NULL;
    int idle = idle_with_bytes(conn, &buf, &fields, &limit);
    if (idle <= 0)
        return idle < 0 ? NULL : Py_NewRef(Py_None);
    Py_ssize_t max_fields = PyLong_AsSsize_t(fields), max_len = PyLong_AsSsize_t(limit);
    if ((max_fields == -1 || max_len == -1) && PyErr_Occurred())
        goto done;
    /* buf is an exact bytes object this function holds: immutable while it runs. */
    split = accel_split_plain(PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf), max_fields,
                              max_len, request_type);
    if (split == NULL)
        goto done;
    if (!PyTuple_CheckExact(split) || PyTuple_GET_SIZE(split) != 2)
        goto decline;  /* None, or a head whose framing Python judges */
    Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(split, 0));
    if (end == -1 && PyErr_Occurred())
        goto done;
    PyObject *request = PyTuple_GET_ITEM(split, 1);
    PyObject *length = accel_getattr(request, s_content_length);
    if (length == NULL)
        goto done;
    Py_DECREF(length);  /* the request holds it */
    Py_ssize_t body_end = end;
    if (length != Py_None) {
        Py_ssize_t size = PyLong_AsSsize_t(length);
        if (size == -1 && PyErr_Occurred())
            goto done;
        if (size > 0) {
            /* Not all received, or one the event worker spools to a file: Python's. */
            if (size > body_limit || size > PyBytes_GET_SIZE(buf) - end)
                goto decline;
            PyObject *body = PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + end, size);
            if (body == NULL)
                goto done;
            body_input = PyObject_CallOneArg(input_from_bytes, body);
            Py_DECREF(body);
            if (body_input == NULL)
                goto done;
            wsgi_input = body_input;
            body_end = end + size;
        }
    }
    /* Each read its own slot site (accel.h): not a loop over the names. */
    PyObject *parts[4] = {NULL, NULL, NULL, NULL};
    parts[0] = accel_getattr(request, s_method);
    if (parts[0] != NULL)
        parts[1] = accel_getattr(request, s_http_version);
    if (parts[1] != NULL)
        parts[2] = accel_getattr(request, s_target);
    if (parts[2] != NULL)
        parts[3] = accel_getattr(request, s_headers);
    if (parts[3] == NULL) {
        for (int n = 0; n < 4; n++)
            Py_XDECREF(parts[n]);
        goto done;
    }
    PyObject *build_args[8] = {base, wsgi_input, parts[0], parts[1], parts[2], parts[3],
                               length, args[4]};
    environ = accel_build_environ(module, build_args, 8);
    for (int n = 0; n < 4; n++)
        Py_DECREF(parts[n]);
    if (environ == NULL)
        goto done;
    if (environ == Py_None)
        goto decline;
    if (trusted) {
        /* _finish_native's trusted step reads these: Python's to do. */
        Py_ssize_t count = PyTuple_GET_SIZE(args[5]);
        for (Py_ssize_t n = 0; n < count; n++) {
            int has = PyDict_Contains(environ, PyTuple_GET_ITEM(args[5], n));
            if (has < 0)
                goto done;
            if (has)
                goto decline;
        }
    }
    if (commit(conn, buf, end, body_end, request) < 0)
        goto done;
    result = PyTuple_Pack(2, request, environ);
    goto done;
decline:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(buf);
    Py_XDECREF(fields);
    Py_XDECREF(limit);
    Py_XDECREF(split);
    Py_XDECREF(environ);
    Py_XDECREF(body_input);
    return result;
}

PyObject *
accel_configure_take(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyCallable_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "configure_take(req_idle, req_done, body_limit, input_from_bytes)");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    body_limit = limit;
    Py_XSETREF(req_idle, Py_NewRef(args[0]));
    Py_XSETREF(req_done, Py_NewRef(args[1]));
    Py_XSETREF(input_from_bytes, Py_NewRef(args[3]));
    Py_RETURN_NONE;
}

int
accel_take_init(PyObject *module)
{
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_fallback_reason, "fallback_reason"}, {&s_request_state, "_request_state"},
        {&s_eof, "_eof"}, {&s_received, "_received"}, {&s_header_count, "_header_count"},
        {&s_small_head, "_small_head"}, {&s_line_judged, "_line_judged"},
        {&s_request, "_request"}, {&s_continue_owed, "_continue_owed"},
        {&s_persistent, "_persistent"}, {&s_body_remaining, "_body_remaining"},
        {&s_content_length, "content_length"},
        {&s_keep_alive, "keep_alive"}, {&s_method, "method"}, {&s_target, "target"},
        {&s_http_version, "http_version"}, {&s_headers, "headers"}, {&s_parser, "_parser"},
    };
    for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
        *names[n].slot = PyUnicode_InternFromString(names[n].text);
        if (*names[n].slot == NULL)
            return -1;
    }
    s_zero = PyLong_FromLong(0);
    return s_zero == NULL ? -1 : 0;
}
