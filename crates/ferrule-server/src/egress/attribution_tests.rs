//! Tests of `attribution.rs`: the slot, the tally, the ids.

use super::*;

fn me() -> i32 {
    std::process::id() as i32
}

#[test]
fn a_slot_carries_its_request_and_tally_and_is_reused() {
    want_ids();
    assert!(matches!(
        begin(b"GET", Path::Info(b"/a"), None),
        RequestId::Made(_)
    ));
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
    end();
    assert!(slot.request(me()).is_none());
    with_tally(|t| assert_eq!(t.unwrap().0.len(), 2, "kept for the access log"));
    assert_eq!(
        begin(b"POST", Path::Info(b"/b"), Some(b"trace-1")),
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
    begin(b"GET", Path::Info(b"/"), Some(b"has space"));
    assert_eq!(slot.request(me()).unwrap().0[0].len(), 32);
    begin(b"GET", Path::Info(b"/c"), None);
    assert_eq!(
        with_request_id(|r| r.len()),
        Some(32),
        "a made id after a forwarded one"
    );
    end();
}

#[test]
fn a_made_id_after_another_differs_in_its_tail_or_is_made_whole() {
    want_ids();
    let full = |seq: u64| {
        let mut out = [0u8; 32];
        put_hex(&mut out[..16], KEY.load(Ordering::Relaxed));
        put_hex(&mut out[16..], seq);
        out
    };
    let mut last: Option<MadeId> = None;
    for seq in [
        1,
        2,
        15,
        16,
        17,
        255,
        256,
        0xffff_ffff,
        0x1_0000_0000,
        u64::MAX,
    ] {
        let id = MadeId::new(seq);
        assert_eq!(id.text(), full(seq), "seq {seq:#x}");
        if let Some(last) = last {
            let mut text = last.text();
            match id.tail_after(last) {
                Some(tail) => text[30..].copy_from_slice(&tail),
                None => assert!((last.seq ^ seq) > 0xff, "seq {seq:#x}"),
            }
            if (last.seq ^ seq) <= 0xff {
                assert_eq!(
                    text,
                    full(seq),
                    "seq {seq:#x}: the tail is all that changed"
                );
            }
        }
        last = Some(id);
    }
    let other = MadeId { key: 7, seq: 3 };
    assert_eq!(&other.text(), b"00000000000000070000000000000003");
    assert_eq!(
        other.tail_after(MadeId { key: 8, seq: 2 }),
        None,
        "another key"
    );
}

#[test]
fn the_record_decodes_a_target_path_below_the_mount_only_when_asked() {
    want_ids();
    set_mount(b"/app");
    let tid = nix::unistd::gettid().as_raw();
    begin(b"GET", Path::Target(b"/app/caf%C3%A9%2Fx?"), None);
    let slot = slot_of(tid).expect("registered");
    let ([_, _, path], _) = slot.request(me()).unwrap();
    assert_eq!(path, "/café/x?");
    begin(b"GET", Path::Target(b"/application%zz"), None);
    assert_eq!(slot.request(me()).unwrap().0[2], "lication%zz");
    begin(b"GET", Path::Info(b"/app/%41"), None);
    assert_eq!(
        slot.request(me()).unwrap().0[2],
        "/app/%41",
        "a ready PATH_INFO as it is"
    );
    set_mount(b"");
    end();
}

#[test]
fn hex_is_lowercase_and_big_endian() {
    let mut out = [0u8; 16];
    put_hex(&mut out, 0x0123_4567_89ab_cdef);
    assert_eq!(&out, b"0123456789abcdef");
    put_hex(&mut out, u64::MAX);
    assert_eq!(&out, b"ffffffffffffffff");
}

#[test]
fn ids_are_distinct_across_threads() {
    want_ids();
    let ids: Vec<String> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let mut seen = Vec::new();
                for _ in 0..50 {
                    begin(b"GET", Path::Info(b"/"), None);
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
