//! The crate's only unsafe code: whether this thread holds the GIL, two reads of CPython object fields that PyO3's safe
//! API does not offer, a str made from ASCII bytes without decoding them, and such a
//! str refilled in place when no one else holds it. Each takes a `Bound`, which holds a strong reference and proves
//! the thread is attached to the interpreter, so the object it reads is alive and no
//! other thread changes it meanwhile.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// How many references `obj` has, the one `obj` holds among them.
pub fn refcnt(obj: &Bound<'_, PyAny>) -> isize {
    // SAFETY: `obj` is a live object (the `Bound` holds a reference to it) and this
    // thread is attached, so reading its header is a read of valid memory.
    unsafe { ffi::Py_REFCNT(obj.as_ptr()) }
}

/// The version tag of `dict` (PEP 509): CPython gives a dict a tag no dict had before
/// when it is made and on every change to it, so an unchanged tag means unchanged
/// contents. `None` on the Pythons without one (3.14 on, PyPy), where callers must
/// assume a change, and on free-threaded builds, where another thread may hold a
/// reference that the count does not show yet.
pub fn dict_version(dict: &Bound<'_, PyDict>) -> Option<u64> {
    #[cfg(not(any(Py_3_14, Py_GIL_DISABLED, PyPy, GraalPy, Py_LIMITED_API)))]
    {
        let ptr = dict.as_ptr().cast::<ffi::PyDictObject>();
        // SAFETY: `dict` is a live dict or dict subclass (the `Bound`'s type says so),
        // whose memory starts with a `PyDictObject`, and this thread is attached.
        #[allow(deprecated)]
        let tag = unsafe { (*ptr).ma_version_tag };
        Some(tag)
    }
    #[cfg(any(Py_3_14, Py_GIL_DISABLED, PyPy, GraalPy, Py_LIMITED_API))]
    {
        let _ = dict;
        None
    }
}

/// A str of `bytes`: for ASCII (egress's request id, every request) a compact str
/// filled by a copy, without the UTF-8 decoder (callgrind: about 120 instructions
/// less for 32 characters); anything else decoded as UTF-8, invalid bytes replaced.
pub fn ascii_str<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    #[cfg(not(any(Py_LIMITED_API, PyPy, GraalPy)))]
    if bytes.is_ascii() {
        // SAFETY: PyUnicode_New(n, 127) returns a new compact ASCII str of `n`
        // one-byte characters (or null with an exception set); its data pointer has
        // room for exactly `n` bytes, which the copy fills with ASCII before anyone
        // else can see the object. This thread is attached (`py`).
        unsafe {
            let obj = ffi::PyUnicode_New(bytes.len() as ffi::Py_ssize_t, 127);
            if obj.is_null() {
                return Err(PyErr::fetch(py));
            }
            let data = ffi::PyUnicode_DATA(obj).cast::<u8>();
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
            return Ok(Bound::from_owned_ptr(py, obj).cast_into_unchecked());
        }
    }
    Ok(PyString::new(py, &String::from_utf8_lossy(bytes)))
}

/// Overwrites `s` with `bytes` when no one but its two known holders can see it
/// ([`refill_ascii_tail`]'s conditions): true when done.
pub fn refill_ascii(s: &Bound<'_, PyString>, bytes: &[u8]) -> bool {
    bytes.is_ascii() && refill(s, bytes.len(), |data| data.copy_from_slice(bytes))
}

/// Overwrites the last two characters of `s`, a str of `len` characters, with `tail`
/// when no one but its two known holders can see it: a reused environ's
/// `ferrule.request_id` gets the next id without a new str and a dict store
/// (callgrind: about 250 instructions a request). True when done: `s` is an exact,
/// compact ASCII, not interned str of `len` (two or more) characters with two
/// references (the caller's and one it knows of: the dict's), and `tail` is ASCII.
#[inline]
pub fn refill_ascii_tail(s: &Bound<'_, PyString>, len: usize, tail: [u8; 2]) -> bool {
    len >= 2 && tail.is_ascii() && refill(s, len, |data| data[len - 2..].copy_from_slice(&tail))
}

/// Lets `write` change the `len` characters of `s` in place, under the conditions
/// above; `write` must leave them ASCII (both callers write checked ASCII bytes).
/// Always inlined: egress's per-request refill is a dozen instructions, less than a
/// call's register saves.
#[inline(always)]
fn refill(s: &Bound<'_, PyString>, len: usize, write: impl FnOnce(&mut [u8])) -> bool {
    #[cfg(not(any(Py_LIMITED_API, PyPy, GraalPy, Py_GIL_DISABLED, Py_3_14)))]
    {
        let obj = s.as_ptr();
        // SAFETY: `s` is a live str (the `Bound` holds a reference) and this thread
        // is attached, so its header and fields are valid to read. It is written
        // only when its references are the caller's two, so no other code holds
        // it (a str has no weak references; an interned one, whose interning table
        // does not count, is left alone); its data has room for exactly `len`
        // one-byte characters, which `write` keeps ASCII; the cached hash is reset,
        // as for a new str.
        unsafe {
            if ffi::PyUnicode_CheckExact(obj) == 0
                || ffi::Py_REFCNT(obj) != 2
                || ffi::PyUnicode_IS_COMPACT_ASCII(obj) == 0
                || ffi::PyUnicode_GET_LENGTH(obj) != len as ffi::Py_ssize_t
            {
                return false;
            }
            let ascii = obj.cast::<ffi::PyASCIIObject>();
            if (*ascii).interned() != 0 {
                return false;
            }
            write(std::slice::from_raw_parts_mut(
                ffi::PyUnicode_DATA(obj).cast::<u8>(),
                len,
            ));
            (*ascii).hash = -1;
            true
        }
    }
    #[cfg(any(Py_LIMITED_API, PyPy, GraalPy, Py_GIL_DISABLED, Py_3_14))]
    {
        let _ = (s, len, write);
        false
    }
}

/// Whether this thread holds the GIL: records made by a Rust thread that does not must
/// not wait for it.
pub fn holds_gil() -> bool {
    // SAFETY: `PyGILState_Check` may be called by any thread, attached or not, once the
    // interpreter is initialized, which it is for as long as this module is loaded; it
    // only reads the thread's state.
    unsafe { ffi::PyGILState_Check() == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dicts_version_changes_with_every_change_and_only_then() {
        Python::initialize();
        Python::attach(|py| {
            let d = PyDict::new(py);
            d.set_item("a", 1).unwrap();
            let v = dict_version(&d);
            assert_eq!(dict_version(&d), v, "a read is no change");
            let _ = d.get_item("a").unwrap();
            assert_eq!(dict_version(&d), v, "a lookup is no change");
            if v.is_none() {
                return;
            }
            d.set_item("a", 2).unwrap();
            let v2 = dict_version(&d);
            assert_ne!(v2, v, "a new value");
            d.set_item("b", 1).unwrap();
            d.del_item("b").unwrap();
            assert_ne!(dict_version(&d), v2, "a key added and removed again");
        });
    }

    #[test]
    fn ascii_str_equals_the_decoded_str() {
        Python::initialize();
        Python::attach(|py| {
            for text in ["0123456789abcdef0123456789abcdef", "", "trace-1", "é~"] {
                let s = ascii_str(py, text.as_bytes()).unwrap();
                assert_eq!(s.to_str().unwrap(), text);
                assert!(s.as_any().eq(PyString::new(py, text)).unwrap());
            }
            assert_eq!(
                ascii_str(py, b"a\xffb").unwrap().to_str().unwrap(),
                "a\u{fffd}b"
            );
        });
    }

    #[test]
    fn refill_ascii_rewrites_only_a_str_no_one_else_holds() {
        Python::initialize();
        Python::attach(|py| {
            let d = PyDict::new(py);
            d.set_item(
                "k",
                ascii_str(py, b"0123456789abcdef0123456789abcdef").unwrap(),
            )
            .unwrap();
            let s = d
                .get_item("k")
                .unwrap()
                .unwrap()
                .cast_into::<PyString>()
                .unwrap();
            let _ = s.hash().unwrap();
            assert!(refill_ascii(&s, b"fedcba9876543210fedcba9876543210"));
            assert_eq!(s.to_str().unwrap(), "fedcba9876543210fedcba9876543210");
            let fresh = PyString::new(py, "fedcba9876543210fedcba9876543210");
            assert_eq!(s.hash().unwrap(), fresh.hash().unwrap(), "hash recomputed");
            assert!(!refill_ascii(&s, b"short"), "another length");
            assert!(
                refill_ascii_tail(&s, 32, *b"ab"),
                "the two bytes that differ"
            );
            assert_eq!(s.to_str().unwrap(), "fedcba9876543210fedcba98765432ab");
            assert!(!refill_ascii_tail(&s, 31, *b"cd"), "another length");
            assert!(!refill_ascii_tail(&s, 32, [b'c', 0xc3]), "not ASCII");
            assert_eq!(
                s.to_str().unwrap(),
                "fedcba9876543210fedcba98765432ab",
                "left alone"
            );
            let other = s.clone();
            assert!(
                !refill_ascii(&s, b"00000000000000000000000000000000"),
                "held elsewhere"
            );
            drop(other);
            let interned = PyString::intern(py, "an interned str of 32 characters");
            d.set_item("k", &interned).unwrap();
            drop(interned);
            let s = d
                .get_item("k")
                .unwrap()
                .unwrap()
                .cast_into::<PyString>()
                .unwrap();
            assert!(
                !refill_ascii(&s, b"00000000000000000000000000000000"),
                "interned"
            );
            assert_eq!(s.to_str().unwrap(), "an interned str of 32 characters");
        });
    }

    #[test]
    fn refcnt_counts_every_reference() {
        Python::initialize();
        Python::attach(|py| {
            let obj = PyDict::new(py).into_any();
            assert_eq!(refcnt(&obj), 1);
            let other = obj.clone();
            assert_eq!(refcnt(&obj), 2);
            drop(other);
            assert_eq!(refcnt(&obj), 1);
        });
    }
}
