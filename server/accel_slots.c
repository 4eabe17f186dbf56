/* polycorn.server._accel, its fifth part: __slots__ attributes read and written at
 * their offsets.
 *
 *   accel_getattr(obj, name), accel_setattr(obj, name, value)
 *       PyObject_GetAttr and PyObject_SetAttr with the same answers, for the
 *       connection and Request objects the hot path reads about thirty times a
 *       request. Where obj's type has plain attribute access (no __getattribute__,
 *       no __setattr__ of its own for a write) and name is one of its __slots__
 *       (a member descriptor of an object, as __slots__ makes), the slot is read or
 *       written in place, as PyMember_GetOne/SetOne would and as CPython's own
 *       specializer does (LOAD_ATTR_SLOT); the generic lookup through the type's MRO
 *       cost about a tenth of a kept-alive request's CPU in the compiled path.
 *
 * What a (type, name) resolves to is remembered in a small direct-mapped table with
 * the type's version tag, which CPython changes whenever the type or a base is
 * modified: a class changed at run time, or any other type, takes the generic
 * functions again. A slot not set (NULL) is left to them too (they raise the
 * AttributeError). Names must be interned strings that live as long as the module
 * (the s_* of each file): the table compares them by identity.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"  /* T_OBJECT_EX, READONLY */
#include "accel.h"

/* 2**SLOT_TABLE_BITS entries: the hot path uses about 50 (type, name) pairs, and a
 * pair evicted by a collision costs a _PyType_Lookup on each use (with 64 entries and
 * an address hash that was a tenth of the compiled cycle's CPU). */
#define SLOT_TABLE_BITS 10
#define SLOT_TABLE_SIZE (1 << SLOT_TABLE_BITS)

typedef struct {
    PyTypeObject *type;  /* strong: its address is not reused while remembered */
    PyObject *name;      /* borrowed (see above) */
    unsigned int version;
    Py_ssize_t offset;   /* -1: the generic functions for this (type, name) */
    int writable;
} SlotEntry;

static SlotEntry table[SLOT_TABLE_SIZE];

static SlotEntry *
entry_for(PyTypeObject *type, PyObject *name)
{
    /* Fibonacci hashing of both addresses: their low bits are alignment, their high
     * bits shared by every object of one arena, so take the product's top bits. */
    uint64_t mixed = ((uint64_t)(uintptr_t)type * 0x9E3779B97F4A7C15ull)
                     ^ ((uint64_t)(uintptr_t)name * 0xC2B2AE3D27D4EB4Full);
    size_t index = (size_t)(mixed >> (64 - SLOT_TABLE_BITS));
    SlotEntry *entry = &table[index];
    if (entry->type == type && entry->name == name && type->tp_version_tag == entry->version
            && entry->version != 0)
        return entry;
    Py_ssize_t offset = -1;
    int writable = 0;
    if (type->tp_getattro == PyObject_GenericGetAttr) {
        /* Borrowed; also gives the type a version tag if it has none. */
        PyObject *descr = _PyType_Lookup(type, name);
        if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
            if (member->type == T_OBJECT_EX) {
                offset = member->offset;
                writable = !(member->flags & READONLY)
                           && type->tp_setattro == PyObject_GenericSetAttr;
            }
        }
    }
    unsigned int version = type->tp_version_tag;
    if (version == 0)
        return NULL;  /* cannot be remembered safely: generic, this time */
    Py_INCREF(type);
    Py_XSETREF(entry->type, type);
    entry->name = name;
    entry->version = version;
    entry->offset = offset;
    entry->writable = writable;
    return entry;
}

PyObject *
accel_getattr(PyObject *obj, PyObject *name)
{
    SlotEntry *entry = entry_for(Py_TYPE(obj), name);
    if (entry != NULL && entry->offset >= 0) {
        PyObject *value = *(PyObject **)((char *)obj + entry->offset);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttr(obj, name);
}

int
accel_setattr(PyObject *obj, PyObject *name, PyObject *value)
{
    SlotEntry *entry = entry_for(Py_TYPE(obj), name);
    if (entry != NULL && entry->offset >= 0 && entry->writable && value != NULL) {
        PyObject **slot = (PyObject **)((char *)obj + entry->offset);
        Py_XSETREF(*slot, Py_NewRef(value));
        return 0;
    }
    return PyObject_SetAttr(obj, name, value);
}
