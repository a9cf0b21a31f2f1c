//! A tower layer on the gRPC server that counts and times every call by method and answer
//! code, into the node's request metrics.
//!
//! The code is the `grpc-status` of the response headers: tonic sends a failed unary call as a
//! headers-only response that carries it; a successful one carries it in the trailers, after
//! the body, so a response without it in its headers counts as `Ok`. A method no service has
//! is counted as `unknown`, so made-up paths cannot grow the label set.

use crate::metrics::requests::{Api, RequestMetrics};
use futures::future::BoxFuture;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

/// Wraps a server's routes in [`Observed`].
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    metrics: RequestMetrics,
}

impl ObserveLayer {
    pub fn new(metrics: RequestMetrics) -> Self {
        ObserveLayer { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The routes, with each call recorded.
#[derive(Clone, Debug)]
pub struct Observed<S> {
    inner: S,
    metrics: RequestMetrics,
}

impl<S, B, R> Service<axum::http::Request<B>> for Observed<S>
where
    S: Service<axum::http::Request<B>, Response = axum::http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = request.uri().path().trim_start_matches('/').to_string();
        // The clone that was made ready is the one to call (tower's usual swap).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = inner.call(request).await?;
            let code = response
                .headers()
                .get("grpc-status")
                .map_or(tonic::Code::Ok, |v| tonic::Code::from_bytes(v.as_bytes()));
            let method = match code {
                tonic::Code::Unimplemented => "unknown",
                _ => method.as_str(),
            };
            let code = format!("{code:?}");
            metrics.answered(Api::Grpc, method, &code, started.elapsed());
            Ok(response)
        })
    }
}
