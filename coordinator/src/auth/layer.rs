//! The layer in front of every gRPC service: each call's token is checked against the method's
//! roles ([`super::needs`]) before any service sees the call, and the caller's [`Identity`] is
//! put in the request's extensions for the services that also check ownership.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{Authority, Identity, Role, needs};
use crate::service::listen::{Peer, Transport};

#[derive(Clone)]
pub struct AuthLayer {
    authority: Arc<Authority>,
    worker_certs: bool,
}

impl AuthLayer {
    /// `worker_certs`: workers must present a verified client certificate (`--tls-client-ca`).
    pub fn new(authority: Arc<Authority>, worker_certs: bool) -> Self {
        AuthLayer { authority, worker_certs }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, authority: Arc::clone(&self.authority), worker_certs: self.worker_certs }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    authority: Arc<Authority>,
    worker_certs: bool,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let transport = request.extensions().get::<Peer>().map(|p| p.transport);
        let header = request.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        let path = request.uri().path();
        let admitted = if transport == Some(Transport::PlainOnTlsPort) && needs(path).is_some() {
            Err(tonic::Status::failed_precondition(testgrid_proto::client::TLS_ONLY))
        } else {
            self.authority.admit(path, header).and_then(|identity| {
                let worker = path.starts_with("/testgrid.v1.WorkerService/") || identity.role == Role::Worker;
                if self.worker_certs && worker && transport != Some(Transport::Tls { client_cert: true }) {
                    return Err(tonic::Status::unauthenticated(
                        "this grid requires workers to present a client certificate signed by its client CA: \
                         give the worker --tls-cert and --tls-key",
                    ));
                }
                Ok(identity)
            })
        };
        match admitted {
            Ok(identity) => {
                request.extensions_mut().insert::<Identity>(identity);
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                tracing::debug!(path = %testgrid_proto::tree::shorten(request.uri().path()), code = ?status.code(), "call refused");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}
