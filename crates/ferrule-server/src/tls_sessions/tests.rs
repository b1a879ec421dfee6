use super::*;

fn table(slots: usize) -> SharedSessions {
    SharedSessions::over(crate::sys::shared_words(slots * SLOT_WORDS).expect("mmap"))
}

fn id(first: u8) -> Vec<u8> {
    (0..32).map(|i| first.wrapping_add(i)).collect()
}

#[test]
fn a_session_is_stored_and_found_by_its_id() {
    let t = table(8);
    assert!(t.put(id(1), b"session one".to_vec()));
    assert_eq!(t.get(&id(1)).as_deref(), Some(&b"session one"[..]));
    assert_eq!(t.get(&id(2)), None);
    // A value of every length up to the limit comes back whole.
    for len in [0, 1, 7, 8, 9, 100, VALUE_MAX] {
        let value: Vec<u8> = (0..len).map(|i| i as u8).collect();
        assert!(t.put(id(3), value.clone()), "{len}");
        assert_eq!(t.get(&id(3)), Some(value), "{len}");
    }
}

#[test]
fn a_value_too_long_or_a_key_out_of_range_is_not_stored() {
    let t = table(8);
    assert!(!t.put(id(1), vec![0; VALUE_MAX + 1]));
    assert_eq!(t.get(&id(1)), None);
    assert!(!t.put(vec![], b"x".to_vec()));
    assert!(!t.put(vec![1; KEY_MAX + 1], b"x".to_vec()));
    assert_eq!(t.get(&[]), None);
}

#[test]
fn a_new_session_replaces_the_one_in_its_slot() {
    let t = table(1);
    assert!(t.put(id(1), b"first".to_vec()));
    assert!(t.put(id(2), b"second".to_vec()));
    assert_eq!(t.get(&id(1)), None);
    assert_eq!(t.get(&id(2)).as_deref(), Some(&b"second"[..]));
}

#[test]
fn take_is_single_use() {
    let t = table(8);
    assert!(t.put(id(1), b"once".to_vec()));
    assert_eq!(t.take(&id(1)).as_deref(), Some(&b"once"[..]));
    assert_eq!(t.take(&id(1)), None);
    assert_eq!(t.get(&id(1)), None);
}

#[test]
fn a_slot_being_written_is_a_miss_and_a_dead_writers_lock_is_taken_over() {
    let t = table(1);
    assert!(t.put(id(1), b"kept".to_vec()));
    let slot = t.slot(&id(1)).expect("slot");
    // A writer in the middle of its copy: readers miss, other writers give way.
    let seq = slot[SEQ].load(Ordering::Relaxed);
    slot[LOCK].store((now_ms() << 1) | 1, Ordering::Relaxed);
    slot[SEQ].store(seq | 1, Ordering::Relaxed);
    assert_eq!(t.get(&id(1)), None);
    assert!(!t.put(id(2), b"new".to_vec()));
    // The same lock, taken long ago: its writer died; the next writer takes over.
    slot[LOCK].store(
        (now_ms().saturating_sub(STALE_LOCK_MS + 10) << 1) | 1,
        Ordering::Relaxed,
    );
    assert!(t.put(id(2), b"new".to_vec()));
    assert_eq!(t.get(&id(2)).as_deref(), Some(&b"new"[..]));
    assert_eq!(slot[LOCK].load(Ordering::Relaxed), 0);
}

#[test]
fn threads_writing_and_reading_one_slot_never_see_a_torn_value() {
    let t = std::sync::Arc::new(table(1));
    let writers: Vec<_> = (0..2u8)
        .map(|w| {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..2000u32 {
                    let fill = (w as u32 * 7 + i) as u8;
                    t.put(id(9), vec![fill; 1 + (i as usize % 500)]);
                }
            })
        })
        .collect();
    for _ in 0..4000 {
        if let Some(v) = t.get(&id(9)) {
            assert!(v.iter().all(|&b| b == v[0]), "a torn value");
        }
    }
    for w in writers {
        w.join().expect("writer");
    }
}

#[test]
fn the_process_table_is_made_once() {
    let a = SharedSessions::new([1; 32]).expect("mmap");
    let b = SharedSessions::new([2; 32]).expect("mmap");
    assert!(std::ptr::eq(a.words, b.words));
    assert_eq!(a.words.len(), SLOTS * SLOT_WORDS);
}

#[test]
fn a_session_made_under_other_files_is_not_found() {
    // After a HUP with a new certificate or client CA, the new workers' identity differs.
    let before = table(4).under([1; 32]);
    let after = SharedSessions::over(before.words).under([2; 32]);
    assert!(before.put(b"id-1".to_vec(), b"vouched for by the old CA".to_vec()));
    assert_eq!(after.get(b"id-1"), None);
    assert_eq!(after.take(b"id-1"), None);
    assert!(before.get(b"id-1").is_some());
}
