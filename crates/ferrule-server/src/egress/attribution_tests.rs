//! Tests of `attribution.rs`: the slot, the tally, the ids.

use super::*;

fn me() -> i32 {
    std::process::id() as i32
}

#[test]
fn a_slot_carries_its_request_and_tally_and_is_reused() {
    want_ids();
    let (id, serving) = begin(b"GET", Path::Info(b"/a"), None);
    assert!(matches!(id, RequestId::Made(_)));
    let tid = nix::unistd::gettid().as_raw();
    let slot = slot_of(tid).expect("registered");
    let ([id, method, path], seq) = slot.request(me()).expect("active");
    assert_eq!((method.as_str(), path.as_str()), ("GET", "/a"));
    assert_eq!(id.len(), 32);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    slot.lock().note_dest(seq, "db:5432");
    slot.lock().add_ms(seq, 1.5);
    slot.lock().note_dest(seq, "db:5432");
    slot.lock().add_ms(seq, 0.5);
    slot.lock().note_dest(seq, "[::1]:80");
    slot.lock().note_dest(seq - 1, "stale:1");
    slot.lock().add_ms(seq - 1, 9.0);
    assert_eq!(with_request_id(|r| r == id.as_bytes()), Some(true));
    with_tally(|t| {
        let (dests, ms) = t.unwrap();
        assert_eq!(dests, ["db:5432", "[::1]:80"]);
        assert_eq!(ms, 2.0);
    });
    serving.end();
    assert!(slot.request(me()).is_none());
    with_tally(|t| assert_eq!(t.unwrap().0.len(), 2, "kept for the access log"));
    assert_eq!(
        begin(b"POST", Path::Info(b"/b"), Some(b"trace-1")).0,
        RequestId::Forwarded
    );
    let ([id, method, path], seq2) = slot.request(me()).unwrap();
    assert_eq!([id, method, path], ["trace-1", "POST", "/b"]);
    with_tally(|t| assert_eq!(t.unwrap(), (&[][..], 0.0), "a new request's tally"));
    // A late note about the last request does not reach this one's tally.
    slot.lock().add_ms(seq, 5.0);
    slot.lock().note_dest(seq2, "x:1");
    let t = slot.lock();
    assert_eq!((t.used, t.connect_ms), (1, 0.0));
    assert_eq!(t.dests.len(), 2, "room kept for the next request");
    drop(t);
    let _ = begin(b"GET", Path::Info(b"/"), Some(b"has space"));
    assert_eq!(slot.request(me()).unwrap().0[0].len(), 32);
    let (_, serving) = begin(b"PROPFIND", Path::Info(b"/c"), None);
    assert_eq!(
        with_request_id(|r| r.len()),
        Some(32),
        "a made id after a forwarded one"
    );
    let ([_, method, path], _) = slot.request(me()).unwrap();
    assert_eq!(
        [method, path],
        ["PROPFIND", "/c"],
        "an unlisted method is copied"
    );
    let _ = begin(b"get", Path::Info(b"/d"), Some(b"t-2"));
    let ([id, method, path], _) = slot.request(me()).unwrap();
    assert_eq!([id, method, path], ["t-2", "get", "/d"]);
    let _ = begin(b"GET", Path::Info(b"/f"), Some(b"t-3"));
    let ([id, method, path], _) = slot.request(me()).unwrap();
    assert_eq!(
        [id, method, path],
        ["t-3", "GET", "/f"],
        "a GET's method not copied"
    );
    serving.end();
}

#[test]
fn the_record_decodes_a_target_path_below_the_mount_only_when_asked() {
    want_ids();
    set_mount(b"/app");
    let tid = nix::unistd::gettid().as_raw();
    let _ = begin(b"GET", Path::Target(b"/app/caf%C3%A9%2Fx?"), None);
    let slot = slot_of(tid).expect("registered");
    let ([_, _, path], _) = slot.request(me()).unwrap();
    assert_eq!(path, "/café/x?");
    let _ = begin(b"GET", Path::Target(b"/application%zz"), None);
    assert_eq!(slot.request(me()).unwrap().0[2], "lication%zz");
    let _ = begin(b"GET", Path::Info(b"/app/%41"), None);
    assert_eq!(
        slot.request(me()).unwrap().0[2],
        "/app/%41",
        "a ready PATH_INFO as it is"
    );
    set_mount(b"");
    let (_, serving) = begin(b"DELETE", Path::Info(b"/e"), None);
    assert_eq!(slot.request(me()).unwrap().0[1], "DELETE");
    serving.end();
    assert!(slot.request(me()).is_none());
}

#[test]
fn ids_are_distinct_across_threads() {
    want_ids();
    let ids: Vec<String> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let mut seen = Vec::new();
                for _ in 0..50 {
                    let _ = begin(b"GET", Path::Info(b"/"), None);
                    with_request_id(|id| seen.push(String::from_utf8_lossy(id).into_owned()));
                }
                seen
            })
        })
        .flat_map(|h| h.join().unwrap())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
}
