/* polycorn.server._accel, its fifth part: the event worker's request cycle for
 * plain requests, in one call per read.
 *
 *   serve_plain(protocol, conn, ctx, app, worker, client, header_keys, trusted_keys)
 *       What HTTPProtocol._process, _respond and _finish_cycle (event_protocol.py)
 *       do for each whole plain request at the start of conn's buffer: take it
 *       (take_plain), call the app (respond), write the response (its bytes, or a
 *       large body beside its head with writelines), end the
 *       cycle (served, ctx.count_request(), conn.start_next_cycle()), and, when the
 *       buffer is then empty, go idle with the keep-alive deadline.  Everything
 *       else is handed to the protocol's own Python methods at the point the Python
 *       code would reach them: an answer that is not the response's bytes
 *       (_answer), an exception of the app or the write (_app_failed, _app_exited),
 *       a response after which the connection is not kept (_end_without_keep_alive).
 *       False when the connection went idle or is done with for now (closed,
 *       lingering, a response suspended on a full buffer); None, with nothing
 *       changed since the last request it served, when the buffer does not start
 *       with a whole plain request (the Python events take it from there).
 *   configure_serve(request_type, empty_input, reading, idle, closed, req_body,
 *                   monotonic)
 *       split_head's Request type, EMPTY_INPUT, the protocol phases it sets and
 *       compares, the request state keep_alive excludes, and time.monotonic (the
 *       clock of the worker's deadline sweep).
 *
 * Why in C: on a kept-alive connection of a hello app the Python frames between
 * the compiled take and respond (the cycle's end, the keep-alive check, the next
 * event's NEED_DATA) were a quarter of the worker's CPU per request.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "accel.h"

static PyObject *request_type, *empty_input, *reading, *idle, *closed, *req_body, *monotonic;
static PyObject *s_request, *s_environ, *s_phase, *s_body_bytes, *s_body_size, *s_resp,
    *s_served, *s_deadline, *s_transport, *s_write, *s_writelines, *s_answer, *s_app_failed,
    *s_app_exited, *s_end_without, *s_count_request, *s_start_next_cycle, *s_persistent,
    *s_request_state, *s_keepalive, *s_fallback_reason, *s_eof, *s_received, *s_zero, *s_one;

/* 1 when obj.name is `value` (identity), 0 when not, -1 on error. */
static int
attr_is(PyObject *obj, PyObject *name, PyObject *value)
{
    PyObject *got = accel_getattr(obj, name);
    if (got == NULL)
        return -1;
    Py_DECREF(got);
    return got == value;
}

/* The exception being raised, as `except Exception as exc` / `except SystemExit as
 * exc` hand it to the protocol: handler(exc)'s result, or NULL (the exception left
 * raised) for any other BaseException, as the Python code lets it through. */
static PyObject *
hand_failure(PyObject *protocol)
{
    PyObject *handler;
    if (PyErr_ExceptionMatches(PyExc_Exception))
        handler = s_app_failed;
    else if (PyErr_ExceptionMatches(PyExc_SystemExit))
        handler = s_app_exited;
    else
        return NULL;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *result = PyObject_CallMethodOneArg(protocol, handler, value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return result;
}

/* _finish_cycle for a response sent whole (no AppResponse, no trace, no body held):
 * a new reference to True when the next cycle has begun, False, or NULL. */
static PyObject *
finish_cycle(PyObject *protocol, PyObject *conn, PyObject *ctx)
{
    if (accel_setattr(protocol, s_resp, Py_None) < 0
            || accel_setattr(protocol, s_request, Py_None) < 0)
        return NULL;
    PyObject *served = accel_getattr(protocol, s_served);
    if (served == NULL)
        return NULL;
    PyObject *more = PyNumber_Add(served, s_one);
    Py_DECREF(served);
    if (more == NULL)
        return NULL;
    int rc = accel_setattr(protocol, s_served, more);
    Py_DECREF(more);
    if (rc < 0)
        return NULL;
    PyObject *done = PyObject_CallMethodNoArgs(ctx, s_count_request);
    if (done == NULL)
        return NULL;
    Py_DECREF(done);
    int gone = attr_is(protocol, s_phase, closed);
    if (gone != 0)
        return gone < 0 ? NULL : Py_NewRef(Py_False);
    /* conn.keep_alive (cycle.py): persistent, and no request body left unread. */
    int persistent = attr_is(conn, s_persistent, Py_True);
    int in_body = persistent > 0 ? attr_is(conn, s_request_state, req_body) : 0;
    if (persistent < 0 || in_body < 0)
        return NULL;
    if (persistent && !in_body) {
        done = PyObject_CallMethodNoArgs(conn, s_start_next_cycle);
        if (done == NULL)
            return NULL;
        Py_DECREF(done);
        if (accel_setattr(protocol, s_phase, reading) < 0)
            return NULL;
        return Py_NewRef(Py_True);
    }
    done = PyObject_CallMethodNoArgs(protocol, s_end_without);
    if (done == NULL)
        return NULL;
    Py_DECREF(done);
    return Py_NewRef(Py_False);
}

/* 1 when conn's next_event() would answer NEED_DATA with nothing buffered (its
 * compiled half between requests, no byte, no EOF), 0 when not, -1 on error. */
static int
nothing_buffered(PyObject *conn)
{
    int plain = attr_is(conn, s_fallback_reason, Py_None);
    if (plain <= 0)
        return plain;
    int eof = attr_is(conn, s_eof, Py_False);
    if (eof <= 0)
        return eof;
    PyObject *received = accel_getattr(conn, s_received);
    if (received == NULL)
        return -1;
    int empty = PyBytes_CheckExact(received) && PyBytes_GET_SIZE(received) == 0;
    Py_DECREF(received);
    return empty;
}

/* _process's NEED_DATA row for a connection that served a request and holds no
 * byte: idle until the keep-alive deadline. 0 or -1. */
static int
go_idle(PyObject *protocol, PyObject *ctx)
{
    PyObject *keepalive = PyObject_GetAttr(ctx, s_keepalive);
    PyObject *now = keepalive == NULL ? NULL : PyObject_CallNoArgs(monotonic);
    PyObject *deadline = now == NULL ? NULL : PyNumber_Add(now, keepalive);
    Py_XDECREF(keepalive);
    Py_XDECREF(now);
    if (deadline == NULL)
        return -1;
    int rc = accel_setattr(protocol, s_deadline, deadline);
    Py_DECREF(deadline);
    if (rc < 0)
        return -1;
    return accel_setattr(protocol, s_phase, idle);
}

/* One whole plain request taken and answered: a new reference to True when the next
 * cycle has begun, False when not, None when there was none to take, or NULL. */
static PyObject *
serve_one(PyObject *module, PyObject *const *args)
{
    PyObject *protocol = args[0], *conn = args[1], *ctx = args[2];
    /* _respond reads a body the events gathered: none may be held (the one take_plain
     * takes goes to the environ's wsgi.input). */
    PyObject *size = accel_getattr(protocol, s_body_size);
    if (size == NULL)
        return NULL;
    int held = PyObject_IsTrue(size);  /* _respond's `if self.body_size` */
    Py_DECREF(size);
    if (held != 0)
        return held < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *take_args[6] = {conn, request_type, args[5], empty_input, args[6], args[7]};
    PyObject *taken = accel_take_plain(module, take_args, 6);
    if (taken == NULL || taken == Py_None)
        return taken;
    PyObject *request = PyTuple_GET_ITEM(taken, 0), *environ = PyTuple_GET_ITEM(taken, 1);
    if (accel_setattr(protocol, s_request, request) < 0
            || accel_setattr(protocol, s_environ, environ) < 0
            || accel_setattr(protocol, s_phase, reading) < 0
            || accel_setattr(protocol, s_body_bytes, s_zero) < 0) {
        Py_DECREF(taken);
        return NULL;
    }
    PyObject *respond_args[4] = {args[3], environ, conn, args[4]};
    PyObject *resp = accel_respond(module, respond_args, 4);
    Py_DECREF(taken);
    if (resp == NULL)
        return hand_failure(protocol);
    int whole = PyBytes_CheckExact(resp);
    if (!whole && !PyTuple_CheckExact(resp)) {
        PyObject *went = PyObject_CallMethodOneArg(protocol, s_answer, resp);
        Py_DECREF(resp);
        return went;
    }
    /* bytes: the whole response; (head, body): a large body beside its head (writev). */
    PyObject *transport = accel_getattr(protocol, s_transport);
    PyObject *wrote = transport == NULL ? NULL
        : PyObject_CallMethodOneArg(transport, whole ? s_write : s_writelines, resp);
    Py_XDECREF(transport);
    Py_DECREF(resp);
    if (wrote == NULL)
        return transport == NULL ? NULL : hand_failure(protocol);
    Py_DECREF(wrote);
    return finish_cycle(protocol, conn, ctx);
}

PyObject *
accel_serve_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8 || !PyTuple_CheckExact(args[5]) || !PyDict_CheckExact(args[6])
            || !PyTuple_CheckExact(args[7])) {
        PyErr_SetString(PyExc_TypeError, "serve_plain: unexpected arguments");
        return NULL;
    }
    if (monotonic == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "serve_plain: configure_serve() was not called");
        return NULL;
    }
    for (;;) {
        int fresh = attr_is(args[0], s_request, Py_None);
        if (fresh <= 0)
            return fresh < 0 ? NULL : Py_NewRef(Py_None);
        PyObject *went = serve_one(module, args);
        if (went == NULL || went == Py_None)
            return went;
        int next = PyObject_IsTrue(went);
        Py_DECREF(went);
        if (next <= 0)
            return next < 0 ? NULL : Py_NewRef(Py_False);
        int empty = nothing_buffered(args[1]);
        if (empty < 0)
            return NULL;
        if (empty)
            return go_idle(args[0], args[2]) < 0 ? NULL : Py_NewRef(Py_False);
    }
}

PyObject *
accel_configure_serve(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyCallable_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "configure_serve(request_type, empty_input, "
                        "reading, idle, closed, req_body, monotonic)");
        return NULL;
    }
    PyObject **slots[7] = {&request_type, &empty_input, &reading, &idle, &closed, &req_body,
                           &monotonic};
    for (int n = 0; n < 7; n++)
        Py_XSETREF(*slots[n], Py_NewRef(args[n]));
    Py_RETURN_NONE;
}

int
accel_serve_init(PyObject *module)
{
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_request, "request"}, {&s_environ, "environ"}, {&s_phase, "phase"},
        {&s_body_bytes, "body_bytes"}, {&s_body_size, "body_size"}, {&s_resp, "resp"},
        {&s_served, "served"}, {&s_deadline, "deadline"}, {&s_transport, "transport"},
        {&s_write, "write"}, {&s_writelines, "writelines"}, {&s_answer, "_answer"}, {&s_app_failed, "_app_failed"},
        {&s_app_exited, "_app_exited"}, {&s_end_without, "_end_without_keep_alive"},
        {&s_count_request, "count_request"}, {&s_start_next_cycle, "start_next_cycle"},
        {&s_persistent, "_persistent"}, {&s_request_state, "_request_state"},
        {&s_keepalive, "keepalive"}, {&s_fallback_reason, "fallback_reason"},
        {&s_eof, "_eof"}, {&s_received, "_received"},
    };
    for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
        *names[n].slot = PyUnicode_InternFromString(names[n].text);
        if (*names[n].slot == NULL)
            return -1;
    }
    s_zero = PyLong_FromLong(0);
    s_one = PyLong_FromLong(1);
    return s_zero == NULL || s_one == NULL ? -1 : 0;
}
