//! Tells the crate which Python it builds for (`cfg(Py_3_14)` and the like), as PyO3
//! itself does: `sys.rs` reads a field that only some versions have.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
