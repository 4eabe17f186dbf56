/* polycorn.server._accel: the compiled half of the per-request path (optional).
 *
 * Pure functions, each a strict subset of a Python one that stays the
 * reference (server/accel.py loads this module; docs/internals/accel.md):
 *
 *   split_head(buf, max_fields, max_len)
 *       A complete, plain request head at the start of buf, split as the pure
 *       parser (head.py, headers.py) would split it, or None for anything else
 *       (no complete head yet, a limit near, a byte or form it does not accept):
 *       the caller then takes its Python path, which gives every verdict.
 *
 * The module's other functions are in accel_environ.c (build_environ),
 * accel_respond.c (respond, known_header_list), accel_take.c (take_plain) and
 * accel_serve.c (serve_plain, the event worker's cycle around those); accel_slots.c reads and writes their objects' __slots__ in place; accel.h lists them.
 *
 * It never raises for bad input: refusing is the Python path's job, so
 * a request is never judged by two implementations.  It keeps no pointer
 * into a Python object past the call, and every length is bounded by the
 * bytes object it indexes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include "accel.h"

/* RFC 9110 5.6.2 tchar. */
static unsigned char is_tchar[256];
/* RFC 9110 5.5 field-vchar / SP / HTAB (obs-text included): a field value's bytes. */
static unsigned char is_value[256];
/* A target byte taken without a second look: visible ASCII but "#" (RFC 9112 3.2.1). */
static unsigned char is_target[256];

static void
init_tables(void)
{
    const char *tchars = "!#$%&'*+-.^_`|~";
    for (int c = '0'; c <= '9'; c++) is_tchar[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) is_tchar[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++) is_tchar[c] = 1;
    for (const char *p = tchars; *p; p++) is_tchar[(unsigned char)*p] = 1;
    is_value['\t'] = 1;
    for (int c = 0x20; c <= 0x7e; c++) is_value[c] = 1;
    for (int c = 0x80; c <= 0xff; c++) is_value[c] = 1;
    for (int c = 0x21; c <= 0x7e; c++) is_target[c] = 1;
    is_target['#'] = 0;
}

/* Lower-cased field names, by their wire spelling: clients repeat theirs, and a
 * name that comes back as the same object has its hash cached for every dict
 * lookup after it.  Bounded: names are chosen by clients. */
#define MAX_KNOWN_NAMES 512
static PyObject *known_names;  /* dict: wire bytes -> lower-cased bytes */
/* events.Request's fields, in its __slots__ order (interned names). */
static PyObject *request_fields[8];

/* Interned framing-field names (framing.py's _SELECTED), by their length. */
enum { F_OTHER, F_HOST, F_CONNECTION, F_CONTENT_TYPE, F_CONTENT_LENGTH, F_FRAMING };

static int
framing_kind(const char *name, Py_ssize_t len)
{
    switch (len) {
    case 4: return memcmp(name, "host", 4) == 0 ? F_HOST : F_OTHER;
    case 6: return memcmp(name, "expect", 6) == 0 ? F_FRAMING : F_OTHER;
    case 10: return memcmp(name, "connection", 10) == 0 ? F_CONNECTION : F_OTHER;
    case 12: return memcmp(name, "content-type", 12) == 0 ? F_CONTENT_TYPE : F_OTHER;
    case 14: return memcmp(name, "content-length", 14) == 0 ? F_CONTENT_LENGTH : F_OTHER;
    case 17: return memcmp(name, "transfer-encoding", 17) == 0 ? F_FRAMING : F_OTHER;
    default: return F_OTHER;
    }
}

/* The lower-cased name for the wire bytes [p, p+len): a new reference or NULL. */
static PyObject *
lowered_name(const char *p, Py_ssize_t len)
{
    PyObject *wire = PyBytes_FromStringAndSize(p, len);
    if (wire == NULL)
        return NULL;
    PyObject *known = PyDict_GetItemWithError(known_names, wire);  /* borrowed */
    if (known != NULL) {
        Py_DECREF(wire);
        Py_INCREF(known);
        return known;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(wire);
        return NULL;
    }
    PyObject *lower = PyBytes_FromStringAndSize(NULL, len);
    if (lower == NULL) {
        Py_DECREF(wire);
        return NULL;
    }
    char *out = PyBytes_AS_STRING(lower);
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        out[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    if (PyDict_GET_SIZE(known_names) < MAX_KNOWN_NAMES
            && PyDict_SetItem(known_names, wire, lower) < 0) {
        Py_DECREF(wire);
        Py_DECREF(lower);
        return NULL;
    }
    Py_DECREF(wire);
    return lower;
}

/* Where "\r\n\r\n" starts in data[0:len], or -1. */
static Py_ssize_t
find_head_end(const char *data, Py_ssize_t len)
{
    const char *p = data;
    const char *stop = data + len;
    while (p + 4 <= stop) {
        const char *cr = memchr(p, '\r', (size_t)(stop - p - 3));
        if (cr == NULL)
            return -1;
        if (cr[1] == '\n' && cr[2] == '\r' && cr[3] == '\n')
            return cr - data;
        p = cr + 1;
    }
    return -1;
}

/* A Host value that host_re surely accepts: reg-name letters, digits, "." and "-",
 * then an optional ":" and digits (RFC 3986 3.2.2-3). Anything else: Python judges. */
static int
plain_host(PyObject *host)
{
    const char *p = PyBytes_AS_STRING(host);
    Py_ssize_t len = PyBytes_GET_SIZE(host), i = 0;
    while (i < len && (Py_ISALNUM(p[i]) || p[i] == '.' || p[i] == '-'))
        i++;
    if (i == 0)
        return 0;
    if (i < len && p[i] == ':') {
        i++;
        while (i < len && Py_ISDIGIT(p[i]))
            i++;
    }
    return i == len;
}

static int
equals_lower(PyObject *value, const char *text)
{
    Py_ssize_t len = (Py_ssize_t)strlen(text);
    if (PyBytes_GET_SIZE(value) != len)
        return 0;
    const char *p = PyBytes_AS_STRING(value);
    for (Py_ssize_t i = 0; i < len; i++)
        if (Py_TOLOWER(p[i]) != text[i])
            return 0;
    return 1;
}

/* How many of each framing field a head has (framing.py's _SELECTED). */
typedef struct {
    Py_ssize_t host, connection, content_type, content_length, other;
} FramingCounts;

/* framing.decide_framing's answer where it is sure: an HTTP/1.1 request with one
 * plain Host, at most one Content-Type, at most one Content-Length of 1-18 digits
 * (content_length_re) and at most one Connection of "close" or "keep-alive", and
 * no Transfer-Encoding or Expect. 1 (keep-alive) or 0 (close), *length set to the
 * body's length (a new reference) or None; -1 for every other head (Python decides). */
static int
plain_framing(int http11, const FramingCounts *n, PyObject *host, PyObject *connection,
              PyObject *length_text, PyObject **length)
{
    if (!http11 || n->host != 1 || n->other || n->content_type > 1 || n->content_length > 1
            || n->connection > 1 || !plain_host(host))
        return -1;
    int keep_alive = 1;
    if (n->connection) {
        if (equals_lower(connection, "close"))
            keep_alive = 0;
        else if (!equals_lower(connection, "keep-alive"))
            return -1;
    }
    if (!n->content_length) {
        *length = Py_NewRef(Py_None);
        return keep_alive;
    }
    const char *p = PyBytes_AS_STRING(length_text);
    Py_ssize_t len = PyBytes_GET_SIZE(length_text);
    if (len < 1 || len > 18)
        return -1;
    long long value = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        if (!Py_ISDIGIT(p[i]))
            return -1;
        value = value * 10 + (p[i] - '0');  /* 18 digits: below 2**63 */
    }
    *length = PyLong_FromLongLong(value);
    return *length == NULL ? -2 : keep_alive;
}

/* Request(method, target, b"1.x", fields, length, False, keep_alive, False), made as
 * fast.py's _request_constructor makes it: the frozen class's slots set through
 * their descriptors (the caller passes the class only when that is its shape). */
static PyObject *
new_request(PyObject *type, PyObject *method, PyObject *target, PyObject *version,
            PyObject *fields, PyObject *length, int keep_alive)
{
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "split_head: request_type must be a class");
        return NULL;
    }
    PyObject *request = ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, 0);
    if (request == NULL)
        return NULL;
    PyObject *values[8] = {method, target, version, fields, length, Py_False,
                           keep_alive ? Py_True : Py_False, Py_False};
    for (int n = 0; n < 8; n++) {
        if (PyObject_GenericSetAttr(request, request_fields[n], values[n]) < 0) {
            Py_DECREF(request);
            return NULL;
        }
    }
    return request;
}

PyDoc_STRVAR(split_head_doc,
"split_head(buf, max_fields, max_len, request_type=None) -> tuple | None\n\n"
"(end, method, target, version, fields, framing_fields, host, connection) for a\n"
"complete plain head at the start of buf; None for anything the Python path\n"
"must see (see the module comment). With request_type (events.Request), a head\n"
"whose framing is plain HTTP/1.1 (see plain_framing) comes as (end, Request).");

PyObject *
accel_split_head(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t max_fields, max_len;
    PyObject *request_type = NULL;
    if (!PyArg_ParseTuple(args, "y*nn|O:split_head", &view, &max_fields, &max_len,
                          &request_type))
        return NULL;
    PyObject *result = accel_split_plain(view.buf, view.len, max_fields, max_len,
                                         request_type);
    PyBuffer_Release(&view);
    return result;
}

/* split_head on bytes in hand (take_plain's: no argument tuple to build and parse);
 * request_type may be NULL. data must stay alive and unchanged during the call. */
PyObject *
accel_split_plain(const char *data, Py_ssize_t len, Py_ssize_t max_fields,
                  Py_ssize_t max_len, PyObject *request_type)
{
    PyObject *method = NULL, *target = NULL, *version = NULL, *fields = NULL;
    PyObject *host = Py_None, *connection = Py_None, *length_text = Py_None, *result = NULL;
    Py_INCREF(host);
    Py_INCREF(connection);
    Py_INCREF(length_text);

    Py_ssize_t head_end = find_head_end(data, len);
    if (head_end < 0)
        goto plain_no;
    Py_ssize_t end = head_end + 4;  /* the head, its empty line included */
    if (end > max_len)
        goto plain_no;

    /* The request line: tchar+ SP "/" target-bytes SP "HTTP/1.x" CRLF. */
    Py_ssize_t i = 0;
    while (i < end && is_tchar[(unsigned char)data[i]])
        i++;
    if (i == 0 || data[i] != ' ')
        goto plain_no;
    Py_ssize_t method_end = i;
    /* CONNECT takes an authority-form target: the Python path's to judge. */
    if (method_end == 7 && memcmp(data, "CONNECT", 7) == 0)
        goto plain_no;
    i++;
    Py_ssize_t target_start = i;
    if (data[i] != '/')
        goto plain_no;
    while (i < end && is_target[(unsigned char)data[i]])
        i++;
    Py_ssize_t target_end = i;
    if (data[i] != ' ' || i + 10 > end)
        goto plain_no;
    i++;
    if (memcmp(data + i, "HTTP/1.", 7) != 0 || (data[i + 7] != '1' && data[i + 7] != '0')
            || data[i + 8] != '\r' || data[i + 9] != '\n')
        goto plain_no;
    int http11 = data[i + 7] == '1';
    i += 10;

    /* Field lines: tchar+ ":" value-bytes CRLF, until the empty line at head_end + 2. */
    Py_ssize_t count = 0;
    Py_ssize_t lines_start = i;
    while (i < head_end + 2) {
        Py_ssize_t name_start = i;
        while (is_tchar[(unsigned char)data[i]])
            i++;
        if (i == name_start || data[i] != ':')
            goto plain_no;
        i++;
        while (is_value[(unsigned char)data[i]])
            i++;
        if (data[i] != '\r' || data[i + 1] != '\n')
            goto plain_no;  /* a bare CR or LF, or a control byte in the value */
        i += 2;
        count++;
    }
    if (i != head_end + 2 || count > max_fields)
        goto plain_no;

    method = PyBytes_FromStringAndSize(data, method_end);
    target = PyBytes_FromStringAndSize(data + target_start, target_end - target_start);
    version = PyBytes_FromStringAndSize(http11 ? "1.1" : "1.0", 3);
    fields = PyTuple_New(count);
    if (method == NULL || target == NULL || version == NULL || fields == NULL)
        goto error;

    Py_ssize_t framing_fields = 0;
    FramingCounts counts = {0, 0, 0, 0, 0};
    i = lines_start;
    for (Py_ssize_t n = 0; n < count; n++) {
        Py_ssize_t name_start = i;
        while (data[i] != ':')
            i++;
        PyObject *name = lowered_name(data + name_start, i - name_start);
        if (name == NULL)
            goto error;
        i++;
        Py_ssize_t value_start = i;
        while (data[i] != '\r')
            i++;
        Py_ssize_t value_end = i;
        i += 2;
        /* RFC 9112 5: the value's leading and trailing OWS are not part of it. */
        while (value_start < value_end
               && (data[value_start] == ' ' || data[value_start] == '\t'))
            value_start++;
        while (value_end > value_start
               && (data[value_end - 1] == ' ' || data[value_end - 1] == '\t'))
            value_end--;
        PyObject *value = PyBytes_FromStringAndSize(data + value_start, value_end - value_start);
        if (value == NULL) {
            Py_DECREF(name);
            goto error;
        }
        int kind = framing_kind(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
        if (kind != F_OTHER) {
            framing_fields++;
            if (kind == F_HOST) {
                counts.host++;
                Py_INCREF(value);
                Py_SETREF(host, value);
            } else if (kind == F_CONNECTION) {
                counts.connection++;
                Py_INCREF(value);
                Py_SETREF(connection, value);
            } else if (kind == F_CONTENT_LENGTH) {
                counts.content_length++;
                Py_INCREF(value);
                Py_SETREF(length_text, value);
            } else if (kind == F_CONTENT_TYPE) {
                counts.content_type++;
            } else {
                counts.other++;
            }
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(value);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        PyTuple_SET_ITEM(fields, n, pair);
    }
    PyObject *length = NULL;
    int keep_alive = request_type != NULL && request_type != Py_None
        ? plain_framing(http11, &counts, host, connection, length_text, &length) : -1;
    if (keep_alive == -2)
        goto error;
    if (keep_alive >= 0) {
        PyObject *request = new_request(request_type, method, target, version, fields,
                                        length, keep_alive);
        Py_DECREF(length);
        result = request == NULL ? NULL : Py_BuildValue("(nN)", end, request);
        goto done;
    }
    result = Py_BuildValue("(nOOOOnOO)", end, method, target, version, fields,
                           framing_fields, host, connection);
    goto done;

plain_no:
    result = Py_None;
    Py_INCREF(result);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(method);
    Py_XDECREF(target);
    Py_XDECREF(version);
    Py_XDECREF(fields);
    Py_DECREF(host);
    Py_DECREF(connection);
    Py_DECREF(length_text);
    return result;
}

static PyMethodDef accel_methods[] = {
    {"known_header_list", (PyCFunction)(void (*)(void))accel_known_header_list, METH_FASTCALL,
     "known_header_list(headers, table): StartResponse's look-up (accel_respond.c)."},
    {"respond", (PyCFunction)(void (*)(void))accel_respond, METH_FASTCALL,
     "respond(app, environ, conn, worker) -> bytes | AppResponse (accel_respond.c)."},
    {"take_plain", (PyCFunction)(void (*)(void))accel_take_plain, METH_FASTCALL,
     "take_plain(conn, request_type, client, wsgi_input, keys, trusted_keys) (accel_take.c)."},
    {"configure_take", (PyCFunction)(void (*)(void))accel_configure_take, METH_FASTCALL,
     "configure_take(req_idle, req_done, body_limit, input_from_bytes) (accel_take.c)."},
    {"serve_plain", (PyCFunction)(void (*)(void))accel_serve_plain, METH_FASTCALL,
     "serve_plain(protocol, conn, ctx, app, worker, client, keys, trusted_keys) "
     "(accel_serve.c)."},
    {"configure_serve", (PyCFunction)(void (*)(void))accel_configure_serve, METH_FASTCALL,
     "configure_serve(request_type, empty_input, reading, idle, closed, req_body, "
     "monotonic) (accel_serve.c)."},
    {"configure", (PyCFunction)(void (*)(void))accel_configure, METH_FASTCALL,
     "configure(...): the Python objects respond consults (accel_respond.c)."},
    {"split_head", accel_split_head, METH_VARARGS, split_head_doc},
    {"build_environ", (PyCFunction)(void (*)(void))accel_build_environ, METH_FASTCALL,
     accel_build_environ_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT, "polycorn.server._accel",
    "The compiled half of Polycorn's per-request path (see server/accel.py).",
    -1, accel_methods,
};

static int
intern(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__accel(void)
{
    init_tables();
    static const char *names[8] = {"method", "target", "http_version", "headers",
                                   "content_length", "chunked", "keep_alive",
                                   "expect_continue"};
    for (int n = 0; n < 8; n++)
        if (intern(&request_fields[n], names[n]) < 0)
            return NULL;
    known_names = PyDict_New();
    if (known_names == NULL || accel_environ_init() < 0)
        return NULL;
    PyObject *module = PyModule_Create(&accel_module);
    if (module != NULL && (accel_respond_init(module) < 0 || accel_take_init(module) < 0
                           || accel_serve_init(module) < 0))
        Py_CLEAR(module);
    return module;
}
