use super::*;
use nix::errno::Errno;

/// Fails with `errno` while `broken` is set; keeps what it was given otherwise.
struct Flaky {
    broken: AtomicBool,
    errno: Errno,
    lines: Mutex<Vec<String>>,
}

impl Destination for Arc<Flaky> {
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(self.errno.into());
        }
        lock(&self.lines).push(String::from_utf8_lossy(line).into_owned());
        Ok(())
    }
}

fn flaky(errno: Errno) -> Arc<Flaky> {
    Arc::new(Flaky {
        broken: AtomicBool::new(false),
        errno,
        lines: Mutex::new(Vec::new()),
    })
}

#[test]
fn lost_lines_are_counted_and_reported_before_the_next_line() {
    let dest = flaky(Errno::ENOSPC);
    let sink = Sink::new("error log", Box::new(dest.clone()), Report::Inline);
    assert!(sink.write_line(b"one\n"));
    dest.broken.store(true, Ordering::Relaxed);
    for _ in 0..3 {
        assert!(!sink.write_line(b"lost\n"));
    }
    assert!(sink.is_failing());
    dest.broken.store(false, Ordering::Relaxed);
    assert!(sink.write_line(b"two\n"));
    assert!(sink.write_line(b"three\n"));
    assert!(!sink.is_failing());
    let lines = lock(&dest.lines).clone();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], "one\n");
    assert!(lines[1].contains("[WARNING] 3 error log lines lost since "));
    assert!(lines[1].ends_with(": No space left on device (os error 28)\n"));
    assert_eq!(&lines[2..], ["two\n", "three\n"]);
}

#[test]
fn one_lost_line_is_singular_and_a_new_loss_starts_a_new_count() {
    let dest = flaky(Errno::EPIPE);
    let sink = Sink::new("error log", Box::new(dest.clone()), Report::Inline);
    dest.broken.store(true, Ordering::Relaxed);
    assert!(!sink.write_line(b"a\n"));
    dest.broken.store(false, Ordering::Relaxed);
    assert!(sink.write_line(b"b\n"));
    dest.broken.store(true, Ordering::Relaxed);
    assert!(!sink.write_line(b"c\n"));
    assert!(!sink.write_line(b"d\n"));
    dest.broken.store(false, Ordering::Relaxed);
    assert!(sink.write_line(b"e\n"));
    let lines = lock(&dest.lines).clone();
    assert!(
        lines[0].contains(" 1 error log line lost since "),
        "{lines:?}"
    );
    assert!(lines[0].ends_with(": Broken pipe (os error 32)\n"));
    assert_eq!(lines[1], "b\n");
    assert!(
        lines[2].contains(" 2 error log lines lost since "),
        "{lines:?}"
    );
    assert_eq!(lines[3], "e\n");
}

#[test]
fn a_loss_inherited_from_a_parent_process_is_not_reported() {
    let dest = flaky(Errno::EIO);
    let sink = Sink::new("error log", Box::new(dest.clone()), Report::Inline);
    *lock(&sink.loss) = Some(Loss {
        lines: 5,
        since: SystemTime::now(),
        reason: "x".into(),
        pid: std::process::id().wrapping_add(1),
    });
    sink.failing.store(true, Ordering::Relaxed);
    assert!(sink.write_line(b"child\n"));
    assert_eq!(*lock(&dest.lines), ["child\n"]);
    assert!(!sink.is_failing());
}

#[test]
fn an_access_log_keeps_its_count_until_the_error_log_takes_the_notice() {
    let disk = flaky(Errno::ENOSPC);
    let errors = Arc::new(Sink::new(
        "error log",
        Box::new(disk.clone()),
        Report::Inline,
    ));
    let access = flaky(Errno::ENOSPC);
    let sink = Sink::new(
        "access log",
        Box::new(access.clone()),
        Report::Into(errors.clone()),
    );
    disk.broken.store(true, Ordering::Relaxed);
    access.broken.store(true, Ordering::Relaxed);
    assert!(!errors.write_line(b"error 1\n"));
    assert!(!sink.write_line(b"GET /1\n"));
    assert!(!sink.write_line(b"GET /2\n"));
    // The access log works again, the error log not yet: the count is kept (and
    // the notice that could not be written is an error-log line lost).
    access.broken.store(false, Ordering::Relaxed);
    assert!(sink.write_line(b"GET /3\n"));
    assert!(sink.is_failing());
    disk.broken.store(false, Ordering::Relaxed);
    assert!(errors.write_line(b"error 2\n"));
    assert!(sink.write_line(b"GET /4\n"));
    assert!(!sink.is_failing());
    // The access log itself only ever holds access lines.
    assert_eq!(*lock(&access.lines), ["GET /3\n", "GET /4\n"]);
    let errs = lock(&disk.lines).clone();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].contains(" 2 error log lines lost since "),
        "{errs:?}"
    );
    assert_eq!(errs[1], "error 2\n");
    assert!(
        errs[2].contains("[WARNING] 2 access log lines lost since "),
        "{errs:?}"
    );
}

#[test]
fn a_loss_is_reported_at_stop_even_while_the_sink_still_fails() {
    let disk = flaky(Errno::ENOSPC);
    let errors = Arc::new(Sink::new(
        "error log",
        Box::new(disk.clone()),
        Report::Inline,
    ));
    let access = flaky(Errno::ENOSPC);
    let sink = Sink::new(
        "access log",
        Box::new(access.clone()),
        Report::Into(errors.clone()),
    );
    access.broken.store(true, Ordering::Relaxed);
    assert!(!sink.write_line(b"GET /1\n"));
    assert!(!sink.write_line(b"GET /2\n"));
    sink.report_now();
    assert!(!sink.is_failing());
    let errs = lock(&disk.lines).clone();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("[WARNING] 2 access log lines lost since "),
        "{errs:?}"
    );
    // Nothing more to say.
    sink.report_now();
    assert_eq!(lock(&disk.lines).len(), 1);
}
