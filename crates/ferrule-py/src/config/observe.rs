//! The metrics settings (`--metrics-bind`, `--statsd-host`, `--statsd-prefix`,
//! `--dogstatsd-tags`, `--server-timing`), checked once with the others; what the
//! master and the workers do with them is `crate::metrics`.

use ferrule_server::metrics::{
    has_process_statsd, use_process_statsd, MetricsBind, Observe, ServerTiming, Statsd,
    StatsdSettings, StatsdTarget,
};

/// The metrics settings, checked once with the others.
#[derive(Clone, Default)]
pub struct ObserveSettings {
    pub bind: Option<MetricsBind>,
    pub statsd: Option<StatsdSettings>,
    pub server_timing: ServerTiming,
}

impl ObserveSettings {
    pub fn parse(
        bind: Option<&str>,
        statsd_host: Option<&str>,
        statsd_prefix: &str,
        dogstatsd_tags: &str,
        server_timing: &str,
    ) -> Result<ObserveSettings, String> {
        let statsd = match statsd_host.filter(|s| !s.is_empty()) {
            Some(host) => Some(StatsdSettings::new(
                StatsdTarget::parse(host)?,
                statsd_prefix,
                dogstatsd_tags,
            )),
            None => None,
        };
        Ok(ObserveSettings {
            bind: bind
                .filter(|s| !s.is_empty())
                .map(MetricsBind::parse)
                .transpose()?,
            statsd,
            server_timing: ServerTiming::parse(server_timing)?,
        })
    }

    /// What a serving process observes: its slot (a worker's, given by the master,
    /// or slot 0 of the registry `serve` made without a master), statsd, timing.
    pub fn observe(&self) -> Observe {
        // Without a master (`ferrule.run`) nothing opened the process's client for
        // the `log.*` counters yet.
        if let Some(s) = self.statsd.clone().filter(|_| !has_process_statsd()) {
            if let Ok(s) = Statsd::open(s) {
                use_process_statsd(s);
            }
        }
        let statsd = self.statsd.clone().and_then(|s| match Statsd::open(s) {
            Ok(s) => Some(s),
            Err(e) => {
                let hint = match e.kind() {
                    std::io::ErrorKind::PermissionDenied => {
                        " (refused by the egress policy: allow the statsd address)"
                    }
                    _ => "",
                };
                tracing::error!("statsd: cannot open a socket ({e}){hint}; statsd metrics are off");
                None
            }
        });
        Observe::new(
            ferrule_server::metrics::this_slot(),
            statsd,
            self.server_timing,
        )
    }
}
