//! gunicorn's syslog settings (`syslog`, `syslog_addr`, `syslog_facility`,
//! `syslog_prefix`, `disable_redirect_access_to_syslog`) and ferrule's
//! `syslog_format`, checked once with the others; `ferrule_server::syslog` sends.

use ferrule_server::syslog::{SyslogSettings, DEFAULT_ADDR, DEFAULT_FACILITY, DEFAULT_FORMAT};

/// The settings when syslog is on. The address, facility and format are checked
/// even when it is off, so a typo stops start-up (and `--check-config`) now rather
/// than when `--log-syslog` is added.
pub fn syslog_settings(
    on: bool,
    addr: Option<&str>,
    facility: Option<&str>,
    format: Option<&str>,
    name: Option<&str>,
    no_access: bool,
) -> Result<Option<SyslogSettings>, String> {
    let settings = SyslogSettings::parse(
        addr.unwrap_or(DEFAULT_ADDR),
        facility.unwrap_or(DEFAULT_FACILITY),
        format.unwrap_or(DEFAULT_FORMAT),
        name.filter(|n| !n.is_empty()).unwrap_or("ferrule"),
        !no_access,
    )?;
    Ok(on.then_some(settings))
}

#[cfg(test)]
mod tests {
    use crate::config::defaults::tests::{config, default_settings};
    use ferrule_server::syslog::{SyslogAddr, SyslogFormat, UnixKind};
    use pyo3::prelude::*;

    #[test]
    fn syslog_is_off_by_default_and_typed_when_on() {
        Python::initialize();
        Python::attach(|py| {
            let d = default_settings(py);
            let c = config(&d).unwrap();
            assert!(c.logs.syslog.is_none());
            d.set_item("syslog", true).unwrap();
            d.set_item("syslog_name", "myapp:app").unwrap();
            let s = config(&d).unwrap().logs.syslog.unwrap();
            assert_eq!(
                s.addr,
                SyslogAddr::Unix {
                    path: "/dev/log".into(),
                    kind: UnixKind::Either
                }
            );
            assert_eq!((s.facility, s.format), (1, SyslogFormat::Rfc3164));
            assert_eq!(s.name, "gunicorn.myapp.app");
            assert!(s.access);
            d.set_item("disable_redirect_access_to_syslog", true)
                .unwrap();
            d.set_item("syslog_format", "RFC5424").unwrap();
            d.set_item("syslog_facility", "local3").unwrap();
            let s = config(&d).unwrap().logs.syslog.unwrap();
            assert_eq!(
                (s.facility, s.format, s.access),
                (19, SyslogFormat::Rfc5424, false)
            );
        });
    }

    #[test]
    fn a_bad_syslog_value_is_one_line_naming_the_setting() {
        Python::initialize();
        Python::attach(|py| {
            for (key, value, start) in [
                ("syslog_addr", "localhost:514", "log-syslog-to: "),
                (
                    "syslog_facility",
                    "local9",
                    "log-syslog-facility must be one of ",
                ),
                (
                    "syslog_format",
                    "json",
                    "log-syslog-format must be rfc3164 or rfc5424",
                ),
            ] {
                let d = default_settings(py);
                d.set_item(key, value).unwrap();
                let e = config(&d).err().unwrap();
                assert!(e.starts_with(start) && !e.contains('\n'), "{e}");
            }
        });
    }
}
