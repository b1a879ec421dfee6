//! The egress filter for real, in a child process (the test binary re-run on one
//! test) so this binary's other tests stay unfiltered: a denied connect never
//! reaches its listener, an allowed one does, and a thread flipping the address
//! between allowed and denied never gets a denied connect through.

use crate::egress::{self, EgressLog, EgressSettings};
use crate::sys::seccomp::probe::{connect_at, io_uring_setup_errno};
use nix::libc;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD: &str = "FERRULE_EGRESS_TEST_CHILD";

#[test]
fn filter_in_a_child_process() {
    let dir = std::env::temp_dir().join(format!("ferrule-egress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("egress.log");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "egress::filter_tests::child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &log)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the child test did not run:\n{text}"
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let denied = records.iter().filter(|r| r["verdict"] == "deny").count();
    assert!(denied >= 3, "{lines}");
    assert!(
        records
            .iter()
            .any(|r| r["verdict"] == "allow" && r["proto"] == "tcp" && r["ms"].is_f64()),
        "{lines}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["proto"] == "udp" && r["verdict"] == "allow" && r["ms"].is_null()),
        "{lines}"
    );
    assert!(
        records.iter().all(|r| r["request_id"].is_null()),
        "no request in the child"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Accepts what reached `l` so far (non-blocking): the number of connections.
fn arrived(l: &TcpListener) -> usize {
    l.set_nonblocking(true).unwrap();
    let mut n = 0;
    while l.accept().is_ok() {
        n += 1;
    }
    n
}

#[repr(C)]
struct RacySockaddr {
    family: u16,
    port: AtomicU16,
    addr: [u8; 4],
    zero: [u8; 8],
}

/// connect(2) on a new TCP socket with the racy address; the errno on failure.
fn connect_racy(sa: &RacySockaddr) -> Result<(), i32> {
    use std::os::fd::AsRawFd;
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.raw_os_error().unwrap_or(0))?;
    connect_at(s.as_raw_fd(), sa, std::mem::size_of::<RacySockaddr>())
}

#[test]
fn child() {
    let Some(log) = std::env::var_os(CHILD) else {
        return; // only in the child process
    };
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, d) = (allowed.local_addr().unwrap(), denied.local_addr().unwrap());
    let udp_ok = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_no = UdpSocket::bind("127.0.0.1:0").unwrap();
    // IPv6 loopback, where the machine has it.
    let v6 = TcpListener::bind("[::1]:0").ok();
    let mut deny = vec![
        format!("127.0.0.1:{}", d.port()),
        format!("127.0.0.1:{}", udp_no.local_addr().unwrap().port()),
    ];
    if let Some(l) = &v6 {
        deny.push(format!("[::1]:{}", l.local_addr().unwrap().port()));
    }
    let settings = EgressSettings {
        log: Some(EgressLog::File(log.into())),
        deny,
        allow: vec![],
    };
    assert_eq!(
        egress::start(&settings).unwrap(),
        2 + usize::from(v6.is_some())
    );
    if let Some(l) = &v6 {
        let e = TcpStream::connect(l.local_addr().unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert_eq!(arrived(l), 0);
    }

    // Blocking connects (the pool), denied and allowed.
    let e = TcpStream::connect(d).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let kept = TcpStream::connect(a).unwrap();
    // A non-blocking connect (performed at once, watched to its end).
    let nb = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    nb.set_nonblocking(true).unwrap();
    match nb.connect(&a.into()) {
        Ok(()) => {}
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINPROGRESS), "{e}"),
    }
    let nbd = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    nbd.set_nonblocking(true).unwrap();
    assert_eq!(
        nbd.connect(&d.into()).unwrap_err().raw_os_error(),
        Some(libc::EACCES)
    );

    // UDP: sendto with an address, and a connected socket's send (not trapped).
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        u.send_to(b"no", udp_no.local_addr().unwrap())
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(u.send_to(b"yes", udp_ok.local_addr().unwrap()).unwrap(), 3);
    u.connect(udp_ok.local_addr().unwrap()).unwrap();
    assert_eq!(u.send(b"sent").unwrap(), 4);
    // sendmsg with an address (socket2's vectored send_to is sendmsg).
    let iov = [std::io::IoSlice::new(b"msg")];
    let u2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to: socket2::SockAddr = udp_ok.local_addr().unwrap().into();
    assert_eq!(
        socket2::SockRef::from(&u2)
            .send_to_vectored(&iov, &to)
            .unwrap(),
        3
    );
    let mut buf = [0u8; 16];
    udp_ok
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let n = udp_ok.recv(&mut buf).unwrap();
        got.push(buf[..n].to_vec());
    }
    got.sort();
    assert_eq!(got, [b"msg".to_vec(), b"sent".to_vec(), b"yes".to_vec()]);
    udp_no.set_nonblocking(true).unwrap();
    assert!(udp_no.recv(&mut buf).is_err(), "a denied datagram arrived");

    // A thread flips the port between allowed and denied while connects read it.
    let sa = Arc::new(RacySockaddr {
        family: libc::AF_INET as u16,
        port: AtomicU16::new(a.port().to_be()),
        addr: [127, 0, 0, 1],
        zero: [0; 8],
    });
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let flipper = {
        let (sa, stop, flips) = (sa.clone(), stop.clone(), flips.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = if i % 2 == 0 { d.port() } else { a.port() };
                sa.port.store(p.to_be(), Ordering::Relaxed);
                i += 1;
                flips.store(i, Ordering::Relaxed);
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(10);
    while flips.load(Ordering::Relaxed) == 0 && Instant::now() < until {
        std::thread::yield_now();
    }
    let (mut ok, mut refused) = (0, 0);
    // Until both outcomes were seen often, bounded in count and time; fewer allowed
    // ones than the listen backlog (128): they wait there, unaccepted.
    for i in 0..2000 {
        // Also flipped here, so both outcomes come even while the flipper waits for
        // a CPU; whenever it runs, it races the supervisor's copy.
        let p = if i % 2 == 0 { a.port() } else { d.port() };
        sa.port.store(p.to_be(), Ordering::Relaxed);
        match connect_racy(&sa) {
            Ok(()) => ok += 1,
            Err(libc::EACCES) => refused += 1,
            Err(e) => panic!("connect: errno {e}"),
        }
        if ok >= 100 || (ok >= 20 && refused >= 20) || Instant::now() > until {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(
        ok > 0 && refused > 0,
        "the race did not alternate: {ok} allowed, {refused} denied"
    );

    // io_uring would bypass the filter: refused.
    assert_eq!(io_uring_setup_errno(), Some(libc::EPERM));

    // A child process inherits the filter: its calls are judged on a copy of its
    // memory (then continued by the kernel, or refused).
    let script = format!(
        "import socket\nfor p in ({}, {}):\n    try:\n        socket.create_connection(('127.0.0.1', p)).close(); print('ok')\n    except OSError as e:\n        print(e.errno)",
        d.port(),
        a.port()
    );
    if let Ok(out) = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.split_whitespace().collect::<Vec<_>>(),
            [libc::EACCES.to_string().as_str(), "ok"],
            "{text}"
        );
    }

    assert_eq!(arrived(&denied), 0, "a denied connect reached its listener");
    let by_child = usize::from(
        std::process::Command::new("python3")
            .arg("-V")
            .output()
            .is_ok(),
    );
    assert_eq!(arrived(&allowed), 2 + ok + by_child);
    drop(kept);
    // Counted after each caller was answered: waited for, bounded.
    let counted = || {
        egress::counts()
            .iter()
            .any(|(k, n)| k.verdict == "deny" && k.port == d.port() && *n >= 2 + refused as u64)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !counted() && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(counted(), "{:?}", egress::counts());
    // Let the watcher write the non-blocking connect's line.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(std::env::var_os(CHILD).unwrap()).unwrap_or_default();
        if text
            .lines()
            .filter(|l| l.contains("\"allow\"") && l.contains("\"tcp\""))
            .count()
            >= 2 + ok
        {
            break;
        }
        std::thread::yield_now();
    }
}
