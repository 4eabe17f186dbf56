/* polycorn.server._accel, its environ part (split out of _accel.c; accel.h):
 *
 *   build_environ(base, wsgi_input, method, version, target, headers,
 *                 content_length, keys)
 *       The request's own environ entries over a copy of base, as
 *       EnvironBuilder.build makes them, or None when a header name is not in
 *       keys (or needs header_map) or the path holds a percent-escape.
 *
 * It never raises for bad input (None: the Python path's turn) and keeps no
 * pointer into a Python object past the call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include "accel.h"

/* Interned environ keys and values, made once. */
static PyObject *s_wsgi_input, *s_request_method, *s_server_protocol, *s_raw_uri,
    *s_content_length, *s_query_string, *s_path_info, *s_http11, *s_http10, *s_comma;

/* latin-1 text of bytes[start:stop]: a new reference or NULL. */
static PyObject *
latin1(const char *p, Py_ssize_t len)
{
    return PyUnicode_DecodeLatin1(p, len, NULL);
}

/* Puts one header in environ (EnvironBuilder._add_headers' loop body for a known
 * key): 0 done, -1 error.  A repeated key joins its values with "," (RFC 9110 5.3). */
static int
add_header(PyObject *environ, PyObject *key, PyObject *value)
{
    PyObject *text = latin1(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
    if (text == NULL)
        return -1;
    PyObject *previous = PyDict_GetItemWithError(environ, key);  /* borrowed */
    if (previous == NULL && PyErr_Occurred()) {
        Py_DECREF(text);
        return -1;
    }
    if (previous != NULL) {
        PyObject *parts = PyTuple_Pack(2, previous, text);
        Py_DECREF(text);
        if (parts == NULL)
            return -1;
        text = PyUnicode_Join(s_comma, parts);
        Py_DECREF(parts);
        if (text == NULL)
            return -1;
    }
    int rc = PyDict_SetItem(environ, key, text);
    Py_DECREF(text);
    return rc;
}

/* 1 when every header name has a non-empty str key in keys, 0 when one has not
 * (the Python path then maps it, and learns it), -1 on error. */
static int
headers_known(PyObject *headers, PyObject *keys)
{
    Py_ssize_t count = PyTuple_GET_SIZE(headers);
    for (Py_ssize_t n = 0; n < count; n++) {
        PyObject *pair = PyTuple_GET_ITEM(headers, n);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0))
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1)))
            return 0;
        PyObject *key = PyDict_GetItemWithError(keys, PyTuple_GET_ITEM(pair, 0));
        if (key == NULL)
            return PyErr_Occurred() ? -1 : 0;
        if (!PyUnicode_CheckExact(key) || PyUnicode_GET_LENGTH(key) == 0)
            return 0;  /* a name with "_": header_map's rules, in Python */
    }
    return 1;
}

const char accel_build_environ_doc[] =
"build_environ(base, wsgi_input, method, version, target, headers, content_length, keys)\n"
"-> dict | None\n\n"
"A copy of base with the request's entries, as EnvironBuilder.build adds them\n"
"before its trusted-proxy, SCRIPT_NAME and Host steps; None for what only the\n"
"Python path maps (an unknown or underscored header name, a percent-escape in\n"
"the path, a target that is not origin-form).";

PyObject *
accel_build_environ(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "build_environ takes 8 arguments");
        return NULL;
    }
    PyObject *base = args[0], *wsgi_input = args[1], *method = args[2], *version = args[3];
    PyObject *target = args[4], *headers = args[5], *content_length = args[6], *keys = args[7];
    if (!PyDict_CheckExact(base) || !PyBytes_CheckExact(method) || !PyBytes_CheckExact(version)
            || !PyBytes_CheckExact(target) || !PyTuple_CheckExact(headers)
            || !PyDict_CheckExact(keys)) {
        PyErr_SetString(PyExc_TypeError, "build_environ: unexpected argument types");
        return NULL;
    }
    const char *t = PyBytes_AS_STRING(target);
    Py_ssize_t tlen = PyBytes_GET_SIZE(target);
    if (tlen == 0 || t[0] != '/')
        Py_RETURN_NONE;
    const char *question = memchr(t, '?', (size_t)tlen);
    Py_ssize_t path_len = question ? question - t : tlen;
    if (memchr(t, '%', (size_t)path_len) != NULL)
        Py_RETURN_NONE;  /* PATH_INFO is unquoted: the Python path's job */
    /* The parsers give only these two versions; anything else is the Python path's. */
    const char *v = PyBytes_AS_STRING(version);
    PyObject *protocol;
    if (PyBytes_GET_SIZE(version) == 3 && memcmp(v, "1.1", 3) == 0)
        protocol = s_http11;
    else if (PyBytes_GET_SIZE(version) == 3 && memcmp(v, "1.0", 3) == 0)
        protocol = s_http10;
    else
        Py_RETURN_NONE;
    int known = headers_known(headers, keys);
    if (known <= 0)
        return known < 0 ? NULL : Py_NewRef(Py_None);

    PyObject *environ = PyDict_Copy(base);
    if (environ == NULL)
        return NULL;
    PyObject *text = NULL;
    if (PyDict_SetItem(environ, s_wsgi_input, wsgi_input) < 0)
        goto error;
    text = latin1(PyBytes_AS_STRING(method), PyBytes_GET_SIZE(method));
    if (text == NULL || PyDict_SetItem(environ, s_request_method, text) < 0)
        goto error;
    Py_CLEAR(text);
    if (PyDict_SetItem(environ, s_server_protocol, protocol) < 0)
        goto error;
    text = latin1(t, tlen);
    if (text == NULL || PyDict_SetItem(environ, s_raw_uri, text) < 0)
        goto error;
    Py_CLEAR(text);

    Py_ssize_t count = PyTuple_GET_SIZE(headers);
    for (Py_ssize_t n = 0; n < count; n++) {
        PyObject *pair = PyTuple_GET_ITEM(headers, n);
        PyObject *key = PyDict_GetItemWithError(keys, PyTuple_GET_ITEM(pair, 0));
        if (key == NULL) {
            if (!PyErr_Occurred())  /* keys changed under us: cannot, but never guess */
                PyErr_SetString(PyExc_RuntimeError, "header key vanished");
            goto error;
        }
        /* CONTENT_LENGTH comes from the parser's framing decision (below). */
        if (key == s_content_length || PyUnicode_Compare(key, s_content_length) == 0)
            continue;
        if (PyErr_Occurred())
            goto error;
        if (add_header(environ, key, PyTuple_GET_ITEM(pair, 1)) < 0)
            goto error;
    }
    if (content_length != Py_None) {
        text = PyObject_Str(content_length);
        if (text == NULL || PyDict_SetItem(environ, s_content_length, text) < 0)
            goto error;
        Py_CLEAR(text);
    }
    text = question ? latin1(question + 1, tlen - path_len - 1) : latin1("", 0);
    if (text == NULL || PyDict_SetItem(environ, s_query_string, text) < 0)
        goto error;
    Py_CLEAR(text);
    text = latin1(t, path_len);
    if (text == NULL || PyDict_SetItem(environ, s_path_info, text) < 0)
        goto error;
    Py_CLEAR(text);
    return environ;

error:
    Py_XDECREF(text);
    Py_DECREF(environ);
    return NULL;
}


static int
intern(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

int
accel_environ_init(void)
{
    if (intern(&s_wsgi_input, "wsgi.input") < 0
            || intern(&s_request_method, "REQUEST_METHOD") < 0
            || intern(&s_server_protocol, "SERVER_PROTOCOL") < 0
            || intern(&s_raw_uri, "RAW_URI") < 0
            || intern(&s_content_length, "CONTENT_LENGTH") < 0
            || intern(&s_query_string, "QUERY_STRING") < 0
            || intern(&s_path_info, "PATH_INFO") < 0
            || intern(&s_http11, "HTTP/1.1") < 0
            || intern(&s_http10, "HTTP/1.0") < 0
            || intern(&s_comma, ",") < 0)
        return -1;
    return 0;
}
