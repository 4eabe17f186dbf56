/* What the C files of polycorn.server._accel share (setup.py lists them). */
#ifndef POLYCORN_ACCEL_H
#define POLYCORN_ACCEL_H
#include <Python.h>

/* accel_respond.c: the app call and response of the common request. */
PyObject *accel_known_header_list(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *accel_respond(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *accel_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
int accel_respond_init(PyObject *module);

#endif
