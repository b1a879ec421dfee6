//! The `Server` and `Date` fields the server adds to a response: formatted once a
//! second and kept together, so most responses copy both with one slice.

use std::time::SystemTime;

/// The `Server` field ferrule sends when the app sends none.
const SERVER_FIELD: &str = "Server: ferrule\r\n";

/// The `Date` value, formatted at most once a second, kept after a `Server` field in
/// one string: a response whose app sent neither field copies both at once.
#[derive(Debug, Default)]
pub struct DateCache {
    second: u64,
    /// `Server: ferrule\r\nDate: <IMF-fixdate>\r\n`, or empty before the first use.
    fields: String,
}

impl DateCache {
    fn refresh(&mut self, unix_secs: u64) {
        if unix_secs != self.second || self.fields.is_empty() {
            self.second = unix_secs;
            let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs);
            self.fields.clear();
            self.fields.push_str(SERVER_FIELD);
            self.fields.push_str("Date: ");
            self.fields.push_str(&httpdate::fmt_http_date(at));
            self.fields.push_str("\r\n");
        }
    }

    /// The IMF-fixdate for `unix_secs` (seconds since 1970, the field's resolution).
    pub fn get(&mut self, unix_secs: u64) -> &str {
        self.refresh(unix_secs);
        &self.fields[SERVER_FIELD.len() + "Date: ".len()..self.fields.len() - 2]
    }

    /// The `Server` and `Date` fields a response needs besides the app's: `server` and
    /// `date` say which of them the app sent itself.
    pub fn fields(&mut self, unix_secs: u64, server: bool, date: bool) -> &[u8] {
        match (server, date) {
            (true, true) => b"",
            (false, true) => SERVER_FIELD.as_bytes(),
            (server, false) => {
                self.refresh(unix_secs);
                let both = self.fields.as_bytes();
                if server {
                    &both[SERVER_FIELD.len()..]
                } else {
                    both
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_formatted_once_a_second() {
        let mut cache = DateCache::default();
        assert_eq!(cache.get(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(cache.get(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(cache.get(784_111_778), "Sun, 06 Nov 1994 08:49:38 GMT");
        assert_eq!(DateCache::default().get(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn the_server_adds_the_fields_the_app_did_not_send() {
        let mut cache = DateCache::default();
        let date = b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n";
        let both = [&b"Server: ferrule\r\n"[..], date].concat();
        assert_eq!(cache.fields(784_111_777, false, false), both);
        assert_eq!(cache.fields(784_111_777, true, false), date);
        assert_eq!(
            cache.fields(784_111_777, false, true),
            b"Server: ferrule\r\n"
        );
        assert_eq!(cache.fields(784_111_777, true, true), b"");
        assert_eq!(
            cache.fields(784_111_778, true, false),
            b"Date: Sun, 06 Nov 1994 08:49:38 GMT\r\n"
        );
        assert_eq!(cache.get(784_111_778), "Sun, 06 Nov 1994 08:49:38 GMT");
    }
}
