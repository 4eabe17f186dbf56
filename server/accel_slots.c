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
 * What a (type, name) resolves to is remembered by each call site (accel.h's
 * macros give every use its own static AccelSlotSite, as CPython's specializer
 * caches per instruction) with the type's version tag, which CPython changes
 * whenever the type or a base is modified: a class changed at run time, or any
 * other type, resolves again or takes the generic functions. A slot not set (NULL)
 * is left to them too (they raise the AttributeError). Names must be interned
 * strings that live as long as the module (the s_* of each file): a site compares
 * them by identity. (A shared table of 1024 entries hashed by both addresses did
 * this before; its lookups were 14% of the worker's user time under wrk, the
 * table's lines evicted by the kernel's work between requests.)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"  /* T_OBJECT_EX, READONLY */
#include "accel.h"

int
accel_resolve_site(AccelSlotSite *site, PyTypeObject *type, PyObject *name)
{
    Py_ssize_t offset = -1;
    int writable = 0;
    if (type->tp_getattro == PyObject_GenericGetAttr) {
        /* Borrowed; also gives the type a version tag if it has none. */
        PyObject *descr = _PyType_Lookup(type, name);
        /* A member descriptor of this layout: not one of another class's, set as a
         * class attribute here (its offset is not into this object; the generic
         * path raises TypeError for it, as CPython's LOAD_ATTR_SLOT checks). */
        if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)
                && PyType_IsSubtype(type, PyDescr_TYPE(descr))) {
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
        return 0;  /* cannot be remembered safely: generic, this time */
    Py_INCREF(type);  /* its address is not reused while remembered */
    Py_XSETREF(site->type, type);
    site->name = name;
    site->version = version;
    site->offset = offset;
    site->writable = writable;
    return 1;
}
