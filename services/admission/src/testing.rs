//! Test support (feature `testing`): a policy store ([`TestServer`], embedded or
//! distributed) with one or more admission replicas in front of it, each on a free loopback
//! port, following the store's bus. Everything is stopped and removed when dropped.

use portcullis_policy_store::ServiceOptions;
use portcullis_policy_store::testing::{TestError, TestOptions, TestServer};
use portcullis_server::{Credentials, Mode, ServerConfig};
use tonic::transport::{Channel, Endpoint};

use crate::webhook::WebhookOptions;
use crate::{AdmissionOptions, Hooks, RunningAdmission, ServeOptions, Upstream};

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Embedded or distributed.
    pub mode: Mode,
    /// How many admission replicas.
    pub replicas: usize,
    /// The webhook of every replica, when wanted (port 0: each gets its own).
    pub webhook: Option<WebhookOptions>,
    /// The admission options of every replica.
    pub admission: AdmissionOptions,
    /// The later stages' hooks of every replica (none by default, as in production today).
    pub hooks: Hooks,
    /// The policy store's caches and per-tenant rate limit (its defaults unless changed).
    pub store: ServiceOptions,
}

impl StackOptions {
    /// One replica, no webhook, default options.
    pub fn new(mode: Mode) -> StackOptions {
        StackOptions {
            mode,
            replicas: 1,
            webhook: None,
            admission: AdmissionOptions::default(),
            hooks: Hooks::default(),
            store: ServiceOptions::default(),
        }
    }
}

/// A policy store and admission replicas.
#[derive(Debug)]
pub struct TestStack {
    /// The admission replicas (dropped first).
    pub replicas: Vec<RunningAdmission>,
    /// The policy store.
    pub store: TestServer,
    /// The options the stack was started with.
    pub options: StackOptions,
}

impl TestStack {
    /// Starts a store and `options.replicas` admission replicas.
    pub async fn start(options: StackOptions) -> Result<TestStack, TestError> {
        let store = TestServer::start(TestOptions {
            service: options.store.clone(),
            ..TestOptions::new(options.mode)
        })
        .await?;
        let mut stack = TestStack {
            replicas: Vec::new(),
            store,
            options,
        };
        for _ in 0..stack.options.replicas {
            stack.add_replica().await?;
        }
        Ok(stack)
    }

    /// Starts one more admission replica.
    pub async fn add_replica(&mut self) -> Result<&RunningAdmission, TestError> {
        let err = |e: &dyn std::fmt::Display| TestError(format!("admission replica: {e}"));
        let upstream = Upstream::new(
            &self.store.url,
            None,
            &self.store.service_token,
            &crate::UpstreamTimeouts::default(),
            false,
        )
        .map_err(|e| err(&e))?;
        let credentials = Credentials::new(
            Some(self.store.operator_key.clone()),
            Some(self.store.service_token.clone()),
        )
        .map_err(|e| err(&e))?;
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let serve = ServeOptions {
            grpc: ServerConfig::new(listen, self.options.mode),
            webhook: self.options.webhook.clone(),
            admission: self.options.admission.clone(),
        };
        let hooks = self.options.hooks.clone();
        let replica = RunningAdmission::start(upstream, self.store.bus.clone(), credentials, serve, hooks)
            .await
            .map_err(|e| err(&e))?;
        self.replicas.push(replica);
        self.replicas
            .last()
            .ok_or_else(|| TestError("admission replica: not started".into()))
    }

    /// A channel to replica `i`.
    pub async fn channel(&self, i: usize) -> Result<Channel, TestError> {
        let replica = self
            .replicas
            .get(i)
            .ok_or_else(|| TestError(format!("no admission replica {i}")))?;
        Endpoint::from_shared(replica.url().to_owned())
            .map_err(|e| TestError(format!("endpoint: {e}")))?
            .connect()
            .await
            .map_err(|e| TestError(format!("connect to admission: {e}")))
    }

    /// A channel to the policy store.
    pub async fn store_channel(&self) -> Result<Channel, TestError> {
        self.store.channel().await
    }
}
