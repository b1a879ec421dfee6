//! The `Date` value of responses, formatted once a second per thread.

use ferrule_http::DateCache;
use std::cell::RefCell;

thread_local! {
    static DATE: RefCell<DateCache> = RefCell::new(DateCache::default());
}

/// Appends the current `Date` value.
pub(crate) fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    DATE.with(|d| f(d.borrow_mut().get(crate::clock::coarse_unix_secs())))
}

/// Appends to `out` the `Server` and `Date` fields the app did not send.
pub(crate) fn add_server_fields(out: &mut Vec<u8>, server: bool, date: bool) {
    DATE.with(|d| {
        let secs = crate::clock::coarse_unix_secs();
        out.extend_from_slice(d.borrow_mut().fields(secs, server, date))
    })
}
