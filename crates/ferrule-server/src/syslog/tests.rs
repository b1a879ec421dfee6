use super::queue::{Entry, Queue};
use super::*;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

fn unix(path: &str, kind: UnixKind) -> SyslogAddr {
    SyslogAddr::Unix {
        path: PathBuf::from(path),
        kind,
    }
}

fn udp(host: &str, port: u16) -> SyslogAddr {
    SyslogAddr::Udp {
        host: host.into(),
        port,
    }
}

#[test]
fn addresses_are_read_as_gunicorn_reads_them() {
    let tcp = |host: &str, port| SyslogAddr::Tcp {
        host: host.into(),
        port,
    };
    let table = [
        ("unix:///dev/log", unix("/dev/log", UnixKind::Either)),
        (
            "unix:///run/x.sock#dgram",
            unix("/run/x.sock", UnixKind::Dgram),
        ),
        (
            "unix:///run/x.sock#stream",
            unix("/run/x.sock", UnixKind::Stream),
        ),
        ("udp://localhost:514", udp("localhost", 514)),
        ("udp://LOGS.example:5140", udp("logs.example", 5140)),
        ("udp://10.0.0.1", udp("10.0.0.1", DEFAULT_PORT)),
        ("udp://", udp("localhost", DEFAULT_PORT)),
        ("udp://:600", udp("localhost", 600)),
        ("tcp://[::1]:601", tcp("::1", 601)),
        ("tcp://[::1]", tcp("::1", DEFAULT_PORT)),
        ("tcp://127.0.0.1:6514", tcp("127.0.0.1", 6514)),
    ];
    for (text, want) in table {
        assert_eq!(SyslogAddr::parse(text).as_ref(), Ok(&want), "{text}");
    }
    for bad in [
        "localhost:514",
        "syslog://x",
        "unix://",
        "unix:///dev/log#seqpacket",
        "udp://host:port",
        "tcp://host:0",
        "tcp://host:70000",
        "tcp://host:+5",
        "tcp://[::1",
        "tcp://[::1]x",
    ] {
        let e = SyslogAddr::parse(bad).unwrap_err();
        assert!(e.starts_with("log-syslog-to: "), "{bad}: {e}");
    }
    assert_eq!(
        SyslogAddr::parse("tcp://[::1]:601").unwrap().to_string(),
        "tcp://[::1]:601"
    );
}

#[test]
fn facilities_are_gunicorns_names() {
    assert_eq!(facility("user"), Ok(1));
    assert_eq!(facility("LOCAL7"), Ok(23));
    assert_eq!(facility("security"), facility("auth"));
    assert_eq!(facility("daemon"), Ok(3));
    let e = facility("local8").unwrap_err();
    assert!(
        e.starts_with("log-syslog-facility must be one of auth, "),
        "{e}"
    );
}

fn origin(format: SyslogFormat) -> Origin {
    Origin {
        format,
        facility: 16, // local0
        name: "gunicorn.app.wsgi".into(),
        pid: 4242,
        host: "web-1".into(),
    }
}

#[test]
fn rfc3164_is_gunicorns_bytes() {
    let t = UNIX_EPOCH + Duration::from_micros(1_764_777_647_123_456);
    let o = origin(SyslogFormat::Rfc3164);
    let table: [(Stream, u8, &[u8], &[u8]); 3] = [
        (
            Stream::Error,
            frame::INFO,
            b"Booting worker",
            b"<134>gunicorn.app.wsgi.error: [4242] Booting worker\0",
        ),
        (
            Stream::Error,
            frame::CRITICAL,
            b"WORKER TIMEOUT",
            b"<130>gunicorn.app.wsgi.error: [4242] WORKER TIMEOUT\0",
        ),
        (
            Stream::Access,
            frame::INFO,
            b"127.0.0.1 - - \"GET / HTTP/1.1\" 200 2",
            b"<134>gunicorn.app.wsgi.access: [4242] 127.0.0.1 - - \"GET / HTTP/1.1\" 200 2\0",
        ),
    ];
    for (stream, severity, msg, want) in table {
        assert_eq!(o.message(stream, severity, t, msg), want);
    }
    let msg = o.message(Stream::Error, frame::WARNING, t, b"x");
    assert_eq!(frame(Framing::Datagram, msg.clone()), msg);
    assert_eq!(
        frame(Framing::OctetCounted, msg.clone()),
        b"38 <132>gunicorn.app.wsgi.error: [4242] x".to_vec()
    );
    assert_eq!(frame(Framing::NulTerminated, msg.clone()), msg);
}

#[test]
fn rfc5424_has_version_time_host_app_and_procid() {
    let t = UNIX_EPOCH + Duration::from_micros(1_764_777_647_123_456);
    let mut o = origin(SyslogFormat::Rfc5424);
    let msg = o.message(Stream::Access, frame::INFO, t, b"GET / 200");
    let want: &[u8] =
        b"<134>1 2025-12-03T16:00:47.123456Z web-1 gunicorn.app.wsgi.access 4242 - - GET / 200";
    assert_eq!(msg, want);
    let counted = frame(Framing::OctetCounted, msg);
    assert_eq!(
        counted,
        [format!("{} ", want.len()).as_bytes(), want].concat()
    );
    // APP-NAME: at most 48 printable characters; an empty HOSTNAME is "-".
    o.name = format!("gunicorn.{}", "x".repeat(60));
    o.host = String::new();
    let msg = String::from_utf8(o.message(Stream::Error, frame::ERROR, t, b"m")).unwrap();
    let fields: Vec<&str> = msg.split(' ').collect();
    assert_eq!(fields[0], "<131>1");
    assert_eq!(fields[2], "-");
    assert_eq!(fields[3].len(), 48);
    assert_eq!(
        frame(Framing::NulTerminated, b"<1>1 x".to_vec()),
        b"<1>1 x\0"
    );
}

#[test]
fn error_lines_give_their_level_as_severity() {
    let table: [(&[u8], u8, &[u8]); 6] = [
        (
            b"[2026-12-03 16:00:47 +0000] [42] [INFO] Booting\n",
            frame::INFO,
            b"Booting",
        ),
        (
            b"[2026-12-03 16:00:47 +0000] [42] [ERROR] a\nb\n",
            frame::ERROR,
            b"a\nb",
        ),
        (b"[t] [1] [WARNING] w\n", frame::WARNING, b"w"),
        (b"[t] [1] [CRITICAL] c\n", frame::CRITICAL, b"c"),
        (b"[t] [1] [DEBUG] d\n", frame::DEBUG, b"d"),
        (
            b"not an error-log line\n",
            frame::INFO,
            b"not an error-log line",
        ),
    ];
    for (line, severity, msg) in table {
        assert_eq!(split_error_line(line), (severity, msg));
    }
}

fn entry(n: usize) -> Entry {
    Entry {
        stream: Stream::Access,
        severity: frame::INFO,
        time: SystemTime::now(),
        msg: format!("line {n}").into_bytes(),
    }
}

#[test]
fn a_full_queue_drops_and_counts() {
    let q = Queue::new(std::process::id(), 4);
    let taken: Vec<bool> = (0..7).map(|n| q.push(entry(n))).collect();
    assert_eq!(taken, [true, true, true, true, false, false, false]);
    assert_eq!(q.unreported(), 3);
    // The sender takes one: room for one more.
    assert_eq!(q.take().msg, b"line 0");
    q.done(); // reports (to stderr here: no error log in unit tests)
    assert_eq!(q.unreported(), 0);
    assert!(q.push(entry(7)));
    assert!(!q.push(entry(8)));
    assert_eq!(q.unreported(), 1);
}

#[test]
fn finishing_without_a_sender_counts_the_queued_lines_once_and_waits_once() {
    let q = Queue::new(std::process::id(), 8);
    for n in 0..3 {
        assert!(q.push(entry(n)));
    }
    let started = Instant::now();
    q.finish(Duration::from_millis(200));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(q.queued(), 0); // counted and reported (to stderr here)
                               // Later lines (the report itself among them) are not queued, nor counted again, and
                               // a second finish (the other log, then the process) does not wait again.
    assert!(!q.push(entry(3)));
    let started = Instant::now();
    q.finish(Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!((q.queued(), q.unreported()), (0, 0));
}

fn loopback_tcp(port: u16) -> SyslogAddr {
    SyslogAddr::Tcp {
        host: "127.0.0.1".into(),
        port,
    }
}

fn settings(addr: SyslogAddr) -> SyslogSettings {
    SyslogSettings {
        addr,
        facility: 1,
        format: SyslogFormat::Rfc3164,
        name: "gunicorn.test".into(),
        access: true,
    }
}

/// Reads one octet-counted frame.
fn read_frame(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut len = Vec::new();
    r.read_until(b' ', &mut len)?;
    let n: usize = std::str::from_utf8(&len)
        .ok()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad length {len:?}")))?;
    let mut msg = vec![0; n];
    r.read_exact(&mut msg)?;
    Ok(String::from_utf8_lossy(&msg).into_owned())
}

/// Accepts one connection on another thread; the receiver gets it.
fn accept_later(l: TcpListener) -> std::sync::mpsc::Receiver<BufReader<TcpStream>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((s, _)) = l.accept() {
            drop(l); // the port is free once the connection is handed over
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = tx.send(BufReader::new(s));
        }
    });
    rx
}

#[test]
fn tcp_is_octet_counted_and_made_again_after_the_server_comes_back() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let s = Syslog::new(settings(loopback_tcp(port)), 64);
    assert!(s.send(Stream::Access, frame::INFO, b"first"));
    let mut r = accept_later(l)
        .recv_timeout(Duration::from_secs(5))
        .unwrap();
    let pid = std::process::id();
    assert_eq!(
        read_frame(&mut r).unwrap(),
        format!("<14>gunicorn.test.access: [{pid}] first")
    );
    // The server goes away: its connection, and its port until it listens again.
    drop(r);
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let accepted = accept_later(l);
    // Lines sent meanwhile may go into the dead connection; a later one arrives on a
    // new connection, after the back-off (bounded: 200 lines, 20 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut r = None;
    for n in 0..200 {
        assert!(s.send(Stream::Access, frame::INFO, format!("again {n}").as_bytes()));
        if let Ok(c) = accepted.recv_timeout(Duration::from_millis(100)) {
            r = Some(c);
            break;
        }
        assert!(Instant::now() < deadline, "no new connection");
    }
    let mut r = r.expect("the sender connected again");
    let got = read_frame(&mut r).unwrap();
    assert!(
        got.starts_with(&format!("<14>gunicorn.test.access: [{pid}] again ")),
        "{got}"
    );
}

#[test]
fn a_server_that_never_reads_never_slows_a_sender() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let s = Syslog::new(settings(loopback_tcp(port)), 1000);
    let line = vec![b'x'; 2000];
    let started = Instant::now();
    let sent = (0..20_000)
        .filter(|_| s.send(Stream::Access, frame::INFO, &line))
        .count();
    // 40 MB: far more than the socket buffers and the queue take.
    assert!(sent < 20_000, "every line was queued");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(l);
}

#[test]
fn udp_lines_are_one_datagram_each() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let mut st = settings(udp("127.0.0.1", port));
    st.format = SyslogFormat::Rfc5424;
    let s = Syslog::new(st, 64);
    s.send(Stream::Error, frame::ERROR, b"boom");
    let mut buf = [0; 2048];
    let n = server.recv(&mut buf).unwrap();
    let got = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(got.starts_with("<11>1 "), "{got}");
    assert!(
        got.ends_with(&format!(
            " gunicorn.test.error {} - - boom",
            std::process::id()
        )),
        "{got}"
    );
}
