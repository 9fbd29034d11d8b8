//! Issue 3's end-to-end checklist, run against the real gRPC API of the policy store in
//! embedded mode (SQLite, in-process bus) and distributed mode (PostgreSQL, a private
//! nats-server). The tests are in `tests/issue3/`; this library is empty.
