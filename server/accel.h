/* What the C files of polycorn.server._accel share (setup.py lists them). */
#ifndef POLYCORN_ACCEL_H
#define POLYCORN_ACCEL_H
#include <Python.h>

/* accel_respond.c: the app call and response of the common request. */
PyObject *accel_known_header_list(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *accel_respond(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *accel_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
int accel_respond_init(PyObject *module);

/* _accel.c: the head split (also for accel_take.c). */
PyObject *accel_split_head(PyObject *module, PyObject *args);
PyObject *accel_split_plain(const char *data, Py_ssize_t len, Py_ssize_t max_fields,
                            Py_ssize_t max_len, PyObject *request_type);

/* accel_environ.c: the environ of a split request. */
PyObject *accel_build_environ(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
extern const char accel_build_environ_doc[];
int accel_environ_init(void);

/* accel_take.c: a whole plain request (and its Content-Length body), taken in one call. */
PyObject *accel_take_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *accel_configure_take(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
int accel_take_init(PyObject *module);

/* accel_serve.c: the event worker's cycle for whole plain requests, per read. */
PyObject *accel_serve_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *accel_configure_serve(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
int accel_serve_init(PyObject *module);

/* accel_slots.c: PyObject_GetAttr/SetAttr, a __slots__ attribute at its offset. */
PyObject *accel_getattr(PyObject *obj, PyObject *name);
int accel_setattr(PyObject *obj, PyObject *name, PyObject *value);

#endif
