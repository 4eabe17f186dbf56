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

/* accel_slots.c: PyObject_GetAttr/SetAttr, a __slots__ attribute at its offset,
 * remembered per call site. */
typedef struct {
    PyTypeObject *type;  /* strong */
    PyObject *name;      /* borrowed: an interned name the module keeps */
    unsigned int version;
    int writable;
    Py_ssize_t offset;   /* -1: the generic functions for this (type, name) */
} AccelSlotSite;

/* 1 when site now holds what (type, name) resolves to, 0 when it cannot (no version tag). */
int accel_resolve_site(AccelSlotSite *site, PyTypeObject *type, PyObject *name);

static inline int
accel_site_for(AccelSlotSite *site, PyTypeObject *type, PyObject *name)
{
    if (site->type == type && site->name == name && site->version == type->tp_version_tag
            && site->version != 0)
        return 1;
    return accel_resolve_site(site, type, name);
}

static inline PyObject *
accel_getattr_at(AccelSlotSite *site, PyObject *obj, PyObject *name)
{
    if (accel_site_for(site, Py_TYPE(obj), name) && site->offset >= 0) {
        PyObject *value = *(PyObject **)((char *)obj + site->offset);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttr(obj, name);
}

static inline int
accel_setattr_at(AccelSlotSite *site, PyObject *obj, PyObject *name, PyObject *value)
{
    if (value != NULL && accel_site_for(site, Py_TYPE(obj), name) && site->offset >= 0
            && site->writable) {
        PyObject **slot = (PyObject **)((char *)obj + site->offset);
        Py_XSETREF(*slot, Py_NewRef(value));
        return 0;
    }
    return PyObject_SetAttr(obj, name, value);
}

/* Each use its own static site (a GNU C statement expression; GCC and Clang): one
 * site per place in the code, so a helper that reads many names must not wrap these. */
#define accel_getattr(obj, name) __extension__ ({ \
    static AccelSlotSite accel_site_; accel_getattr_at(&accel_site_, (obj), (name)); })
#define accel_setattr(obj, name, value) __extension__ ({ \
    static AccelSlotSite accel_site_; accel_setattr_at(&accel_site_, (obj), (name), (value)); })

#endif
