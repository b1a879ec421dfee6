use super::*;

const SECRET_A: [u8; 32] = [7; 32];
const NOW: u64 = 100_000;

#[test]
fn a_ticket_opens_in_its_period_and_the_next() {
    let t = SharedTickets::from_secret(&SECRET_A);
    let sealed = t.seal_at(b"session state", NOW).expect("seal");
    assert_ne!(&sealed[PERIOD_LEN + NONCE_LEN..][..13], b"session state");
    assert_eq!(
        t.open_at(&sealed, NOW).as_deref(),
        Some(&b"session state"[..])
    );
    // The previous period's ticket is still accepted after the rotation.
    assert_eq!(
        t.open_at(&sealed, NOW + 1).as_deref(),
        Some(&b"session state"[..])
    );
}

#[test]
fn a_ticket_from_two_periods_back_is_refused() {
    let t = SharedTickets::from_secret(&SECRET_A);
    let sealed = t.seal_at(b"state", NOW).expect("seal");
    assert_eq!(t.open_at(&sealed, NOW + 2), None);
    // Nor is one claiming a period that has not started.
    assert_eq!(t.open_at(&sealed, NOW - 1), None);
}

#[test]
fn every_process_with_the_secret_opens_the_others_tickets() {
    // Two workers: two ticketers over the same inherited secret, caches apart.
    let sealer = SharedTickets::from_secret(&SECRET_A);
    let opener = SharedTickets::from_secret(&SECRET_A);
    let sealed = sealer.seal_at(b"state", NOW).expect("seal");
    assert_eq!(opener.open_at(&sealed, NOW).as_deref(), Some(&b"state"[..]));
    // Another master (another secret) cannot.
    let other = SharedTickets::from_secret(&[8; 32]);
    assert_eq!(other.open_at(&sealed, NOW), None);
}

#[test]
fn a_tampered_ticket_is_refused() {
    let t = SharedTickets::from_secret(&SECRET_A);
    let sealed = t.seal_at(b"state", NOW).expect("seal");
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert_eq!(t.open_at(&bad, NOW + 1), None, "byte {i} altered");
    }
    // Relabelled as the current period: the period is authenticated data.
    let mut moved = sealed.clone();
    moved[..PERIOD_LEN].copy_from_slice(&(NOW + 1).to_be_bytes());
    assert_eq!(t.open_at(&moved, NOW + 1), None);
}

#[test]
fn short_or_empty_tickets_are_refused() {
    let t = SharedTickets::from_secret(&SECRET_A);
    let sealed = t.seal_at(b"", NOW).expect("seal");
    assert_eq!(t.open_at(&sealed, NOW).as_deref(), Some(&b""[..]));
    for len in 0..sealed.len() {
        assert_eq!(t.open_at(&sealed[..len], NOW), None, "cut to {len}");
    }
}

#[test]
fn the_process_secret_is_made_once() {
    let a = process_secret().expect("random");
    let b = process_secret().expect("random");
    assert_eq!(a, b);
    assert_ne!(a, [0; 32]);
}

#[test]
fn a_ticket_made_under_other_files_is_refused() {
    // A HUP that changed the certificate, key or client CAs changes the identity.
    let before = SharedTickets::from_secret(&SECRET_A).under([1; 32]);
    let after = SharedTickets::from_secret(&SECRET_A).under([2; 32]);
    let sealed = before.seal_at(b"state", NOW).expect("seal");
    assert_eq!(after.open_at(&sealed, NOW), None);
    assert_eq!(before.open_at(&sealed, NOW).as_deref(), Some(&b"state"[..]));
}
