/* polycorn.server._accel, its second half: the app call and the response of the
 * event worker's common request, in C (docs/internals/accel.md, "respond").
 *
 *   configure(start_type, take_response, statuses, header_lists, heads,
 *             head_from, end_to, running, writev_size)
 *       The Python objects the functions below consult, given once at import by
 *       server/workers/event_native.py: the Python StartResponse class and
 *       run.take_response (the Python path, taken for anything unusual), the
 *       caches StartResponse and response.head_parts fill (read here, never
 *       written), the response states respond_whole moves between, RunState.RUNNING
 *       and the largest body framed in one piece.
 *   respond(app, environ, conn, worker)
 *       app(environ, start_response) with a compiled start_response, and for the
 *       common answer (a remembered status and header list, a list or tuple of at
 *       most one bytes object) the whole response framed as conn.respond_whole
 *       frames it, conn moved as respond_whole moves it: bytes, or, for a body past
 *       writev_size, (head, body), to be written together without a copy.
 *       For any other answer, the app's iterable goes on in Python:
 *       take_response(iterable, StartResponse) is returned (an AppResponse), the
 *       StartResponse holding what the app declared so far.
 *   known_header_list(headers, table)
 *       StartResponse's look-up of a header list it has validated before.
 *
 * The decisions stay Python's: a status or header list is taken only when the
 * Python StartResponse has validated and remembered it, a head only when
 * response.head_parts has framed and remembered it (frame_response is the one
 * framing policy); every other case calls the Python code, which decides and
 * raises as before.  Nothing here keeps a pointer into an object past a call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include "accel.h"

static PyObject *start_type, *take_response, *statuses, *header_lists, *heads,
    *head_from, *end_to, *running;
static Py_ssize_t writev_size = -1;
static PyObject *s_status, *s_status_code, *s_reason, *s_headers, *s_wire_headers,
    *s_content_length, *s_write, *s_state, *s_refuse_keep_alive, *s_respond_whole,
    *s_request, *s_response_state, *s_persistent, *s_continue_owed, *s_date_cache,
    *s_clock, *s_cached, *s_current, *s_method, *s_http_version, *s_empty;

/* 1 when list holds the very objects tuple holds, in order (so the same values:
 * the items compared are tuples of str or bytes, immutable), else 0. */
static int
same_items(PyObject *list, PyObject *tuple)
{
    Py_ssize_t count = PyList_GET_SIZE(list);
    if (tuple == NULL || count != PyTuple_GET_SIZE(tuple))
        return 0;
    for (Py_ssize_t n = 0; n < count; n++)
        if (PyList_GET_ITEM(list, n) != PyTuple_GET_ITEM(tuple, n))
            return 0;
    return 1;
}

/* The last header list found in the table (its items, strong) and what the table
 * held for it (strong): an app answers with the same list of constant tuples every
 * time, and the table's entry for a key never changes (StartResponse stores what its
 * validation of those items gave), so the same items need no key tuple built and
 * hashed again. Only for the table respond is configured with. */
static PyObject *last_list_items, *last_list_known;

/* table.get(tuple(headers)) when headers (a list) holds only exact (str, str)
 * tuples: a new reference, Py_None when not plain or not remembered, NULL on error. */
static PyObject *
lookup_header_list(PyObject *headers, PyObject *table)
{
    if (table == header_lists && same_items(headers, last_list_items))
        return Py_NewRef(last_list_known);
    Py_ssize_t count = PyList_GET_SIZE(headers);
    PyObject *key = PyTuple_New(count);
    if (key == NULL)
        return NULL;
    for (Py_ssize_t n = 0; n < count; n++) {
        PyObject *item = PyList_GET_ITEM(headers, n);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2
                || !PyUnicode_CheckExact(PyTuple_GET_ITEM(item, 0))
                || !PyUnicode_CheckExact(PyTuple_GET_ITEM(item, 1))) {
            Py_DECREF(key);
            Py_RETURN_NONE;  /* not plain: the Python path validates (and refuses) it */
        }
        Py_INCREF(item);
        PyTuple_SET_ITEM(key, n, item);
    }
    PyObject *known = PyDict_GetItemWithError(table, key);  /* borrowed */
    if (known == NULL) {
        Py_DECREF(key);
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    if (table == header_lists) {
        Py_XSETREF(last_list_items, key);
        Py_XSETREF(last_list_known, Py_NewRef(known));
    } else {
        Py_DECREF(key);
    }
    return Py_NewRef(known);
}

PyObject *
accel_known_header_list(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "known_header_list(list, dict)");
        return NULL;
    }
    return lookup_header_list(args[0], args[1]);
}

/* The compiled start_response of one app call.  What the app declared on the
 * common path is kept here; from the first thing the common path does not cover
 * (an unknown status or list, exc_info, a second call, write(), keywords) a
 * Python StartResponse holding the same declaration takes every call. */
typedef struct {
    PyObject_HEAD
    PyObject *py;      /* the Python StartResponse, once made */
    PyObject *status;  /* the status str, once declared here */
    PyObject *code, *reason, *kept, *wire, *length;
} FastStart;

static int
fs_traverse(FastStart *self, visitproc visit, void *arg)
{
    Py_VISIT(self->py);
    Py_VISIT(self->status);
    Py_VISIT(self->code);
    Py_VISIT(self->reason);
    Py_VISIT(self->kept);
    Py_VISIT(self->wire);
    Py_VISIT(self->length);
    return 0;
}

static int
fs_clear(FastStart *self)
{
    Py_CLEAR(self->py);
    Py_CLEAR(self->status);
    Py_CLEAR(self->code);
    Py_CLEAR(self->reason);
    Py_CLEAR(self->kept);
    Py_CLEAR(self->wire);
    Py_CLEAR(self->length);
    return 0;
}

static void
fs_dealloc(FastStart *self)
{
    PyObject_GC_UnTrack(self);
    fs_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
set_copy(PyObject *py, PyObject *name, PyObject *list)
{
    PyObject *copy = PyList_GetSlice(list, 0, PyList_GET_SIZE(list));
    if (copy == NULL)
        return -1;
    int rc = PyObject_SetAttr(py, name, copy);
    Py_DECREF(copy);
    return rc;
}

/* The Python StartResponse, made with what was declared here (as its own fast
 * path would have set it: the remembered lists copied). 0, or -1 on error. */
static int
materialise(FastStart *self)
{
    if (self->py != NULL)
        return 0;
    PyObject *py = PyObject_CallNoArgs(start_type);
    if (py == NULL)
        return -1;
    if (self->status != NULL
            && (PyObject_SetAttr(py, s_status_code, self->code) < 0
                || PyObject_SetAttr(py, s_reason, self->reason) < 0
                || PyObject_SetAttr(py, s_status, self->status) < 0
                || set_copy(py, s_headers, self->kept) < 0
                || set_copy(py, s_wire_headers, self->wire) < 0
                || PyObject_SetAttr(py, s_content_length, self->length) < 0)) {
        Py_DECREF(py);
        return -1;
    }
    self->py = py;
    return 0;
}

static PyObject *
fs_call(FastStart *self, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    if (self->py == NULL && self->status == NULL
            && (kwargs == NULL || PyDict_GET_SIZE(kwargs) == 0)
            && (nargs == 2 || (nargs == 3 && PyTuple_GET_ITEM(args, 2) == Py_None))
            && PyUnicode_CheckExact(PyTuple_GET_ITEM(args, 0))
            && PyList_CheckExact(PyTuple_GET_ITEM(args, 1))) {
        PyObject *status = PyTuple_GET_ITEM(args, 0);
        PyObject *known = PyDict_GetItemWithError(statuses, status);  /* borrowed */
        if (known == NULL && PyErr_Occurred())
            return NULL;
        if (known != NULL && PyTuple_CheckExact(known) && PyTuple_GET_SIZE(known) == 2) {
            PyObject *list = lookup_header_list(PyTuple_GET_ITEM(args, 1), header_lists);
            if (list == NULL)
                return NULL;
            if (PyTuple_CheckExact(list) && PyTuple_GET_SIZE(list) == 3
                    && PyList_CheckExact(PyTuple_GET_ITEM(list, 0))
                    && PyList_CheckExact(PyTuple_GET_ITEM(list, 1))) {
                self->status = Py_NewRef(status);
                self->code = Py_NewRef(PyTuple_GET_ITEM(known, 0));
                self->reason = Py_NewRef(PyTuple_GET_ITEM(known, 1));
                self->kept = Py_NewRef(PyTuple_GET_ITEM(list, 0));
                self->wire = Py_NewRef(PyTuple_GET_ITEM(list, 1));
                self->length = Py_NewRef(PyTuple_GET_ITEM(list, 2));
                Py_DECREF(list);
                return PyObject_GetAttr((PyObject *)self, s_write);
            }
            Py_DECREF(list);
        }
    }
    if (materialise(self) < 0)
        return NULL;
    return PyObject_Call(self->py, args, kwargs);
}

static PyObject *
fs_write(FastStart *self, PyObject *data)
{
    if (materialise(self) < 0)
        return NULL;
    return PyObject_CallMethodOneArg(self->py, s_write, data);
}

static PyMethodDef fs_methods[] = {
    {"write", (PyCFunction)fs_write, METH_O, "PEP 3333's write(): the Python StartResponse's."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastStartType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "polycorn.server._accel.StartResponse",
    .tp_basicsize = sizeof(FastStart),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "start_response of one app call (the Python StartResponse past the common case).",
    .tp_call = (ternaryfunc)fs_call,
    .tp_traverse = (traverseproc)fs_traverse,
    .tp_clear = (inquiry)fs_clear,
    .tp_dealloc = (destructor)fs_dealloc,
    .tp_methods = fs_methods,
};

/* DateCache.current()'s text: its remembered text while its clock is in the same
 * second (int(clock()) == _cached[0], as current() tests), else current() itself.
 * A new reference or NULL. */
static PyObject *
current_date(PyObject *conn)
{
    PyObject *cache = accel_getattr(conn, s_date_cache);
    if (cache == NULL)
        return NULL;
    PyObject *clock = accel_getattr(cache, s_clock);
    PyObject *now = clock == NULL ? NULL : PyObject_CallNoArgs(clock);
    Py_XDECREF(clock);
    PyObject *second = now == NULL ? NULL : PyNumber_Long(now);
    Py_XDECREF(now);
    PyObject *cached = second == NULL ? NULL : accel_getattr(cache, s_cached);
    PyObject *text = NULL;
    if (cached != NULL && PyTuple_CheckExact(cached) && PyTuple_GET_SIZE(cached) == 2
            && PyBytes_CheckExact(PyTuple_GET_ITEM(cached, 1))) {
        int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(cached, 0), second, Py_EQ);
        if (same > 0)
            text = Py_NewRef(PyTuple_GET_ITEM(cached, 1));
        else if (same == 0)
            text = PyObject_CallMethodNoArgs(cache, s_current);
    } else if (cached != NULL) {
        text = PyObject_CallMethodNoArgs(cache, s_current);
    }
    Py_XDECREF(second);
    Py_XDECREF(cached);
    Py_DECREF(cache);
    return text;
}

/* The last key found in heads (strong) and its entry (strong). frame_response is a
 * pure function of the key (response.py) and an app answers with few heads, so a
 * request whose key has the same parts is given the same entry without its key
 * built and hashed: method and version equal bytes, status code, reason and
 * persistence the same objects, the header list the same items. */
static PyObject *last_head_key, *last_head;

static int
same_bytes(PyObject *a, PyObject *b)
{
    return a == b || (PyBytes_CheckExact(a) && PyBytes_CheckExact(b)
                      && PyBytes_GET_SIZE(a) == PyBytes_GET_SIZE(b)
                      && memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b),
                                (size_t)PyBytes_GET_SIZE(a)) == 0);
}

/* heads' entry for this response when its key is the last one's (borrowed), or NULL. */
static PyObject *
remembered_head(PyObject *method, PyObject *version, FastStart *start, PyObject *persistent)
{
    PyObject *key = last_head_key;
    if (key == NULL || PyTuple_GET_ITEM(key, 2) != start->code
            || PyTuple_GET_ITEM(key, 3) != start->reason
            || PyTuple_GET_ITEM(key, 5) != persistent
            || !same_bytes(PyTuple_GET_ITEM(key, 0), method)
            || !same_bytes(PyTuple_GET_ITEM(key, 1), version)
            || !same_items(start->wire, PyTuple_GET_ITEM(key, 4)))
        return NULL;
    return last_head;
}

static void
remember_head(PyObject *key, PyObject *entry)
{
    Py_XSETREF(last_head_key, Py_NewRef(key));
    Py_XSETREF(last_head, Py_NewRef(entry));
}

/* conn.respond_whole(code, reason, wire, body), done here when the head is one
 * head_parts remembered with a Content-Length equal to len(body); otherwise the
 * Python method itself (which frames, or raises, as it always does).  A large body
 * (past writev_size) is not copied: framed here it is (head, body), for the
 * transport's writelines; not framed here, *declined is set and NULL returned
 * without an error (the caller takes the Python path, which writes it uncopied). */
static PyObject *
respond_whole(PyObject *conn, FastStart *start, PyObject *body, int large, int *declined)
{
    PyObject *request = accel_getattr(conn, s_request);
    PyObject *state = request == NULL ? NULL : accel_getattr(conn, s_response_state);
    PyObject *persistent = state == NULL ? NULL : accel_getattr(conn, s_persistent);
    PyObject *key = NULL, *result = NULL;
    if (persistent == NULL)
        goto done;
    PyObject *cached = NULL;  /* borrowed from heads (or the memo of its last entry) */
    if (request != Py_None && state == head_from) {
        PyObject *method = accel_getattr(request, s_method);
        PyObject *version = method == NULL ? NULL : accel_getattr(request, s_http_version);
        if (version != NULL && PyList_CheckExact(start->wire))
            cached = remembered_head(method, version, start, persistent);
        PyObject *wire = version == NULL || cached != NULL ? NULL : PyList_AsTuple(start->wire);
        if (wire != NULL)
            key = PyTuple_Pack(6, method, version, start->code, start->reason, wire, persistent);
        if (key != NULL) {
            cached = PyDict_GetItemWithError(heads, key);
            if (cached != NULL)
                remember_head(key, cached);
        }
        Py_XDECREF(method);
        Py_XDECREF(version);
        Py_XDECREF(wire);
        if (cached == NULL && (key == NULL || PyErr_Occurred()))
            goto done;
    }
    PyObject *length = cached != NULL && PyTuple_CheckExact(cached)
        && PyTuple_GET_SIZE(cached) == 5 ? PyTuple_GET_ITEM(cached, 2) : NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(body), want = -1;
    if (length != NULL && PyLong_CheckExact(length)) {
        want = PyLong_AsSsize_t(length);
        if (want == -1 && PyErr_Occurred())
            PyErr_Clear();  /* past Py_ssize_t: surely not len(body); Python says so */
    }
    if (want != size) {
        if (large)
            *declined = 1;
        else
            result = PyObject_CallMethodObjArgs(conn, s_respond_whole, start->code,
                                                start->reason, start->wire, body, NULL);
        goto done;
    }
    PyObject *before = PyTuple_GET_ITEM(cached, 0), *after = PyTuple_GET_ITEM(cached, 1);
    if (!PyBytes_CheckExact(before) || (after != Py_None && !PyBytes_CheckExact(after))) {
        PyErr_SetString(PyExc_TypeError, "respond: a remembered head is not bytes");
        goto done;
    }
    Py_INCREF(cached);  /* the attribute writes below run no Python code, but be sure */
    PyObject *date = after == Py_None ? NULL : current_date(conn);
    if ((after != Py_None && date == NULL)
            || (date != NULL && !PyBytes_CheckExact(date))) {
        if (date != NULL)
            PyErr_SetString(PyExc_TypeError, "respond: the Date is not bytes");
        Py_XDECREF(date);
        Py_DECREF(cached);
        goto done;
    }
    /* respond_whole's moves: persistence as framed, no 100 Continue owed, response over. */
    if (accel_setattr(conn, s_persistent, PyTuple_GET_ITEM(cached, 4)) < 0
            || accel_setattr(conn, s_continue_owed, Py_False) < 0
            || accel_setattr(conn, s_response_state, end_to) < 0) {
        Py_XDECREF(date);
        Py_DECREF(cached);
        goto done;
    }
    Py_ssize_t nbefore = PyBytes_GET_SIZE(before);
    Py_ssize_t ndate = date == NULL ? 0 : PyBytes_GET_SIZE(date);
    Py_ssize_t nafter = date == NULL ? 0 : PyBytes_GET_SIZE(after);
    if (large)
        size = 0;  /* the head alone; the body goes beside it */
    result = PyBytes_FromStringAndSize(NULL, nbefore + ndate + nafter + size);
    if (result != NULL) {
        char *out = PyBytes_AS_STRING(result);
        memcpy(out, PyBytes_AS_STRING(before), (size_t)nbefore);
        out += nbefore;
        if (date != NULL) {
            memcpy(out, PyBytes_AS_STRING(date), (size_t)ndate);
            out += ndate;
            memcpy(out, PyBytes_AS_STRING(after), (size_t)nafter);
            out += nafter;
        }
        memcpy(out, PyBytes_AS_STRING(body), (size_t)size);
    }
    if (large && result != NULL)
        Py_SETREF(result, PyTuple_Pack(2, result, body));
    Py_XDECREF(date);
    Py_DECREF(cached);
done:
    Py_XDECREF(key);
    Py_XDECREF(request);
    Py_XDECREF(state);
    Py_XDECREF(persistent);
    return result;
}

/* The body of the common answer (borrowed), or NULL: a list or tuple of no item or
 * of one exact bytes object (run_app's first chunk, with nothing after it); *large
 * when it is past writev_size (written beside its head, not copied into it). */
static PyObject *
plain_body(PyObject *iterable, int *large)
{
    if (!PyList_CheckExact(iterable) && !PyTuple_CheckExact(iterable))
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(iterable);
    if (count == 0)
        return s_empty;
    if (count != 1)
        return NULL;
    PyObject *item = PySequence_Fast_GET_ITEM(iterable, 0);
    if (!PyBytes_CheckExact(item))
        return NULL;
    *large = PyBytes_GET_SIZE(item) > writev_size;
    return item;
}

PyObject *
accel_respond(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "respond takes 4 arguments");
        return NULL;
    }
    if (writev_size < 0) {
        PyErr_SetString(PyExc_RuntimeError, "respond: configure() was not called");
        return NULL;
    }
    PyObject *app = args[0], *environ = args[1], *conn = args[2], *worker = args[3];
    FastStart *start = PyObject_GC_New(FastStart, &FastStartType);
    if (start == NULL)
        return NULL;
    start->py = start->status = start->code = start->reason = NULL;
    start->kept = start->wire = start->length = NULL;
    PyObject_GC_Track(start);
    PyObject *call[2] = {environ, (PyObject *)start};
    PyObject *iterable = PyObject_Vectorcall(app, call, 2, NULL);
    PyObject *result = NULL;
    if (iterable == NULL)
        goto done;
    int large = 0, declined = 0;
    PyObject *body = start->py == NULL && start->status != NULL
        ? plain_body(iterable, &large) : NULL;
    if (body == NULL) {
        /* Not the common answer: run_app's remainder, in Python, from here. */
        if (materialise(start) == 0)
            result = PyObject_CallFunctionObjArgs(take_response, iterable, start->py, NULL);
        goto done;
    }
    Py_INCREF(body);
    /* A drain began during the app call: the head says close (as _respond does). */
    PyObject *state = PyObject_GetAttr(worker, s_state);
    if (state != NULL && state != running) {
        PyObject *done = PyObject_CallMethodNoArgs(conn, s_refuse_keep_alive);
        if (done == NULL)
            Py_CLEAR(state);
        Py_XDECREF(done);
    }
    if (state != NULL)
        result = respond_whole(conn, start, body, large, &declined);
    Py_XDECREF(state);
    Py_DECREF(body);
    if (declined && materialise(start) == 0)
        result = PyObject_CallFunctionObjArgs(take_response, iterable, start->py, NULL);
done:
    Py_XDECREF(iterable);
    Py_DECREF(start);
    return result;
}

PyObject *
accel_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 || !PyType_Check(args[0]) || !PyCallable_Check(args[1])
            || !PyDict_CheckExact(args[2]) || !PyDict_CheckExact(args[3])
            || !PyDict_CheckExact(args[4]) || !PyLong_Check(args[8])) {
        PyErr_SetString(PyExc_TypeError, "configure: unexpected arguments");
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[8]);
    if (size < 0)
        return PyErr_Occurred() ? NULL : (PyErr_SetString(PyExc_ValueError, "writev_size"), NULL);
    PyObject **slots[8] = {&start_type, &take_response, &statuses, &header_lists, &heads,
                           &head_from, &end_to, &running};
    for (int n = 0; n < 8; n++)
        Py_XSETREF(*slots[n], Py_NewRef(args[n]));
    writev_size = size;
    /* The memos are of the tables configured before. */
    Py_CLEAR(last_list_items);
    Py_CLEAR(last_list_known);
    Py_CLEAR(last_head_key);
    Py_CLEAR(last_head);
    Py_RETURN_NONE;
}

int
accel_respond_init(PyObject *module)
{
    if (PyType_Ready(&FastStartType) < 0)
        return -1;
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_status, "status"}, {&s_status_code, "status_code"}, {&s_reason, "reason"},
        {&s_headers, "headers"}, {&s_wire_headers, "wire_headers"},
        {&s_content_length, "content_length"}, {&s_write, "write"}, {&s_state, "state"},
        {&s_refuse_keep_alive, "refuse_keep_alive"}, {&s_respond_whole, "respond_whole"},
        {&s_request, "_request"}, {&s_response_state, "_response_state"},
        {&s_persistent, "_persistent"}, {&s_continue_owed, "_continue_owed"},
        {&s_date_cache, "_date_cache"}, {&s_clock, "_clock"}, {&s_cached, "_cached"},
        {&s_current, "current"}, {&s_method, "method"}, {&s_http_version, "http_version"},
    };
    for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
        *names[n].slot = PyUnicode_InternFromString(names[n].text);
        if (*names[n].slot == NULL)
            return -1;
    }
    s_empty = PyBytes_FromStringAndSize("", 0);
    if (s_empty == NULL)
        return -1;
    Py_INCREF(&FastStartType);
    return PyModule_AddObject(module, "StartResponse", (PyObject *)&FastStartType);
}
