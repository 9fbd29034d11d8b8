//! Channels to the services: one lazily connected channel per URL (tonic reconnects it after
//! a failure), spread over the replicas of a service by index, and which failures are worth
//! another attempt on another replica.

use std::path::Path;
use std::time::Duration;

use portcullis_kit::client::{ClientConfig, Credential, Trust};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::SimulateError;

/// A channel with the key on every call.
pub(crate) type Authed = InterceptedService<Channel, Credential>;

/// Largest message either way (a page of pods is at most a few MiB).
pub(crate) const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// First pause after a failure; doubled per failure up to [`BACKOFF_MAX`].
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The replicas of one service.
#[derive(Clone)]
pub(crate) struct Replicas {
    /// `(url, channel)` per replica, in the order given.
    channels: Vec<(String, Channel)>,
}

impl Replicas {
    /// Channels to `urls` (connected on first use), each call bounded by `timeout`.
    pub(crate) fn new(
        service: &str,
        urls: &[String],
        ca_cert: Option<&Path>,
        insecure: bool,
        timeout: Duration,
    ) -> Result<Replicas, SimulateError> {
        if urls.is_empty() {
            return Err(SimulateError::Config(format!("no {service} endpoint")));
        }
        let channels = urls
            .iter()
            .map(|url| Ok((url.clone(), channel(url, ca_cert, insecure, timeout)?)))
            .collect::<Result<Vec<_>, SimulateError>>()?;
        Ok(Replicas { channels })
    }

    /// How many replicas.
    pub(crate) fn len(&self) -> usize {
        self.channels.len()
    }

    /// Replica `index` modulo their number: `(url, channel)`.
    pub(crate) fn pick(&self, index: usize) -> (&str, Channel) {
        let n = self.channels.len().max(1);
        match self.channels.get(index % n) {
            Some((url, channel)) => (url.as_str(), channel.clone()),
            // Never: `new` refuses an empty list.
            None => ("", Channel::from_static("http://127.0.0.1:1").connect_lazy()),
        }
    }
}

/// A lazily connected channel to `url`.
pub(crate) fn channel(
    url: &str,
    ca_cert: Option<&Path>,
    insecure: bool,
    timeout: Duration,
) -> Result<Channel, SimulateError> {
    let bad = |e: portcullis_kit::client::ClientError| SimulateError::Config(e.to_string());
    let mut config = ClientConfig::new(url)
        .map_err(bad)?
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .request_timeout(timeout);
    if !insecure {
        config.refuse_plain_text_off_host().map_err(bad)?;
    }
    if let Some(ca) = ca_cert
        && config.is_tls()
    {
        config = config.trust(Trust::ca_file(ca).map_err(bad)?);
    }
    config.connect_lazy().map_err(bad)
}

/// The credential of `key`, with `timeout` as every call's deadline when given.
pub(crate) fn credential(key: &str, what: &str, timeout: Option<Duration>) -> Result<Credential, SimulateError> {
    let credential = Credential::bearer(key).map_err(|e| SimulateError::Config(format!("{what} {e}")))?;
    Ok(match timeout {
        Some(t) => credential.with_timeout(t),
        None => credential,
    })
}

pub(crate) use crate::protocol::retryable;

/// The pause after `pause`: doubled, at most [`BACKOFF_MAX`].
pub(crate) fn next_backoff(pause: Duration) -> Duration {
    crate::protocol::next_backoff(pause, BACKOFF_MAX)
}

/// A status as one short line: its code and message.
pub(crate) fn status_line(status: &tonic::Status) -> String {
    let message = status.message().split(['\n', '\r']).next().unwrap_or_default();
    format!("{:?}: {message}", status.code())
}
