/* polycorn.server._accel, its fifth part: the event worker's request cycle for
 * plain requests, in one call per read.
 *
 *   serve_plain(protocol, conn, ctx, app, worker, client, header_keys, trusted_keys)
 *       What HTTPProtocol._process, _respond and _finish_cycle (event_protocol.py)
 *       do for each whole plain request at the start of conn's buffer: take it
 *       (take_plain), call the app (respond), write the response (its bytes, or a
 *       large body beside its head with writelines), end the
 *       cycle (served, ctx.count_request()'s steps, conn.start_next_cycle()), and, when the
 *       buffer is then empty, go idle with the keep-alive deadline.  Everything
 *       else is handed to the protocol's own Python methods at the point the Python
 *       code would reach them: an answer that is not the response's bytes
 *       (_answer), an exception of the app or the write (_app_failed, _app_exited),
 *       a response after which the connection is not kept (_end_without_keep_alive).
 *       False when the connection went idle or is done with for now (closed,
 *       lingering, a response suspended on a full buffer); None, with nothing
 *       changed since the last request it served, when the buffer does not start
 *       with a whole plain request (the Python events take it from there).
 *   data_received (a method descriptor: HTTPProtocol.data_received when compiled)
 *       A read in the reading or idle phase with ctx.serve_plain on: appended to the
 *       connection's buffer (AccelConnection.receive_data's common case) and served
 *       by serve_plain, then _process for whatever it left; any other read goes to
 *       the Python method (_data_received). No Python frame between uvloop and the
 *       cycle.
 *   configure_serve(request_type, empty_input, reading, idle, closed, req_body,
 *                   monotonic, req_error, receive_data, running, start_next_cycle,
 *                   req_next_from, req_next_to, resp_next_from, resp_next_to, no_body)
 *       split_head's Request type, EMPTY_INPUT, the protocol phases it sets and
 *       compares, the request state keep_alive excludes, time.monotonic (the
 *       clock of the worker's deadline sweep), the dead connection's request state,
 *       the receive_data taken here, RunState.RUNNING, and start_next_cycle's one
 *       move (cycle.py: the method, its from and to states, NO_BODY): the Python
 *       methods are called wherever a class has its own or the state is another.
 *
 * Why in C: on a kept-alive connection of a hello app the Python frames between
 * the compiled take and respond (the cycle's end, the keep-alive check, the next
 * event's NEED_DATA) were a quarter of the worker's CPU per request; the six left
 * after that (data_received, receive_data, _process, the two count_requests,
 * start_next_cycle) were still an eighth (3.08 -> 2.72 us in-process).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "accel.h"

static PyObject *request_type, *empty_input, *reading, *idle, *closed, *req_body, *monotonic,
    *req_error, *receive_data_fn, *running, *next_cycle_fn, *req_next_from, *req_next_to,
    *resp_next_from, *resp_next_to, *no_body;
static PyObject *s_request, *s_environ, *s_phase, *s_body_bytes, *s_body_size, *s_resp,
    *s_served, *s_deadline, *s_transport, *s_write, *s_writelines, *s_answer, *s_app_failed,
    *s_app_exited, *s_end_without, *s_count_request, *s_start_next_cycle, *s_persistent,
    *s_request_state, *s_keepalive, *s_fallback_reason, *s_eof, *s_received, *s_zero, *s_one,
    *s_state, *s_worker_stopping, *s_ctx, *s_conn, *s_serve_plain, *s_builder, *s_plain_keys,
    *s_app, *s_worker, *s_client_entries, *s_process, *s_pure_data_received, *s_receive_data,
    *s_response_state, *s_request_, *s_writer, *s_continue_owed;

/* 1 when got (a new reference, or NULL on error) is `value` (identity), 0 when not,
 * -1 on error. */
static int
is_value(PyObject *got, PyObject *value)
{
    if (got == NULL)
        return -1;
    Py_DECREF(got);
    return got == value;
}

/* obj.name is value: a macro, so that each use has its own slot site (accel.h). */
#define attr_is(obj, name, value) is_value(accel_getattr((obj), (name)), (value))

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

/* conn.start_next_cycle() (cycle.py) for a persistent connection: its one move, from
 * the NEXT_CYCLE step's states to the next request's, made here when conn is in them
 * (and its class has no start_next_cycle of its own); any other case in Python,
 * which raises as the transition tables say. 0 or -1. */
static int
start_next_cycle(PyObject *conn)
{
    if (_PyType_Lookup(Py_TYPE(conn), s_start_next_cycle) == next_cycle_fn) {
        int at_end = attr_is(conn, s_request_state, req_next_from);
        int sent = at_end > 0 ? attr_is(conn, s_response_state, resp_next_from) : at_end;
        if (sent < 0)
            return -1;
        if (sent) {
            if (accel_setattr(conn, s_request_state, req_next_to) < 0
                    || accel_setattr(conn, s_response_state, resp_next_to) < 0
                    || accel_setattr(conn, s_request_, Py_None) < 0
                    || accel_setattr(conn, s_writer, no_body) < 0)
                return -1;
            return accel_setattr(conn, s_continue_owed, Py_False);
        }
    }
    PyObject *done = PyObject_CallMethodNoArgs(conn, s_start_next_cycle);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* _finish_cycle for a response sent whole (no AppResponse, no trace, no body held):
 * a new reference to True when the next cycle has begun, False, or NULL. */
static PyObject *
finish_cycle(PyObject *protocol, PyObject *conn, PyObject *ctx, PyObject *worker)
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
    /* ctx.count_request() (event_context.py), its worker's count and state read here. */
    PyObject *done = PyObject_CallMethodNoArgs(worker, s_count_request);
    if (done == NULL)
        return NULL;
    Py_DECREF(done);
    int still = attr_is(worker, s_state, running);
    if (still < 0)
        return NULL;
    if (!still) {
        done = PyObject_CallMethodNoArgs(ctx, s_worker_stopping);
        if (done == NULL)
            return NULL;
        Py_DECREF(done);
    }
    int gone = attr_is(protocol, s_phase, closed);
    if (gone != 0)
        return gone < 0 ? NULL : Py_NewRef(Py_False);
    /* conn.keep_alive (cycle.py): persistent, and no request body left unread. */
    int persistent = attr_is(conn, s_persistent, Py_True);
    int in_body = persistent > 0 ? attr_is(conn, s_request_state, req_body) : 0;
    if (persistent < 0 || in_body < 0)
        return NULL;
    if (persistent && !in_body) {
        if (start_next_cycle(conn) < 0)
            return NULL;
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
    return finish_cycle(protocol, conn, ctx, args[4]);
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

/* conn.receive_data(data) (fast.py's AccelConnection): its common case, a read
 * appended to the compiled half's buffer, here; everything else (the pure half's
 * buffer, EOF, a dead connection, a class with its own receive_data) in Python.
 * 0 or -1. */
static int
receive(PyObject *conn, PyObject *data)
{
    if (_PyType_Lookup(Py_TYPE(conn), s_receive_data) == receive_data_fn) {
        int plain = attr_is(conn, s_fallback_reason, Py_None);
        int open = plain > 0 ? attr_is(conn, s_eof, Py_False) : plain;
        int broken = open > 0 ? attr_is(conn, s_request_state, req_error) : 1;
        if (broken < 0 || open < 0)
            return -1;
        PyObject *received = broken ? NULL : accel_getattr(conn, s_received);
        if (!broken && received == NULL)
            return -1;
        if (received != NULL && PyBytes_CheckExact(received)) {
            /* self._received + data if self._received else data */
            if (PyBytes_GET_SIZE(received) == 0)
                Py_SETREF(received, Py_NewRef(data));
            else
                PyBytes_Concat(&received, data);
            if (received == NULL)
                return -1;
            int rc = accel_setattr(conn, s_received, received);
            Py_DECREF(received);
            return rc;
        }
        Py_XDECREF(received);
    }
    PyObject *done = PyObject_CallMethodOneArg(conn, s_receive_data, data);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* HTTPProtocol.data_received, bound as a method of the class (the descriptor below):
 * a read in the reading or idle phase, with serve_plain on, is received and served
 * here, with no Python frame between uvloop and the compiled cycle; any other read
 * goes to the Python method (_data_received), which does all of it in Python. */
static PyObject *
data_received(PyObject *protocol, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "data_received(data)");
        return NULL;
    }
    if (monotonic == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "data_received: configure_serve() was not called");
        return NULL;
    }
    PyObject *data = args[0];
    int reading_now = attr_is(protocol, s_phase, reading);
    int idle_now = reading_now == 0 ? attr_is(protocol, s_phase, idle) : 0;
    if (reading_now < 0 || idle_now < 0)
        return NULL;
    PyObject *ctx = NULL, *serve = NULL, *conn = NULL, *builder = NULL, *keys = NULL,
        *app = NULL, *worker = NULL, *client = NULL, *result = NULL;
    if ((reading_now || idle_now) && PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0) {
        ctx = accel_getattr(protocol, s_ctx);
        serve = ctx == NULL ? NULL : PyObject_GetAttr(ctx, s_serve_plain);
        if (serve == NULL)
            goto done;
    }
    if (serve == NULL || serve == Py_None) {
        result = PyObject_CallMethodOneArg(protocol, s_pure_data_received, data);
        goto done;
    }
    conn = accel_getattr(protocol, s_conn);
    if (conn == NULL || receive(conn, data) < 0)
        goto done;
    /* _process: serve_plain with the builder's keys, then the events for what it left. */
    builder = accel_getattr(protocol, s_builder);
    keys = builder == NULL ? NULL : PyObject_GetAttr(builder, s_plain_keys);
    if (keys == NULL)
        goto done;
    if (PyTuple_CheckExact(keys) && PyTuple_GET_SIZE(keys) == 2) {
        app = PyObject_GetAttr(ctx, s_app);
        worker = app == NULL ? NULL : PyObject_GetAttr(ctx, s_worker);
        client = worker == NULL ? NULL : accel_getattr(protocol, s_client_entries);
        if (client == NULL)
            goto done;
        PyObject *serve_args[8] = {protocol, conn, ctx, app, worker, client,
                                   PyTuple_GET_ITEM(keys, 0), PyTuple_GET_ITEM(keys, 1)};
        PyObject *went = PyObject_Vectorcall(serve, serve_args, 8, NULL);
        if (went == NULL)
            goto done;
        Py_DECREF(went);
        if (went == Py_False) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    result = PyObject_CallMethodNoArgs(protocol, s_process);
done:
    Py_XDECREF(ctx);
    Py_XDECREF(serve);
    Py_XDECREF(conn);
    Py_XDECREF(builder);
    Py_XDECREF(keys);
    Py_XDECREF(app);
    Py_XDECREF(worker);
    Py_XDECREF(client);
    return result;
}

static PyMethodDef data_received_def = {
    "data_received", (PyCFunction)(void (*)(void))data_received, METH_FASTCALL,
    "HTTPProtocol.data_received, compiled (accel_serve.c)."};

PyObject *
accel_configure_serve(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 16 || !PyCallable_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "configure_serve(request_type, empty_input, "
                        "reading, idle, closed, req_body, monotonic, req_error, "
                        "receive_data, running, start_next_cycle, req_next_from, "
                        "req_next_to, resp_next_from, resp_next_to, no_body)");
        return NULL;
    }
    PyObject **slots[16] = {&request_type, &empty_input, &reading, &idle, &closed, &req_body,
                            &monotonic, &req_error, &receive_data_fn, &running,
                            &next_cycle_fn, &req_next_from, &req_next_to, &resp_next_from,
                            &resp_next_to, &no_body};
    for (int n = 0; n < 16; n++)
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
        {&s_eof, "_eof"}, {&s_received, "_received"}, {&s_state, "state"},
        {&s_worker_stopping, "worker_stopping"}, {&s_ctx, "ctx"}, {&s_conn, "conn"},
        {&s_serve_plain, "serve_plain"}, {&s_builder, "builder"},
        {&s_plain_keys, "plain_keys"}, {&s_app, "app"}, {&s_worker, "worker"},
        {&s_client_entries, "client_entries"}, {&s_process, "_process"},
        {&s_pure_data_received, "_data_received"}, {&s_receive_data, "receive_data"},
        {&s_response_state, "_response_state"}, {&s_request_, "_request"},
        {&s_writer, "_writer"}, {&s_continue_owed, "_continue_owed"},
    };
    for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
        *names[n].slot = PyUnicode_InternFromString(names[n].text);
        if (*names[n].slot == NULL)
            return -1;
    }
    s_zero = PyLong_FromLong(0);
    s_one = PyLong_FromLong(1);
    if (s_zero == NULL || s_one == NULL)
        return -1;
    /* A method descriptor of object: in a class body it binds as a C method does, so
     * uvloop's bound data_received calls it with no Python frame. */
    PyObject *method = PyDescr_NewMethod(&PyBaseObject_Type, &data_received_def);
    if (method == NULL || PyModule_AddObject(module, "data_received", method) < 0) {
        Py_XDECREF(method);
        return -1;
    }
    return 0;
}
