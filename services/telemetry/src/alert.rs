//! Alerts.
